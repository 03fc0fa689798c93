// Package live hosts the recorder's live view of a tab (DESIGN.md section 8): a
// person who logs in through the registry's recorder page sees the tab's screencast
// frames on lk.live.<recording>.frames and drives it with clicks and keys sent on
// lk.live.<recording>.input, every message sealed with the live-view key
// (bus.SealLive). A View streams until the main frame reaches the finish URL prefix
// or the person presses Finish. Frames and typed keys are never logged.
package live

import (
	"context"
	"errors"
	"log/slog"
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

	"github.com/latchkey/latchkey/libs/bus"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

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

// Host is what a recording needs of the task it runs in.
type Host interface {
	// BrowserError types an error of a browser call: infrastructure trouble when the
	// browser died, the task's cancellation or deadline when those ended it.
	BrowserError(ctx context.Context, err error) error
	// BrowserGone reports whether the task's browser exited.
	BrowserGone() bool
}

// View is one running recording.
type View struct {
	h                  Host
	nc                 *nats.Conn
	log                *slog.Logger
	runID              string
	stopping           func() bool
	tab                context.Context
	key                []byte
	framesSubj         string
	inputSubj          string
	finishPrefix       string
	input              chan *runnerv1.LiveInput
	mu                 sync.Mutex
	last               []byte // the newest frame message, sealed, for a viewer that connects
	lastW, lastH       float64
	location           string
	frameSeen, stopped bool
}

// Options are what a View needs of its runner.
type Options struct {
	Log *slog.Logger
	// RunID names the recording's Run in logs.
	RunID string
	// Stopping reports whether the runner is stopping: the recording then ends, and
	// the task is handed back.
	Stopping func() bool
}

// New returns the live view of recording, sealed with key, that ends at URLs starting
// with finishPrefix. It fails when the recording id cannot name a subject.
func New(nc *nats.Conn, key []byte, recording, finishPrefix string, h Host, opt Options) (*View, error) {
	framesSubj, err := bus.LiveFramesSubject(recording)
	if err != nil {
		return nil, err
	}
	inputSubj, _ := bus.LiveInputSubject(recording)
	return &View{
		h: h, nc: nc, log: opt.Log, runID: opt.RunID, stopping: opt.Stopping, key: key,
		framesSubj: framesSubj, inputSubj: inputSubj, finishPrefix: finishPrefix,
		input: make(chan *runnerv1.LiveInput, maxInputQueue),
	}, nil
}

// Subscribe starts taking the person's input; call it before the browser context
// opens, so a viewer's hello is not lost meanwhile. The returned func stops it.
func (lv *View) Subscribe() (unsubscribe func(), err error) {
	sub, err := lv.nc.Subscribe(lv.inputSubj, lv.onInput)
	if err != nil {
		return nil, err
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// Run streams tab, opened at start, until the person is done and the state is to be
// captured (nil), or the task is canceled or runs past its deadline, its browser
// fails, or the runner stops (the error says which).
func (lv *View) Run(tab context.Context, start string) error {
	lv.tab = tab
	if _, err := chromedp.Call(tab, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
		Width: recordWidth, Height: recordHeight, DeviceScaleFactor: 1,
	}); err != nil {
		return lv.h.BrowserError(tab, err)
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
		return lv.h.BrowserError(tab, err)
	}
	lv.publishState(runnerv1.LiveState_LIVE_STATE_RECORDING, "")
	if err := chromedp.Do(tab, chromedp.Navigate(start)); err != nil && tab.Err() != nil {
		return lv.h.BrowserError(tab, err)
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
	return nil
}

// loop replays input and watches the URL until the person is done, the task is
// canceled or runs past its deadline, or the runner stops.
func (lv *View) loop(urls <-chan string) error {
	tab := lv.tab
	tick := time.NewTicker(recordPoll)
	defer tick.Stop()
	for {
		select {
		case <-tab.Done():
			return lv.h.BrowserError(tab, tab.Err())
		case u := <-urls:
			if lv.finished(u) {
				return errFinished
			}
		case in := <-lv.input:
			if in.GetType() == runnerv1.LiveInputType_LIVE_INPUT_TYPE_FINISH {
				return errFinished
			}
			if err := lv.apply(in); err != nil && tab.Err() == nil && !lv.h.BrowserGone() {
				lv.log.DebugContext(tab, "replaying recorder input failed", "run_id", lv.runID, "input_type", in.GetType().String())
			}
		case <-tick.C:
			if lv.stopping() {
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
func (lv *View) finished(u string) bool {
	if p, err := url.Parse(u); err == nil && (p.Scheme == "http" || p.Scheme == "https") {
		lv.mu.Lock()
		lv.location = p.Scheme + "://" + p.Host + p.Path
		lv.mu.Unlock()
	}
	return lv.finishPrefix != "" && strings.HasPrefix(u, lv.finishPrefix)
}

// onInput queues the person's input for the loop (NATS callback: never blocks).
func (lv *View) onInput(m *nats.Msg) {
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
func (lv *View) stream(frames func(func(page.EventScreencastFrame, error) bool)) {
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
func (lv *View) publish(f *runnerv1.LiveFrame, keep bool) {
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
	_ = lv.nc.Publish(lv.framesSubj, sealed)
}

// publishState sends a state change of the recording with a message for the person.
func (lv *View) publishState(s runnerv1.LiveState, msg string) {
	lv.mu.Lock()
	loc := lv.location
	lv.mu.Unlock()
	lv.publish(&runnerv1.LiveFrame{State: s, Location: loc, Message: msg}, false)
}

// resend answers a viewer's hello with the newest frame.
func (lv *View) resend() {
	lv.mu.Lock()
	last, stopped := lv.last, lv.stopped
	lv.mu.Unlock()
	if last != nil && !stopped {
		_ = lv.nc.Publish(lv.framesSubj, last)
	}
}

// apply replays one input in the tab. Coordinates arrive as fractions of the frame
// and are scaled to the viewport the frame showed.
func (lv *View) apply(in *runnerv1.LiveInput) error {
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
func (lv *View) keys(r rune, mods int64) error {
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

// End tells the person the recording ended because of err, without internals.
func (lv *View) End(err error) {
	lv.publishState(runnerv1.LiveState_LIVE_STATE_ENDED, endMessage(err))
}

// endMessage says why the recording ended.
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
