package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestRecorderURLIsOneTimeAndExpires: the first browser that opens a recorder URL
// owns it (a reload works), any other browser is refused, a tampered token is
// refused, the input endpoint checks what it is sent, and once the URL's time is up
// it answers Gone, the recording's Run fails with TIMEOUT and the session is still
// PENDING.
func TestRecorderURLIsOneTimeAndExpires(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{Args: []string{"-recorder-ttl", "10s"}})
	sess := w.recorderSession(t)
	rec := w.recorderURL(t, sess.GetId())
	u := rec.GetRecorderUrl()
	if ttl := time.Until(rec.GetExpireTime().AsTime()); ttl <= 0 || ttl > 11*time.Second {
		t.Fatalf("expire time is %s away, want about 10s", ttl)
	}

	owner, other := newClient(t), newClient(t)
	// Loading the page does not use the link up (a link preview or a mail scanner
	// fetches it first); the page's script claims it.
	for _, c := range []*http.Client{other, owner} {
		if code, body := httpGet(t, c, u); code != http.StatusOK || !strings.Contains(body, "Latchkey recorder") {
			t.Fatalf("loading the page: %d %q", code, body)
		}
	}
	if code := post(t, owner, u+"/claim", ""); code != http.StatusNoContent {
		t.Fatalf("first claim: %d, want 204", code)
	}
	if code := post(t, owner, u+"/claim", ""); code != http.StatusNoContent {
		t.Fatalf("claim again by the browser that holds it (a reload): %d, want 204", code)
	}
	if code := post(t, other, u+"/claim", ""); code != http.StatusGone {
		t.Fatalf("claim by a second browser: %d, want 410", code)
	}
	if code, _ := httpGet(t, other, u+"/frames"); code != http.StatusForbidden {
		t.Fatalf("frames for another browser: %d, want 403", code)
	}
	if code := post(t, other, u+"/input", `{"events":[{"type":"click","x":0.5,"y":0.5}]}`); code != http.StatusForbidden {
		t.Fatalf("input from another browser: %d, want 403", code)
	}
	i := strings.LastIndex(u, ".") + 1
	c := "A"
	if u[i] == 'A' {
		c = "B"
	}
	flipped := u[:i] + c + u[i+1:]
	for name, bad := range map[string]string{"tampered signature": flipped, "garbage": u[:strings.LastIndex(u, "/")+1] + "garbage"} {
		if code, _ := httpGet(t, newClient(t), bad); code != http.StatusForbidden {
			t.Errorf("%s token: %d, want 403", name, code)
		}
	}
	for body, want := range map[string]int{
		`{"events":[{"type":"click","x":0.5,"y":0.5}]}`: http.StatusNoContent,
		`{"events":[{"type":"click","x":2,"y":0.5}]}`:   http.StatusBadRequest,
		`{"events":[{"type":"key","key":"F13"}]}`:       http.StatusBadRequest,
		`{"events":[]}`: http.StatusBadRequest,
		`not json`:      http.StatusBadRequest,
		`{"events":[{"type":"text","text":"` + strings.Repeat("x", 70<<10) + `"}]}`: http.StatusRequestEntityTooLarge,
	} {
		if code := post(t, owner, u+"/input", body); code != want {
			t.Errorf("input %.60s: %d, want %d", body, code, want)
		}
	}

	// Waiting out the URL's lifetime is the subject here. Polling the URL instead would
	// open the one-time page again before it expires.
	time.Sleep(time.Until(rec.GetExpireTime().AsTime()) + 500*time.Millisecond)
	if code, body := httpGet(t, owner, u); code != http.StatusGone || !strings.Contains(body, "expired") {
		t.Fatalf("after expiry: %d %q, want 410 expired", code, body)
	}
	run := w.wait(t, rec.GetRecordRunId())
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_FAILED || run.GetFailureReason() != latchkeyv1.FailureReason_FAILURE_REASON_TIMEOUT {
		t.Fatalf("an unfinished recording ended %s, want FAILED TIMEOUT", fmtRun(run))
	}
	if s := w.session(t, sess.GetId()); s.GetState() != latchkeyv1.SessionState_SESSION_STATE_PENDING || s.GetStateRevision() != 0 {
		t.Fatalf("after an unfinished recording the session is %s rev %d, want PENDING with no state", s.GetState(), s.GetStateRevision())
	}
}

// TestRecorderCanceledLeavesSessionAsItWas: a person opens the live view, then the
// recording's Run is canceled. The Run is CANCELED, the page says the recording ended,
// and the session is still PENDING with no state.
func TestRecorderCanceledLeavesSessionAsItWas(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.recorderSession(t)
	rec := w.recorderURL(t, sess.GetId())
	page := openRecorder(t, personBrowser(t), rec.GetRecorderUrl())
	if _, err := w.runs.CancelRun(t.Context(), &latchkeyv1.CancelRunRequest{RunId: rec.GetRecordRunId()}); err != nil {
		t.Fatalf("CancelRun: %v", err)
	}
	if run := w.wait(t, rec.GetRecordRunId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_CANCELED {
		t.Fatalf("canceled recording ended %s", fmtRun(run))
	}
	waitPage(t, page, "the page to say the recording ended", `["ended", "failed"].includes(document.body.dataset.state)`)
	if s := w.session(t, sess.GetId()); s.GetState() != latchkeyv1.SessionState_SESSION_STATE_PENDING || s.GetStateRevision() != 0 {
		t.Fatalf("after a canceled recording the session is %s rev %d, want PENDING with no state", s.GetState(), s.GetStateRevision())
	}
	if c := w.portal.Counters(); c.Logins != 0 {
		t.Errorf("portal counted %d logins, want none", c.Logins)
	}
}

// TestANewRecorderURLReplacesTheOld: asking for a second URL cancels the first
// recording, which would otherwise hold a runner's browser until it expired.
func TestANewRecorderURLReplacesTheOld(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.recorderSession(t)
	first := w.recorderURL(t, sess.GetId())
	second := w.recorderURL(t, sess.GetId())
	if run := w.wait(t, first.GetRecordRunId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_CANCELED {
		t.Fatalf("the first recording after a second URL = %s", fmtRun(run))
	}
	resp, err := w.runs.GetRun(t.Context(), &latchkeyv1.GetRunRequest{RunId: second.GetRecordRunId()})
	if err != nil {
		t.Fatal(err)
	}
	if st := resp.GetRun().GetState(); st != latchkeyv1.RunState_RUN_STATE_QUEUED && st != latchkeyv1.RunState_RUN_STATE_RUNNING {
		t.Fatalf("the second recording = %s, want it live", fmtRun(resp.GetRun()))
	}
}

// TestRecorderURLOnlyForOwnRecorderSessions: CreateRecorderUrl on a CREDENTIALS
// session is FailedPrecondition; another project's session and an unknown one are
// NotFound; a public caller cannot start a RECORD Run directly.
func TestRecorderURLOnlyForOwnRecorderSessions(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	creds, _ := w.createSession(t, latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, alice())
	recSess := w.recorderSession(t)
	_, err := w.sessions.CreateRecorderUrl(t.Context(), &latchkeyv1.CreateRecorderUrlRequest{AuthSessionId: creds.GetId()})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "RECORDER") {
		t.Errorf("CreateRecorderUrl on a CREDENTIALS session: %v, want FailedPrecondition naming RECORDER", err)
	}
	if _, err := w.sessions.CreateRecorderUrl(t.Context(), &latchkeyv1.CreateRecorderUrlRequest{AuthSessionId: "no-such-session"}); status.Code(err) != codes.NotFound {
		t.Errorf("CreateRecorderUrl on an unknown session: %v, want NotFound", err)
	}
	created, err := latchkeyv1.NewProjectServiceClient(w.st.Dial(t, w.st.AdminKey)).CreateProject(t.Context(), &latchkeyv1.CreateProjectRequest{ProjectId: "other"})
	if err != nil {
		t.Fatal(err)
	}
	other := latchkeyv1.NewAuthSessionServiceClient(w.st.Dial(t, created.GetApiKeySecret()))
	if _, err := other.CreateRecorderUrl(t.Context(), &latchkeyv1.CreateRecorderUrlRequest{AuthSessionId: recSess.GetId()}); status.Code(err) != codes.NotFound {
		t.Errorf("CreateRecorderUrl on another project's session: %v, want NotFound", err)
	}
	_, err = w.runs.StartRun(t.Context(), &latchkeyv1.StartRunRequest{Api: "auth-sessions/check", AuthSessionId: recSess.GetId(), Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("StartRun RECORD with a project key: %v, want PermissionDenied", err)
	}
}

// post sends a JSON body and returns the status.
func post(t *testing.T, client *http.Client, url, body string) int {
	t.Helper()
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
