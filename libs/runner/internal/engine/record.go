package engine

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/latchkey/latchkey/libs/bus"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// A RECORD task (DESIGN.md section 8) hosts a live browser for a person who logs in
// through the registry's recorder page: the tab's screencast frames go out on
// lk.live.<recording>.frames and the person's clicks and keys come back on
// lk.live.<recording>.input, every message sealed with the live-view key
// (bus.SealLive). When the main frame reaches the finish URL prefix, or the person
// presses Finish, the state is captured and the task answers SUCCEEDED with it, as a
// create does; the scheduler then checks it in a fresh context. Frames and typed keys
// are never logged.

// The hosted viewport and the screencast's image settings.
const (
	recordWidth   = 1280
	recordHeight  = 800
	recordQuality = 60
	// recordPoll is how often the loop looks at the tab's URL (navigations inside a
	// page do not always fire a frame navigation) and at a stopping runner.
	recordPoll = time.Second
	// maxInputQueue bounds the input waiting for the tab; more is dropped.
	maxInputQueue = 256
)

// errFinished ends the live loop when the state is to be captured.
var errFinished = errors.New("recording finished")

// liveView is one running recording.
type liveView struct {
	e                  *execution
	tab                context.Context
	key                []byte
	framesSubj         string
	finishPrefix       string
	input              chan *runnerv1.LiveInput
	mu                 sync.Mutex
	last               []byte // the newest frame message, sealed, for a viewer that connects
	lastW, lastH       float64
	location           string
	frameSeen, stopped bool
}

// record runs a RECORD task.
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
	framesSubj, err := bus.LiveFramesSubject(spec.GetRecordingId())
	if err != nil {
		return sdk.Fail(reasonScript, "the recording id: %v", err)
	}
	inputSubj, _ := bus.LiveInputSubject(spec.GetRecordingId())
	lv := &liveView{e: e, key: r.cfg.LiveKey, framesSubj: framesSubj, finishPrefix: spec.GetFinishUrlPrefix(),
		input: make(chan *runnerv1.LiveInput, maxInputQueue)}
	// Input is taken from the start, so a viewer's hello is not lost while the
	// browser context opens.
	sub, err := r.nc.Subscribe(inputSubj, lv.onInput)
	if err != nil {
		return sdk.Infra("subscribing to the recording's input: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	began := time.Now()
	err = lv.run(start.String())
	e.res.BrowserTime = durationpb.New(time.Since(began))
	if e.bc != nil {
		// The hosted context served a person: it never becomes the session's warm one.
		e.r.pool.CloseContext(e.bc)
		e.bc = nil
	}
	if err != nil {
		lv.publishState(runnerv1.LiveState_LIVE_STATE_ENDED, endMessage(err))
	}
	return err
}

// run opens the browser, streams it until the person is done, and captures the state.
func (lv *liveView) run(start string) error {
	e := lv.e
	if err := e.acquire(); err != nil {
		return err
	}
	tab, stop := e.tabContext()
	defer stop()
	lv.tab = tab
	if _, err := chromedp.Call(tab, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
		Width: recordWidth, Height: recordHeight, DeviceScaleFactor: 1,
	}); err != nil {
		return e.BrowserError(tab, err)
	}
	frames := chromedp.Events(tab, page.ScreencastFrame)
	navs := chromedp.Events(tab, page.FrameNavigated)
	go lv.stream(frames)
	urls := make(chan string, 16)
	go func() {
		for ev, err := range navs {
			if err != nil {
				return
			}
			if ev.Frame != nil && ev.Frame.ParentID == "" {
				select {
				case urls <- ev.Frame.URL:
				default:
				}
			}
		}
	}()
	quality := int64(recordQuality)
	if _, err := chromedp.Call(tab, page.StartScreencast, page.StartScreencastParams{
		Format: page.StartScreencastFormatJpeg, Quality: &quality, MaxWidth: recordWidth, MaxHeight: recordHeight, EveryNthFrame: 1,
	}); err != nil {
		return e.BrowserError(tab, err)
	}
	lv.publishState(runnerv1.LiveState_LIVE_STATE_RECORDING, "")
	if err := chromedp.Do(tab, chromedp.Navigate(start)); err != nil && tab.Err() != nil {
		return e.BrowserError(tab, err)
	}
	// A start page that fails to load is shown as Chromium's error page; the person
	// sees it and the recording goes on.
	err := lv.loop(urls)
	if !errors.Is(err, errFinished) {
		return err
	}
	lv.publishState(runnerv1.LiveState_LIVE_STATE_CAPTURED, "")
	lv.mu.Lock()
	lv.stopped = true
	lv.mu.Unlock()
	_, _ = chromedp.Call(tab, page.StopScreencast, cdp.Empty{})
	if err := e.captureState(tab); err != nil {
		return err
	}
	e.res.Status = statusSucceeded
	return nil
}

// loop replays input and watches the URL until the person is done, the task is
// canceled or runs past its deadline, or the runner stops.
func (lv *liveView) loop(urls <-chan string) error {
	e, tab := lv.e, lv.tab
	tick := time.NewTicker(recordPoll)
	defer tick.Stop()
	for {
		select {
		case <-tab.Done():
			return e.BrowserError(tab, tab.Err())
		case u := <-urls:
			if lv.finished(u) {
				return errFinished
			}
		case in := <-lv.input:
			if in.GetType() == runnerv1.LiveInputType_LIVE_INPUT_TYPE_FINISH {
				return errFinished
			}
			if err := lv.apply(in); err != nil && tab.Err() == nil && !e.BrowserGone() {
				e.r.log.DebugContext(e.base, "replaying recorder input failed", "run_id", e.task.GetRunId(), "input_type", in.GetType().String())
			}
		case <-tick.C:
			if e.r.isStopping() {
				return sdk.Infra("the runner is stopping")
			}
			if loc, err := chromedp.Run(tab, chromedp.Location()); err == nil && lv.finished(loc) {
				return errFinished
			}
		}
	}
}

// finished reports whether the main frame reached the finish URL, and remembers
// where it is for the page.
func (lv *liveView) finished(u string) bool {
	if p, err := url.Parse(u); err == nil && (p.Scheme == "http" || p.Scheme == "https") {
		lv.mu.Lock()
		lv.location = p.Scheme + "://" + p.Host + p.Path
		lv.mu.Unlock()
	}
	return lv.finishPrefix != "" && strings.HasPrefix(u, lv.finishPrefix)
}

// onInput queues the person's input for the loop (NATS callback: never blocks).
func (lv *liveView) onInput(m *nats.Msg) {
	plain, err := bus.OpenLive(lv.key, m.Subject, m.Data)
	if err != nil {
		return
	}
	in := &runnerv1.LiveInput{}
	if proto.Unmarshal(plain, in) != nil {
		return
	}
	if in.GetType() == runnerv1.LiveInputType_LIVE_INPUT_TYPE_HELLO {
		lv.resend()
		return
	}
	select {
	case lv.input <- in:
	default:
	}
}

// stream publishes every screencast frame and acknowledges it, so Chromium sends the
// next one.
func (lv *liveView) stream(frames func(func(page.EventScreencastFrame, error) bool)) {
	for ev, err := range frames {
		if err != nil {
			return
		}
		w, h := float64(recordWidth), float64(recordHeight)
		if md := ev.Metadata; md != nil && md.DeviceWidth > 0 && md.DeviceHeight > 0 {
			w, h = md.DeviceWidth, md.DeviceHeight
		}
		lv.mu.Lock()
		lv.lastW, lv.lastH = w, h
		loc, stopped := lv.location, lv.stopped
		lv.mu.Unlock()
		if !stopped {
			lv.publish(&runnerv1.LiveFrame{State: runnerv1.LiveState_LIVE_STATE_RECORDING, Jpeg: ev.Data, Width: int32(w), Height: int32(h), Location: loc}, true)
		}
		_, _ = chromedp.Call(lv.tab, page.ScreencastFrameAck, page.ScreencastFrameAckParams{SessionID: ev.SessionID})
	}
}

// publish seals and sends a live message; a frame is kept for viewers that connect
// later.
func (lv *liveView) publish(f *runnerv1.LiveFrame, keep bool) {
	b, err := proto.Marshal(f)
	if err != nil {
		return
	}
	sealed, err := bus.SealLive(lv.key, lv.framesSubj, b)
	if err != nil {
		return
	}
	if keep {
		lv.mu.Lock()
		lv.last, lv.frameSeen = sealed, true
		lv.mu.Unlock()
	}
	_ = lv.e.r.nc.Publish(lv.framesSubj, sealed)
}

func (lv *liveView) publishState(s runnerv1.LiveState, msg string) {
	lv.mu.Lock()
	loc := lv.location
	lv.mu.Unlock()
	lv.publish(&runnerv1.LiveFrame{State: s, Location: loc, Message: msg}, false)
}

// resend answers a viewer's hello with the newest frame.
func (lv *liveView) resend() {
	lv.mu.Lock()
	last, stopped := lv.last, lv.stopped
	lv.mu.Unlock()
	if last != nil && !stopped {
		_ = lv.e.r.nc.Publish(lv.framesSubj, last)
	}
}

// apply replays one input in the tab. Coordinates arrive as fractions of the frame
// and are scaled to the viewport the frame showed.
func (lv *liveView) apply(in *runnerv1.LiveInput) error {
	lv.mu.Lock()
	w, h := lv.lastW, lv.lastH
	lv.mu.Unlock()
	if w == 0 || h == 0 {
		w, h = recordWidth, recordHeight
	}
	x, y := in.GetX()*w, in.GetY()*h
	mods := int64(in.GetModifiers())
	mouse := func(typ input.DispatchMouseEventType, button input.MouseButton, clicks int64) error {
		_, err := chromedp.Call(lv.tab, input.DispatchMouseEvent, input.DispatchMouseEventParams{
			Type: typ, X: x, Y: y, Button: button, ClickCount: clicks, Modifiers: mods,
			DeltaX: in.GetDeltaX(), DeltaY: in.GetDeltaY(),
		})
		return err
	}
	switch in.GetType() {
	case runnerv1.LiveInputType_LIVE_INPUT_TYPE_MOVE:
		return mouse(input.DispatchMouseEventTypeMouseMoved, input.MouseButtonNone, 0)
	case runnerv1.LiveInputType_LIVE_INPUT_TYPE_WHEEL:
		return mouse(input.DispatchMouseEventTypeMouseWheel, input.MouseButtonNone, 0)
	case runnerv1.LiveInputType_LIVE_INPUT_TYPE_CLICK:
		button := input.MouseButtonLeft
		switch in.GetButton() {
		case "middle":
			button = input.MouseButtonMiddle
		case "right":
			button = input.MouseButtonRight
		}
		if err := mouse(input.DispatchMouseEventTypeMouseMoved, input.MouseButtonNone, 0); err != nil {
			return err
		}
		if err := mouse(input.DispatchMouseEventTypeMousePressed, button, 1); err != nil {
			return err
		}
		return mouse(input.DispatchMouseEventTypeMouseReleased, button, 1)
	case runnerv1.LiveInputType_LIVE_INPUT_TYPE_KEY:
		r, ok := namedKey[in.GetKey()]
		if !ok {
			return nil
		}
		return lv.keys(r, mods)
	case runnerv1.LiveInputType_LIVE_INPUT_TYPE_TEXT:
		for _, r := range in.GetText() {
			if _, ok := kb.Keys[r]; ok {
				if err := lv.keys(r, 0); err != nil {
					return err
				}
				continue
			}
			if _, err := chromedp.Call(lv.tab, input.InsertText, input.InsertTextParams{Text: string(r)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// keys presses and releases the key of r.
func (lv *liveView) keys(r rune, mods int64) error {
	for _, ev := range kb.Encode(r) {
		ev.Modifiers = mods
		if _, err := chromedp.Call(lv.tab, input.DispatchKeyEvent, *ev); err != nil {
			return err
		}
	}
	return nil
}

// namedKey maps the DOM key names the recorder page sends to chromedp's keys.
var namedKey = map[string]rune{
	"Enter": '\r', "Tab": '\t', "Backspace": '\b', "Delete": 0x7f, "Escape": 0x1b, "Space": ' ',
	"ArrowLeft": []rune(kb.ArrowLeft)[0], "ArrowRight": []rune(kb.ArrowRight)[0], "ArrowUp": []rune(kb.ArrowUp)[0],
	"ArrowDown": []rune(kb.ArrowDown)[0], "Home": []rune(kb.Home)[0], "End": []rune(kb.End)[0],
	"PageUp": []rune(kb.PageUp)[0], "PageDown": []rune(kb.PageDown)[0],
}

// endMessage tells the person why the recording ended, without internals.
func endMessage(err error) string {
	switch {
	case errors.Is(err, sdk.ErrCanceled):
		return "The recording was canceled."
	case errors.Is(err, sdk.ErrDeadline):
		return "The time for this recording is up. Ask for a new recorder link."
	case sdk.IsInfra(err):
		return "The hosted browser stopped; Latchkey will try to open it again."
	}
	return "The recording failed."
}

// isStopping reports whether Stop was called.
func (r *Runner) isStopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopping
}
