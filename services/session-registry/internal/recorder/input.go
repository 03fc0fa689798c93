package recorder

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"unicode/utf8"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
)

// Limits of POST /record/{token}/input.
const (
	maxInputBody   = 64 << 10
	maxInputEvents = 100
	maxTextRunes   = 1000
	maxDelta       = 10000
)

// namedKeys are the keys a KEY event may name; characters come as TEXT.
var namedKeys = []string{
	"Enter", "Tab", "Backspace", "Delete", "Escape", "ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown",
	"Home", "End", "PageUp", "PageDown", "Space",
}

// inputEvent is one event as the page sends it.
type inputEvent struct {
	Type   string  `json:"type"`
	X      float64 `json:"x"`
	Y      float64 `json:"y"`
	Button string  `json:"button"`
	Key    string  `json:"key"`
	Text   string  `json:"text"`
	DX     float64 `json:"dx"`
	DY     float64 `json:"dy"`
	Mods   int32   `json:"mods"`
}

// input takes a batch of the person's events ({"events": [...]}), checks each, and
// publishes them in order to the recording's browser.
func (r *Recorder) input(w http.ResponseWriter, req *http.Request) {
	c, id, ok := r.token(w, req)
	if !ok {
		return
	}
	if !r.holds(req.Context(), req, id) {
		plain(w, http.StatusForbidden, "Input is taken only from the browser that opened the recorder link.")
		return
	}
	var body struct {
		Events []inputEvent `json:"events"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, maxInputBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			plain(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("The input is larger than %d bytes.", maxInputBody))
			return
		}
		plain(w, http.StatusBadRequest, `The body must be JSON: {"events": [{"type": "click", "x": 0.5, "y": 0.5}, ...]}.`)
		return
	}
	if len(body.Events) == 0 || len(body.Events) > maxInputEvents {
		plain(w, http.StatusBadRequest, fmt.Sprintf("Send between 1 and %d events.", maxInputEvents))
		return
	}
	in := make([]*runnerv1.LiveInput, 0, len(body.Events))
	for i, ev := range body.Events {
		li, err := ev.toProto()
		if err != nil {
			plain(w, http.StatusBadRequest, fmt.Sprintf("Event %d: %v.", i, err))
			return
		}
		in = append(in, li)
	}
	if err := r.publishInput(c.Run, in); err != nil {
		r.d.Log.WarnContext(req.Context(), "publishing recorder input failed", "run_id", c.Run, "error", err)
		plain(w, http.StatusServiceUnavailable, "The recorder is not available right now; try again.")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// toProto checks an event; its errors never quote what was typed.
func (ev inputEvent) toProto() (*runnerv1.LiveInput, error) {
	li := &runnerv1.LiveInput{Modifiers: ev.Mods}
	if ev.Mods < 0 || ev.Mods > 15 {
		return nil, errors.New("mods must be a bit mask between 0 and 15")
	}
	pointer := func() error {
		if !fraction(ev.X) || !fraction(ev.Y) {
			return errors.New("x and y must be fractions of the image between 0 and 1")
		}
		li.X, li.Y = ev.X, ev.Y
		return nil
	}
	var err error
	switch ev.Type {
	case "click":
		li.Type, err = runnerv1.LiveInputType_LIVE_INPUT_TYPE_CLICK, pointer()
		if !slices.Contains([]string{"", "left", "middle", "right"}, ev.Button) {
			return nil, errors.New("button must be left, middle or right")
		}
		li.Button = ev.Button
	case "move":
		li.Type, err = runnerv1.LiveInputType_LIVE_INPUT_TYPE_MOVE, pointer()
	case "wheel":
		li.Type, err = runnerv1.LiveInputType_LIVE_INPUT_TYPE_WHEEL, pointer()
		if math.IsNaN(ev.DX) || math.IsNaN(ev.DY) || math.Abs(ev.DX) > maxDelta || math.Abs(ev.DY) > maxDelta {
			return nil, fmt.Errorf("dx and dy must be between -%d and %d", maxDelta, maxDelta)
		}
		li.DeltaX, li.DeltaY = ev.DX, ev.DY
	case "key":
		if !slices.Contains(namedKeys, ev.Key) {
			return nil, fmt.Errorf("key must be one of %v (characters are sent as text)", namedKeys)
		}
		li.Type, li.Key = runnerv1.LiveInputType_LIVE_INPUT_TYPE_KEY, ev.Key
	case "text":
		if ev.Text == "" || !utf8.ValidString(ev.Text) || utf8.RuneCountInString(ev.Text) > maxTextRunes {
			return nil, fmt.Errorf("text must be 1 to %d characters of UTF-8", maxTextRunes)
		}
		li.Type, li.Text = runnerv1.LiveInputType_LIVE_INPUT_TYPE_TEXT, ev.Text
	case "finish":
		li.Type = runnerv1.LiveInputType_LIVE_INPUT_TYPE_FINISH
	default:
		return nil, errors.New("type must be click, move, wheel, key, text or finish")
	}
	return li, err
}

func fraction(v float64) bool { return !math.IsNaN(v) && v >= 0 && v <= 1 }
