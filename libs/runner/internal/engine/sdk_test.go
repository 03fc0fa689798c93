package engine

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/libs/bus"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestCheckFirst runs the session's check in the API's context first: VALID runs the
// API (the portal's list-invoices), INVALID answers NEEDS_AUTH without running it.
func TestCheckFirst(t *testing.T) {
	t.Parallel()
	for _, expired := range []bool{false, true} {
		t.Run(map[bool]string{false: "valid", true: "expired"}[expired], func(t *testing.T) {
			t.Parallel()
			p, base := portaltest.Start(t, portal.Config{})
			b := newTestBackend(t, portalBundle(t))
			b.vars[project+"/s1"] = map[string]string{"baseURL": base}
			b.putState(t, project, "s1", 1, loggedInState(t, base, portal.User{Username: "alice", Password: portal.AlicePassword}))
			if expired {
				p.ExpireSessions()
			}
			r := newTestRunner(t, Config{}, b, Deps{})
			tk := task(runnerv1.TaskKind_TASK_KIND_API, "list-invoices", project, "s1", 1, nil)
			tk.CheckFirst, tk.CheckRunId = true, "check-run"
			before := p.Counters().Requests
			res := r.Execute(t.Context(), tk)
			if expired {
				if res.GetStatus() != statusNeedsAuth || res.GetCheckOutcome() != outcomeInvalid || res.GetOutput() != nil {
					t.Fatalf("%s %s output %v, want NEEDS_AUTH INVALID and no output", res.GetStatus(), res.GetCheckOutcome(), res.GetOutput())
				}
				if got := p.Counters().Requests - before; got != 1 {
					t.Errorf("%d portal requests, want only the check's", got)
				}
				return
			}
			if res.GetStatus() != statusSucceeded || res.GetCheckOutcome() != outcomeValid {
				t.Fatalf("%s %s: %s", res.GetStatus(), res.GetCheckOutcome(), res.GetFailureMessage())
			}
			out := res.GetOutput().GetStructValue().GetFields()
			rows := out["invoices"].GetListValue().GetValues()
			if len(rows) != 5 || out["account"].GetStringValue() != "alice" {
				t.Fatalf("output %v, want alice's 5 invoices", out)
			}
			if got := rows[0].GetStructValue().GetFields()["number"].GetStringValue(); got != portal.InvoicesFor("alice")[0].Number {
				t.Errorf("first invoice %q", got)
			}
		})
	}
}

// TestGoHandlers: a runner built with the SDK runs registered Go handlers with the
// task's chromedp context: a create that reports wrong credentials, a check that says
// logged out, and an API that returns a value.
func TestGoHandlers(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{})
	b := newTestBackend(t, nil)
	b.secrets[project+"/session-s1"] = map[string]string{"username": "alice", "password": "wrong"}
	r := newTestRunner(t, Config{}, b, Deps{})
	r.Handle(recipe.CreateAPI, func(ctx context.Context, t *sdk.Task) (any, error) {
		if t.Credentials["password"] != portal.AlicePassword {
			return nil, sdk.InvalidCredentials("the portal rejected the password")
		}
		return nil, nil
	})
	r.Handle(recipe.CheckAPI, func(ctx context.Context, t *sdk.Task) (any, error) { return nil, sdk.ErrLoggedOut })
	r.Handle("title", func(ctx context.Context, t *sdk.Task) (any, error) {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/login")); err != nil {
			return nil, err
		}
		title, err := chromedp.Run(ctx, chromedp.Title())
		return map[string]any{"title": title, "who": t.Params["who"]}, err
	})
	r.Handle("panics", func(context.Context, *sdk.Task) (any, error) { panic("boom") })

	create := task(runnerv1.TaskKind_TASK_KIND_CREATE, recipe.CreateAPI, project, "s1", 0, nil)
	create.Credentials = &runnerv1.CredentialsRef{Source: &runnerv1.CredentialsRef_SecretId{SecretId: "session-s1"}}
	if res := r.Execute(t.Context(), create); res.GetFailureReason() != sdk.ReasonByName("INVALID_CREDENTIALS") {
		t.Errorf("create: %s %s", res.GetStatus(), res.GetFailureReason())
	}
	if res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_CHECK, recipe.CheckAPI, project, "s1", 0, nil)); res.GetCheckOutcome() != outcomeInvalid {
		t.Errorf("check: %s", res.GetCheckOutcome())
	}
	res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "title", project, "", 0, map[string]any{"who": "me"}))
	if out := res.GetOutput().GetStructValue().GetFields(); res.GetStatus() != statusSucceeded || out["title"].GetStringValue() == "" || out["who"].GetStringValue() != "me" {
		t.Errorf("title: %s %v %s", res.GetStatus(), res.GetOutput(), res.GetFailureMessage())
	}
	if res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "panics", project, "", 0, nil)); res.GetFailureReason() != reasonScript || !strings.Contains(res.GetFailureMessage(), "panicked") {
		t.Errorf("panics: %s %s", res.GetFailureReason(), res.GetFailureMessage())
	}
}

// TestFailedStepScreenshot: a failed step stores a screenshot in LK_ARTIFACTS, linked
// from the result, with metadata that names the step and no value.
func TestFailedStepScreenshot(t *testing.T) {
	t.Parallel()
	_, _, js := testkit.NATS(t)
	b := newTestBackend(t, []recipe.File{{Path: "f.yaml", Content: []byte(`
apis:
  fails:
    steps:
      - goto: "data:text/html,<input id=secret value=hunter2>"
      - waitVisible: { selector: "#never", timeout: 300ms }
`)}})
	r := newTestRunner(t, Config{}, b, Deps{JS: js})
	res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "fails", project, "", 0, nil))
	if res.GetFailureReason() != reasonTimeout || res.GetFailedStep().GetIndex() != 1 || res.GetFailedStep().GetSelector() != "#never" {
		t.Fatalf("%s %v: %s", res.GetFailureReason(), res.GetFailedStep(), res.GetFailureMessage())
	}
	store, err := js.ObjectStore(t.Context(), bus.ObjectArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	info, err := store.GetInfo(ctx, res.GetArtifactId())
	if err != nil {
		t.Fatalf("artifact %q: %v", res.GetArtifactId(), err)
	}
	if info.Size == 0 || strings.Contains(info.Description, "hunter2") || !strings.Contains(info.Description, "failed step 1") {
		t.Errorf("artifact %+v", info.ObjectMeta)
	}
	if _, err := store.GetInfo(ctx, "missing"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("sanity: %v", err)
	}
}
