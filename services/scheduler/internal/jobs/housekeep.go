package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/libs/bus"
)

// housekeepEvery is how often a replica clears old JobRun deletion markers.
const housekeepEvery = time.Hour

// markerAge is how old a deletion marker must be before it is cleared, so a watcher
// that is behind still sees the deletion.
const markerAge = 30 * time.Minute

// housekeep clears the deletion markers that pruning and DeleteJob leave under the
// JobRun keys (jobrun.> and jobrunof.>): a KV purge keeps one marker per key, and an
// interval Job would otherwise grow LK_JOBS by two markers per firing forever. JobRun
// ids are never reused, so clearing a key's subject can never remove a newer value.
// Job keys are left alone: a Job id can be created again.
func (e *Engine) housekeep(ctx context.Context, olderThan time.Duration) error {
	w, err := e.store.kv.WatchFiltered(ctx, []string{"jobrun.>", "jobrunof.>"}, jetstream.MetaOnly())
	if err != nil {
		return fmt.Errorf("watching job runs: %w", err)
	}
	var old []string
	limit := time.Now().Add(-olderThan)
	for entry := range w.Updates() {
		if entry == nil {
			break // the current values have all been delivered
		}
		if op := entry.Operation(); (op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge) && entry.Created().Before(limit) {
			old = append(old, entry.Key())
		}
	}
	_ = w.Stop()
	if len(old) == 0 {
		return nil
	}
	stream, err := e.js.Stream(ctx, "KV_"+bus.BucketJobs)
	if err != nil {
		return fmt.Errorf("opening the job records' stream: %w", err)
	}
	for _, key := range old {
		if err := stream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+bus.BucketJobs+"."+key)); err != nil {
			return fmt.Errorf("clearing %s: %w", key, err)
		}
	}
	return nil
}
