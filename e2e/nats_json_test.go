package e2e

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/testkit"
)

// jsonRunEvent is a run event as a publisher that speaks JSON only reads it: the
// canonical protojson of latchkey.events.v1.RunEvent.
type jsonRunEvent struct {
	Event string `json:"event"`
	Run   struct {
		ID             string          `json:"id"`
		State          string          `json:"state"`
		FailureMessage string          `json:"failureMessage"`
		Output         json.RawMessage `json:"output"`
	} `json:"run"`
}

// TestRunRequestsInJSON: an internal system that has no protobuf publishes a run
// request as JSON with Content-Type: application/json and reads the Run's events, in
// JSON, on lk.events.json.run.<project>.<run>; a malformed one is refused with a
// message that says what is wrong, on the same subject.
func TestRunRequestsInJSON(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	nc, err := nats.Connect(w.st.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// publish sends body as a JSON run request and returns the Run's JSON events until
	// one ends it.
	publish := func(t *testing.T, runID, body string) []jsonRunEvent {
		t.Helper()
		events := make(chan *nats.Msg, 64)
		sub, err := nc.ChanSubscribe("lk.events.json.run.acme."+runID, events)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		m := nats.NewMsg("lk.runs.requests.acme")
		m.Data = []byte(body)
		m.Header.Set(bus.HeaderContentType, "application/json; charset=utf-8")
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		var got []jsonRunEvent
		deadline := time.After(60 * time.Second)
		for {
			select {
			case m := <-events:
				if ct := m.Header.Get(bus.HeaderContentType); ct != bus.ContentTypeJSON {
					t.Errorf("event Content-Type %q, want %s", ct, bus.ContentTypeJSON)
				}
				var ev jsonRunEvent
				if err := json.Unmarshal(m.Data, &ev); err != nil {
					t.Fatalf("event is not JSON: %v: %s", err, m.Data)
				}
				got = append(got, ev)
				switch ev.Run.State {
				case "RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELED":
					return got
				}
			case <-deadline:
				t.Fatalf("no final JSON event for %s; got %+v", runID, got)
			}
		}
	}

	t.Run("a JSON request runs and its events come in JSON", func(t *testing.T) {
		runID := "run-json-1"
		events := publish(t, runID, `{"apiKey": "`+w.apiKey+`", "runId": "`+runID+`",
			"request": {"api": "list-invoices", "authSessionId": "`+sess.GetId()+`"}}`)
		last := events[len(events)-1]
		if last.Run.State != "RUN_STATE_SUCCEEDED" || last.Run.ID != runID {
			t.Fatalf("final event %+v, want %s SUCCEEDED", last, runID)
		}
		if !strings.Contains(string(last.Run.Output), "INV-") {
			t.Errorf("output %s holds no invoice", last.Run.Output)
		}
		if events[0].Event != "queued" {
			t.Errorf("first event %q, want queued", events[0].Event)
		}
	})

	t.Run("a request with an unknown field is refused, saying which", func(t *testing.T) {
		runID := "run-json-2"
		events := publish(t, runID, `{"apiKey": "`+w.apiKey+`", "runId": "`+runID+`",
			"request": {"api": "list-invoices", "authSessionId": "`+sess.GetId()+`", "retires": 3}}`)
		last := events[len(events)-1]
		if last.Event != "rejected" || last.Run.State != "RUN_STATE_FAILED" || !strings.Contains(last.Run.FailureMessage, `unknown field "retires"`) {
			t.Errorf("final event %+v, want rejected, FAILED, naming the unknown field", last)
		}
	})

	t.Run("a JSON request with a bad API key is refused in JSON", func(t *testing.T) {
		runID := "run-json-3"
		events := publish(t, runID, `{"apiKey": "lk_not-a-key", "runId": "`+runID+`",
			"request": {"api": "list-invoices", "authSessionId": "`+sess.GetId()+`"}}`)
		if last := events[len(events)-1]; last.Event != "rejected" || !strings.Contains(last.Run.FailureMessage, "API key") {
			t.Errorf("final event %+v, want rejected for the API key", last)
		}
	})
}

// TestNATSCLIStartsARun is the docs/clients.md example: with nothing but the plain
// `nats` CLI, publish a JSON run request and print the Run's events as they come.
func TestNATSCLIStartsARun(t *testing.T) {
	t.Parallel()
	natsCLI := testkit.Tool(t, "nats")
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	runID := "run-from-the-nats-cli"
	server := "--server=" + w.st.NATSURL()

	body := `{"apiKey":"` + w.apiKey + `","runId":"` + runID + `","request":{"api":"list-invoices","authSessionId":"` + sess.GetId() + `"}}`
	pub := exec.CommandContext(t.Context(), natsCLI, "pub", server, "lk.runs.requests.acme", body, "-H", "Content-Type:application/json")
	if msg, err := pub.CombinedOutput(); err != nil {
		t.Fatalf("nats pub: %v: %s", err, msg)
	}
	// The events are kept in LK_EVENTS: --all reads them from the first, so the
	// subscription cannot miss one that came before it.
	sub := exec.CommandContext(t.Context(), natsCLI, "sub", server, "--all", "--raw", "lk.events.json.run.acme."+runID)
	out, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Process.Kill(); _ = sub.Wait() }()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("nats sub ended before the Run did")
			}
			var ev jsonRunEvent
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				continue // nats sub's own notices
			}
			t.Logf("%s %s", ev.Event, ev.Run.State)
			if ev.Run.State == "RUN_STATE_SUCCEEDED" {
				if !strings.Contains(string(ev.Run.Output), "INV-") {
					t.Fatalf("output %s holds no invoice", ev.Run.Output)
				}
				return
			}
			if strings.HasPrefix(ev.Run.State, "RUN_STATE_FAILED") || ev.Run.State == "RUN_STATE_CANCELED" {
				t.Fatalf("the Run ended %s: %s", ev.Run.State, ev.Run.FailureMessage)
			}
		case <-deadline:
			t.Fatal("no final event printed by nats sub")
		}
	}
}

// TestGRPCurlStartsARunAndWatchesIt is the docs/clients.md grpcurl example: StartRun,
// then WatchRun until the Run ends, with nothing but grpcurl and server reflection.
func TestGRPCurlStartsARunAndWatchesIt(t *testing.T) {
	t.Parallel()
	grpcurl := testkit.Tool(t, "grpcurl")
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t)
	call := func(method, body string) []byte {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), grpcurl, "-plaintext", "-H", "authorization: Bearer "+w.apiKey,
			"-d", body, w.st.GRPCAddr(), "latchkey.v1.RunService/"+method)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %s: %v: %s", method, err, out)
		}
		return out
	}
	var started struct {
		Run struct {
			ID string `json:"id"`
		} `json:"run"`
	}
	if out := call("StartRun", `{"api": "list-invoices", "authSessionId": "`+sess.GetId()+`"}`); json.Unmarshal(out, &started) != nil || started.Run.ID == "" {
		t.Fatalf("StartRun printed %s", out)
	}
	// WatchRun streams the Run as it changes and ends with it.
	out := string(call("WatchRun", `{"runId": "`+started.Run.ID+`"}`))
	if !strings.Contains(out, "RUN_STATE_SUCCEEDED") || !strings.Contains(out, "INV-") {
		t.Fatalf("WatchRun printed no SUCCEEDED Run with invoices:\n%s", out)
	}
}
