package engine

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/libs/bus"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestTOTPStepsAreSharedByRunners: two runners on one NATS never hand out the same
// time step of one session's secret, also when they ask at once; other sessions and
// secrets are apart; without JetStream, or without the bucket, a runner remembers
// steps itself (and says so).
func TestTOTPStepsAreSharedByRunners(t *testing.T) {
	t.Parallel()
	url, _, js := testkit.NATS(t)
	ctx := t.Context()
	log := slogJSON(&logBuffer{})
	a := newTOTPSteps(connectTo(t, url, "runner-a"), log)
	b := newTOTPSteps(connectTo(t, url, "runner-b"), log)
	const now = 59_000_000
	key, other := totpKey("p", "s1", "SECRET"), totpKey("p", "s2", "SECRET")
	reserve := func(s *totpSteps, key string, want uint64) uint64 {
		t.Helper()
		got, err := s.reserve(ctx, key, want)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for i, step := range []struct {
		s         *totpSteps
		key       string
		want, got uint64
	}{
		{a, key, now, now},         // the first login of the step
		{b, key, now, now + 1},     // another runner, same step: the next one
		{a, key, now, now + 2},     // and the one after
		{b, key, now + 5, now + 5}, // later on, the current step again
		{b, other, now, now},       // another session has its own steps
	} {
		if got := reserve(step.s, step.key, step.want); got != step.got {
			t.Errorf("reservation %d: step %d, want %d", i, got-now, step.got-now)
		}
	}

	const n = 8
	got := make([]uint64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i] = reserve([]*totpSteps{a, b}[i%2], totpKey("p", "s3", "SECRET"), now) })
	}
	wg.Wait()
	slices.Sort(got)
	for i := range got {
		if got[i] != now+uint64(i) {
			t.Fatalf("concurrent reservations %v, want %d distinct steps from now", got, n)
		}
	}

	mem := newTOTPSteps(nil, log)
	if s1, s2 := reserve(mem, key, now), reserve(mem, key, now); s1 != now || s2 != now+1 {
		t.Errorf("in memory: %d then %d, want now then the next", s1-now, s2-now)
	}

	if err := js.DeleteKeyValue(ctx, bus.BucketTOTP); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	missing := newTOTPSteps(connectTo(t, url, "runner-c"), slogJSON(logs))
	if s1, s2 := reserve(missing, key, now), reserve(missing, key, now); s1 != now || s2 != now+1 {
		t.Errorf("without the bucket: %d then %d, want now then the next", s1-now, s2-now)
	}
	if !strings.Contains(logs.String(), "TOTP bucket is missing") {
		t.Errorf("no warning about the missing bucket in %s", logs)
	}
}

// freshTOTPStep is testkit.FreshTOTPStep as the runner counts steps.
func freshTOTPStep(t *testing.T, left time.Duration) uint64 {
	t.Helper()
	return uint64(testkit.FreshTOTPStep(t, left))
}

func erinCreds() map[string]string {
	return map[string]string{"username": portal.ErinUsername, "password": portal.ErinPassword, "totp_secret": portal.ErinTOTPSecret}
}

// TestTOTPTwoLoginsInOneStep: two logins of one session to erin (whose codes work
// once) on two runners within one 30 s step both succeed, with no refused code: the
// second waits for the next step, which it knows of from LK_TOTP.
func TestTOTPTwoLoginsInOneStep(t *testing.T) {
	t.Parallel()
	p, base := portaltest.Start(t, portal.Config{})
	url, _, _ := testkit.NATS(t)
	be := newTestBackend(t, portalBundle(t))
	be.vars[project+"/s1"] = map[string]string{"baseURL": base}
	be.secrets[project+"/session-s1"] = erinCreds()
	runners := []*Runner{
		newTestRunner(t, Config{}, be, Deps{JS: connectTo(t, url, "runner-a")}),
		newTestRunner(t, Config{}, be, Deps{JS: connectTo(t, url, "runner-b")}),
	}
	step := freshTOTPStep(t, 12*time.Second)
	for i, r := range runners {
		tk := task(runnerv1.TaskKind_TASK_KIND_CREATE, recipe.CreateAPI, project, "s1", 0, nil)
		tk.Credentials = &runnerv1.CredentialsRef{Source: &runnerv1.CredentialsRef_SecretId{SecretId: "session-s1"}}
		start := time.Now()
		res := r.Execute(t.Context(), tk)
		if res.GetStatus() != statusSucceeded {
			t.Fatalf("login %d: %s %s (%s)", i+1, res.GetStatus(), res.GetFailureReason(), res.GetFailureMessage())
		}
		t.Logf("login %d took %s", i+1, time.Since(start).Round(time.Millisecond))
	}
	if now := uint64(time.Now().Unix() / 30); now == step {
		t.Errorf("both logins ended in step %d: the second cannot have used a code of its own", step)
	}
	if c := p.Counters(); c.LoginsByUser[portal.ErinUsername] != 2 || c.FailedLogins != 0 {
		t.Errorf("portal counted %d logins of erin and %d refused codes, want 2 and 0", c.LoginsByUser[portal.ErinUsername], c.FailedLogins)
	}
}

// TestTOTPRetryWithAFreshCode: the site refuses the code (erin logged in elsewhere
// with this step's code, so Latchkey could not know); the portal recipe's retry goes
// back to its totp step once, which waits for the next step, and the login succeeds.
func TestTOTPRetryWithAFreshCode(t *testing.T) {
	t.Parallel()
	p, base := portaltest.Start(t, portal.Config{})
	files := portalBundle(t)
	b, err := recipe.Parse(files, recipe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	freshTOTPStep(t, 8*time.Second)
	portaltest.Login(t, base, portal.User{Username: portal.ErinUsername, Password: portal.ErinPassword, TOTPSecret: portal.ErinTOTPSecret})
	r := newTestRunner(t, Config{}, nil, Deps{})
	var mu sync.Mutex
	var notes []string
	res, err := r.RunLocal(t.Context(), LocalRun{Bundle: b, API: recipe.CreateAPI, Credentials: sdk.Credentials(erinCreds()),
		Vars: map[string]string{"baseURL": base},
		Observer: func(ev sdk.StepEvent) {
			mu.Lock()
			defer mu.Unlock()
			if ev.Kind == recipe.TOTP || ev.Kind == recipe.Retry {
				notes = append(notes, fmt.Sprintf("%d %s %s: %s", ev.Index, ev.Kind, ev.Status, ev.Note))
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if res.Failure != nil {
		t.Fatalf("login failed: %v\nsteps: %q", res.Failure, notes)
	}
	if len(notes) != 4 || !strings.Contains(notes[1], `going back to step 7 ("totp code")`) ||
		!strings.Contains(notes[2], "the current one was used: waited") || !strings.Contains(notes[3], "skipped") {
		t.Errorf("totp and retry steps: %q; want totp, retry back to it, totp waiting for the next step, retry skipped", notes)
	}
	if c := p.Counters(); c.LoginsByUser[portal.ErinUsername] != 2 || c.FailedLogins != 1 {
		t.Errorf("portal counted %d logins of erin and %d refused codes, want 2 and 1", c.LoginsByUser[portal.ErinUsername], c.FailedLogins)
	}
}
