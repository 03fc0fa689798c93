package engine

import (
	"net/url"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/latchkey/latchkey/libs/runner/internal/live"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// record runs a RECORD task: a live view of a new context of the session for a
// person who logs in (internal/live). When the person is done the state is captured
// and the task answers SUCCEEDED with it, as a create does; the scheduler then checks
// it in a fresh context.
func (e *execution) record() error {
	t, r := e.task, e.r
	spec := t.GetRecord()
	if len(r.cfg.LiveKey) != 32 || r.nc == nil {
		return sdk.Fail(reasonScript, "this runner does not host recordings: it has no NATS connection or no live-view key")
	}
	if t.GetSession().GetAuthSessionId() == "" {
		return sdk.Fail(reasonScript, "a record task needs an AuthSession")
	}
	start, err := url.Parse(spec.GetStartUrl())
	if err != nil || (start.Scheme != "http" && start.Scheme != "https") || start.Host == "" {
		return sdk.Fail(reasonScript, "the recorder start URL must be an http(s) URL")
	}
	lv, err := live.New(r.nc, r.cfg.LiveKey, spec.GetRecordingId(), spec.GetFinishUrlPrefix(), e,
		live.Options{Log: r.log, RunID: t.GetRunId(), Stopping: r.isStopping})
	if err != nil {
		return sdk.Fail(reasonScript, "the recording id: %v", err)
	}
	unsubscribe, err := lv.Subscribe()
	if err != nil {
		return sdk.Infra("subscribing to the recording's input: %w", err)
	}
	defer unsubscribe()
	began := time.Now()
	err = e.host(lv, start.String())
	e.res.BrowserTime = durationpb.New(time.Since(began))
	if e.bc != nil {
		// The hosted context served a person: it never becomes the session's warm one.
		e.r.pool.CloseContext(e.bc)
		e.bc = nil
	}
	if err != nil {
		lv.End(err)
	}
	return err
}

// host opens a new context, streams it until the person is done, and captures the
// state.
func (e *execution) host(lv *live.View, start string) error {
	if err := e.acquire(); err != nil {
		return err
	}
	tab, stop := e.tabContext()
	defer stop()
	if err := lv.Run(tab, start); err != nil {
		return err
	}
	if err := e.captureState(tab); err != nil {
		return err
	}
	e.res.Status = statusSucceeded
	return nil
}

// isStopping reports whether Stop was called.
func (r *Runner) isStopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopping
}
