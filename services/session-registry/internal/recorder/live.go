package recorder

import (
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/bus"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/server"
)

//go:embed page.html
var pageHTML []byte

// Timings of the live stream.
const (
	// helloEvery asks the runner for its newest frame until one arrives (the runner
	// may not have started when the page connects).
	helloEvery = 2 * time.Second
	// pingEvery keeps proxies from closing an idle stream.
	pingEvery = 15 * time.Second
	// resultWait bounds how long the page is told about the check of a capture.
	resultWait = 3 * time.Minute
)

// page serves the recorder page for a valid token; its script claims the token
// (claimPage) before it shows anything.
func (r *Recorder) page(w http.ResponseWriter, req *http.Request) {
	if _, _, ok := r.token(w, req); !ok {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// The URL is the capability: never send it on as a referrer.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'")
	_, _ = w.Write(pageHTML)
}

// event is one Server-Sent Event to the page.
type event struct {
	State    string `json:"state"`
	JPEG     string `json:"jpeg,omitempty"`
	Width    int32  `json:"width,omitempty"`
	Height   int32  `json:"height,omitempty"`
	Location string `json:"location,omitempty"`
	Message  string `json:"message,omitempty"`
}

// Page states beyond the runner's: the check of the capture passed or failed.
const (
	stateReady  = "ready"
	stateFailed = "failed"
)

func liveState(s runnerv1.LiveState) string {
	switch s {
	case runnerv1.LiveState_LIVE_STATE_RECORDING:
		return "recording"
	case runnerv1.LiveState_LIVE_STATE_CAPTURED:
		return "captured"
	case runnerv1.LiveState_LIVE_STATE_ENDED:
		return "ended"
	}
	return "connecting"
}

// frames relays the recording's frames to the page as Server-Sent Events: the newest
// frame only (a slow page skips frames, never states), then how the Run ended.
func (r *Recorder) frames(w http.ResponseWriter, req *http.Request) {
	c, id, ok := r.token(w, req)
	if !ok {
		return
	}
	if !r.holds(req.Context(), req, id) {
		plain(w, http.StatusForbidden, "This live view belongs to the browser that opened the recorder link.")
		return
	}
	flusher, ok := w.(http.Flusher)
	subj, err := bus.LiveFramesSubject(c.Run)
	if !ok || err != nil {
		plain(w, http.StatusInternalServerError, "Internal error.")
		return
	}
	frames, states := make(chan *runnerv1.LiveFrame, 1), make(chan *runnerv1.LiveFrame, 8)
	sub, err := r.d.NC.Subscribe(subj, func(m *nats.Msg) {
		f, err := r.openFrame(subj, m.Data)
		if err != nil {
			return
		}
		if len(f.GetJpeg()) == 0 {
			select {
			case states <- f:
			default:
			}
			return
		}
		select { // keep only the newest frame
		case <-frames:
		default:
		}
		frames <- f
	})
	if err != nil {
		plain(w, http.StatusServiceUnavailable, "The recorder is not available right now; reload in a moment.")
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	ctx, cancel := context.WithDeadline(req.Context(), c.expires())
	defer cancel()
	stop := context.AfterFunc(r.ctx, cancel)
	defer stop()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(name string, ev event) bool {
		b, _ := json.Marshal(ev)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	r.hello(c.Run)
	hello := time.NewTicker(helloEvery)
	defer hello.Stop()
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	var result <-chan time.Time // polls the Run once the state is captured
	resultUntil := time.Time{}
	seen := false
	for {
		select {
		case <-ctx.Done():
			if r.now().After(c.expires()) {
				send("state", event{State: "ended", Message: "The recorder link expired."})
			}
			return
		case f := <-frames:
			seen = true
			if !send("frame", event{State: liveState(f.GetState()), JPEG: base64.StdEncoding.EncodeToString(f.GetJpeg()),
				Width: f.GetWidth(), Height: f.GetHeight(), Location: f.GetLocation()}) {
				return
			}
		case f := <-states:
			seen = true
			if !send("state", event{State: liveState(f.GetState()), Location: f.GetLocation(), Message: f.GetMessage()}) {
				return
			}
			switch f.GetState() {
			case runnerv1.LiveState_LIVE_STATE_CAPTURED:
				t := time.NewTicker(time.Second)
				defer t.Stop()
				result, resultUntil = t.C, r.now().Add(resultWait)
			case runnerv1.LiveState_LIVE_STATE_ENDED:
				return
			}
		case <-hello.C:
			if seen {
				continue
			}
			if ev, done := r.runEnded(ctx, c); done {
				send("state", ev)
				return
			}
			r.hello(c.Run)
		case <-result:
			ev, done := r.runEnded(ctx, c)
			if done || r.now().After(resultUntil) {
				send("state", ev)
				return
			}
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
			flusher.Flush()
		}
	}
}

// runEnded reports whether the recording's Run has ended, and how, for the page.
func (r *Recorder) runEnded(ctx context.Context, c claims) (event, bool) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := r.d.Runs.GetRun(server.ForProject(cctx, c.Project), &latchkeyv1.GetRunRequest{RunId: c.Run})
	if err != nil {
		return event{State: "captured", Message: "Latchkey is still checking the login."}, false
	}
	run := resp.GetRun()
	switch run.GetState() {
	case latchkeyv1.RunState_RUN_STATE_SUCCEEDED:
		return event{State: stateReady, Message: "Done: the login passed its check and the session is READY. You can close this page."}, true
	case latchkeyv1.RunState_RUN_STATE_FAILED, latchkeyv1.RunState_RUN_STATE_CANCELED:
		return event{State: stateFailed, Message: "The recording ended without a session: " + run.GetFailureMessage()}, true
	}
	return event{State: "captured", Message: "Latchkey is still checking the login."}, false
}

func (r *Recorder) openFrame(subj string, data []byte) (*runnerv1.LiveFrame, error) {
	plainMsg, err := bus.OpenLive(r.liveKey, subj, data)
	if err != nil {
		return nil, err
	}
	var f runnerv1.LiveFrame
	if err := proto.Unmarshal(plainMsg, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// hello asks the runner to send its newest frame again.
func (r *Recorder) hello(run string) {
	_ = r.publishInput(run, []*runnerv1.LiveInput{{Type: runnerv1.LiveInputType_LIVE_INPUT_TYPE_HELLO}})
}

// publishInput seals and publishes the person's input, in order.
func (r *Recorder) publishInput(run string, in []*runnerv1.LiveInput) error {
	subj, err := bus.LiveInputSubject(run)
	if err != nil {
		return err
	}
	for _, i := range in {
		b, err := proto.Marshal(i)
		if err != nil {
			return err
		}
		sealed, err := bus.SealLive(r.liveKey, subj, b)
		if err != nil {
			return err
		}
		if err := r.d.NC.Publish(subj, sealed); err != nil {
			return err
		}
	}
	return nil
}
