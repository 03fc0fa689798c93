package engine

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/recipe"
)

// shotTimeout bounds taking and storing a failure screenshot.
const shotTimeout = 5 * time.Second

// screenshot stores a screenshot of the page when a step fails, for the person who
// reads the failure. Its metadata names the run, task and step only.
func (e *execution) FailureScreenshot(_ context.Context, s *recipe.Step) (string, error) {
	if e.bc == nil || !e.bc.Alive() || (e.r.deps.JS == nil && e.observer == nil) {
		return "", nil
	}
	// The step's own context may have ended (its timeout): take the shot on the tab.
	tab, cancel := context.WithTimeout(e.bc.Tab(), shotTimeout)
	defer cancel()
	png, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
	if err != nil {
		return "", err
	}
	return e.StoreArtifact(tab, fmt.Sprintf("failed-step-%d.png", s.Index), png, fmt.Sprintf("failed step %d (%s)", s.Index, s.Kind))
}

// storeArtifact puts a PNG into LK_ARTIFACTS as <run>/<task>/<name> and returns its id.
// Without JetStream (latchkey try) the observer gets it instead.
func (e *execution) StoreArtifact(ctx context.Context, name string, png []byte, description string) (string, error) {
	id := fmt.Sprintf("%s/%s/%s", e.task.GetRunId(), e.task.GetTaskId(), name)
	if e.r.deps.JS == nil {
		if e.artifact != nil {
			e.artifact(id, png)
		}
		return id, nil
	}
	store, err := e.r.deps.JS.ObjectStore(ctx, bus.ObjectArtifacts)
	if err != nil {
		return "", fmt.Errorf("opening %s: %w", bus.ObjectArtifacts, err)
	}
	meta := jetstream.ObjectMeta{
		Name: id, Description: description,
		Headers: map[string][]string{"Content-Type": {"image/png"}, "Latchkey-Run": {e.task.GetRunId()}, "Latchkey-Project": {e.task.GetProjectId()}},
	}
	if _, err := store.Put(ctx, meta, bytes.NewReader(png)); err != nil {
		return "", fmt.Errorf("storing %s: %w", id, err)
	}
	return id, nil
}
