package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestRecorderPersonLogsIn is DESIGN.md section 8 end to end: a RECORDER session gets
// a recorder URL; a person (a second Chromium) opens it, clicks into the portal's
// login form in the live view, types the user name and password and clicks Log in —
// all through the recorder page's own script. The session becomes READY, a Run on it
// succeeds, the portal saw exactly one login, and the password crossed no log line,
// no span and no NATS message in clear.
func TestRecorderPersonLogsIn(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	w := newWorld(t, stacktest.Options{SpanExporter: spans})
	var b [6]byte
	_, _ = rand.Read(b[:])
	password := "Canary-" + hex.EncodeToString(b[:])
	if err := w.portal.SetPassword(portal.AliceUsername, password); err != nil {
		t.Fatal(err)
	}
	// Everything on the live subjects, as it crossed NATS.
	nc, err := nats.Connect(w.st.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	var wire bytes.Buffer
	liveMsgs := 0
	sub, err := nc.Subscribe("lk.live.>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		wire.Write(m.Data)
		liveMsgs++
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	sess := w.recorderSession(t)
	if sess.GetState() != latchkeyv1.SessionState_SESSION_STATE_PENDING {
		t.Fatalf("new RECORDER session is %s, want PENDING", sess.GetState())
	}
	rec := w.recorderURL(t, sess.GetId())
	if !strings.HasPrefix(rec.GetRecorderUrl(), "http://"+w.st.HTTPAddr()+"/record/") || rec.GetRecordRunId() == "" {
		t.Fatalf("CreateRecorderUrl = %v", rec)
	}

	person := personBrowser(t)
	page := logInThroughRecorder(t, w, person, rec.GetRecorderUrl(), password)

	if run := w.wait(t, rec.GetRecordRunId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("record run ended %s\nlogs:\n%s", fmtRun(run), tail(w.st.Logs.String()))
	}
	ready := w.waitSession(t, sess.GetId(), "READY", func(s *latchkeyv1.AuthSession) bool {
		return s.GetState() == latchkeyv1.SessionState_SESSION_STATE_READY
	})
	if ready.GetStateRevision() == 0 {
		t.Fatalf("READY session has no state revision: %v", ready)
	}
	waitPage(t, page, "the page to say the session is READY", `document.body.dataset.state === "ready"`)

	run := w.start(t, "list-invoices", sess.GetId(), nil)
	if got := w.wait(t, run.GetId()); got.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("list-invoices on the recorded session ended %s", fmtRun(got))
	} else if !strings.Contains(got.GetOutput().String(), "INV-") {
		t.Errorf("list-invoices output has no invoices: %v", got.GetOutput())
	}
	if c := w.portal.Counters(); c.Logins != 1 || c.LoginsByUser[portal.AliceUsername] != 1 {
		t.Errorf("portal counted %d logins (%v), want exactly the person's one", c.Logins, c.LoginsByUser)
	}

	// The password is nowhere it must not be. The scans first find what they must
	// find, so a scan that reads nothing cannot pass.
	logs := w.st.Logs.String()
	if !strings.Contains(logs, rec.GetRecordRunId()) {
		t.Fatal("the logs do not mention the record run: the scan reads the wrong thing")
	}
	var spanText strings.Builder
	for _, s := range spans.GetSpans() {
		fmt.Fprintf(&spanText, "%s %s %v", s.Name, s.Status.Description, s.Attributes)
		for _, e := range s.Events {
			fmt.Fprintf(&spanText, " %s %v", e.Name, e.Attributes)
		}
	}
	if !strings.Contains(spanText.String(), "task result") {
		t.Fatal("no runner spans were exported: the span scan reads nothing")
	}
	mu.Lock()
	wireBytes, n := wire.Bytes(), liveMsgs
	mu.Unlock()
	if n < 5 {
		t.Fatalf("only %d live messages crossed NATS", n)
	}
	for where, text := range map[string][]byte{"logs": []byte(logs), "spans": []byte(spanText.String()), "live NATS messages": wireBytes} {
		if containsAny(text, encodings([][]byte{[]byte(password)})) {
			t.Errorf("the typed password appears in the %s", where)
		}
	}
	if strings.Contains(logs, rec.GetRecorderUrl()[strings.LastIndex(rec.GetRecorderUrl(), "/")+1:]) {
		t.Error("the recorder token appears in the logs")
	}
}

// TestRecorderFixesAnExpiredSession: a recorded session whose portal session ended is
// EXPIRED by the next Run's check (RECORDER sessions never log in by themselves); a
// new recording on the EXPIRED session makes it READY again, and Runs succeed.
func TestRecorderFixesAnExpiredSession(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.recorderSession(t)
	person := personBrowser(t)
	for round := 1; round <= 2; round++ {
		rec := w.recorderURL(t, sess.GetId())
		logInThroughRecorder(t, w, person, rec.GetRecorderUrl(), portal.AlicePassword)
		if run := w.wait(t, rec.GetRecordRunId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("round %d: record run ended %s\nlogs:\n%s", round, fmtRun(run), tail(w.st.Logs.String()))
		}
		if got := w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId()); got.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("round %d: list-invoices ended %s", round, fmtRun(got))
		}
		if round == 2 {
			break
		}
		w.portal.ExpireSessions()
		if got := w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId()); got.GetState() != latchkeyv1.RunState_RUN_STATE_CANCELED {
			t.Fatalf("a Run on the logged-out session ended %s, want CANCELED", fmtRun(got))
		}
		w.waitSession(t, sess.GetId(), "EXPIRED", func(s *latchkeyv1.AuthSession) bool {
			return s.GetState() == latchkeyv1.SessionState_SESSION_STATE_EXPIRED
		})
	}
	if c := w.portal.Counters(); c.Logins != 2 {
		t.Errorf("portal counted %d logins, want the person's two", c.Logins)
	}
}

// logInThroughRecorder plays the person: it opens the recorder URL, clicks into the
// portal's login form in the live view, types alice's user name and password, and
// clicks Log in. It returns the recorder page's tab.
func logInThroughRecorder(t *testing.T, w *world, person context.Context, url, password string) context.Context {
	t.Helper()
	at := loginTargets(t, person, w.portalURL)
	page := openRecorder(t, person, url)
	clickScreen(t, page, at["username"])
	typeKeys(t, page, portal.AliceUsername)
	clickScreen(t, page, at["password"])
	typeKeys(t, page, password)
	clickScreen(t, page, at["login-button"])
	return page
}
