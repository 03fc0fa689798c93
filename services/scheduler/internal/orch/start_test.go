package orch

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/latchkey/latchkey/libs/errs"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
)

// TestStartRefuses: Start's own rules — the request's limits, the session, the
// deployed API, who may start AuthSession Runs. A refused Run stores nothing and
// publishes nothing.
func TestStartRefuses(t *testing.T) {
	t.Parallel()
	with := func(f func(*latchkeyv1.StartRunRequest)) *latchkeyv1.StartRunRequest {
		req := apiRequest(nil)
		f(req)
		return req
	}
	opts := func(o *latchkeyv1.RunOptions) *latchkeyv1.StartRunRequest { return apiRequest(o) }
	cases := []struct {
		name     string
		req      *latchkeyv1.StartRunRequest
		setup    func(h *harness)
		internal bool
		runID    string  // the id the caller names, if any
		want     []error // every one must match with errors.Is
	}{
		{"no api", with(func(r *latchkeyv1.StartRunRequest) { r.Api = "" }), nil, false, "", []error{errs.ErrInvalid}},
		{"check_attempts too high", opts(&latchkeyv1.RunOptions{CheckAttempts: proto.Int32(MaxCheckAttempts + 1)}), nil, false, "", []error{errs.ErrInvalid}},
		{"negative check_attempts", opts(&latchkeyv1.RunOptions{CheckAttempts: proto.Int32(-1)}), nil, false, "", []error{errs.ErrInvalid}},
		{"create_attempts too high", opts(&latchkeyv1.RunOptions{CreateAttempts: proto.Int32(MaxCreateAttempts + 1)}), nil, false, "", []error{errs.ErrInvalid}},
		{"retries too high", opts(&latchkeyv1.RunOptions{Retries: MaxRetries + 1}), nil, false, "", []error{errs.ErrInvalid}},
		{"zero timeout", opts(&latchkeyv1.RunOptions{Timeout: durationpb.New(0)}), nil, false, "", []error{errs.ErrInvalid}},
		{"timeout too long", opts(&latchkeyv1.RunOptions{Timeout: durationpb.New(MaxTimeout + time.Second)}), nil, false, "", []error{errs.ErrInvalid}},
		{"negative validation_freshness", opts(&latchkeyv1.RunOptions{ValidationFreshness: durationpb.New(-time.Second)}), nil, false, "", []error{errs.ErrInvalid}},
		{"idempotency key too long", with(func(r *latchkeyv1.StartRunRequest) { r.IdempotencyKey = strings.Repeat("k", MaxIdempotencyKey+1) }), nil, false, "", []error{errs.ErrInvalid}},
		{"credentials without a session", with(func(r *latchkeyv1.StartRunRequest) {
			r.AuthSessionId, r.Credentials = "", map[string]string{"password": "x"}
		}), nil, false, "", []error{errs.ErrInvalid}},
		{"credentials for a CREDENTIALS session", with(func(r *latchkeyv1.StartRunRequest) { r.Credentials = map[string]string{"password": "x"} }), nil, false, "", []error{errs.ErrInvalid}},
		{"a kind StartRun does not start", with(func(r *latchkeyv1.StartRunRequest) { r.Kind = latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_VALIDATE }), nil, true, "", []error{errs.ErrInvalid}},
		{"a run id that is no subject token", apiRequest(nil), nil, false, "run.with.dots", []error{errs.ErrInvalid}},
		{"unknown session", with(func(r *latchkeyv1.StartRunRequest) { r.AuthSessionId = "nope" }), nil, false, "", []error{ErrSessionNotFound, errs.ErrNotFound}},
		{"nothing deployed", apiRequest(nil), func(h *harness) { h.reg.bundle = nil }, false, "", []error{ErrNoBundle, errs.ErrPrecondition}},
		{"unknown API", with(func(r *latchkeyv1.StartRunRequest) { r.Api = "list-orders" }), nil, false, "", []error{ErrAPINotFound, errs.ErrNotFound}},
		{"AUTHSESSION_CREATE from a public caller", &latchkeyv1.StartRunRequest{Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE, Api: recipe.CreateAPI, AuthSessionId: sessID}, nil, false, "", []error{errs.ErrDenied}},
		{"AUTHSESSION_UPDATE from a public caller", &latchkeyv1.StartRunRequest{Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE, Api: recipe.CreateAPI, AuthSessionId: sessID}, nil, false, "", []error{errs.ErrDenied}},
		{"AUTHSESSION_RECORD from a public caller", &latchkeyv1.StartRunRequest{Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD, Api: recipe.CheckAPI, AuthSessionId: sessID}, nil, false, "", []error{errs.ErrDenied}},
		{"an AuthSession Run without a session", &latchkeyv1.StartRunRequest{Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE, Api: recipe.CreateAPI}, nil, true, "", []error{errs.ErrInvalid}},
	}
	// Refusals change nothing, so the rows share one harness (a row with its own setup
	// gets its own), and each checks that nothing at all was stored or published.
	shared := newHarness(t)
	shared.reg.add(sessID, typeCredentials, sessReady)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := shared
			if tc.setup != nil {
				h = newHarness(t)
				h.reg.add(sessID, typeCredentials, sessReady)
				tc.setup(h)
			}
			run, err := h.o.Start(t.Context(), testProject, tc.req, StartOptions{Internal: tc.internal, RunID: tc.runID})
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("Start = %v, %v; want an error that is %v", run, err, want)
				}
			}
			if !errs.IsUser(err) {
				t.Errorf("Start's refusal %v is not a user error", err)
			}
			if ids, err := h.o.Store.Keys(t.Context(), testProject); err != nil || len(ids) != 0 {
				t.Errorf("runs stored for a refused request: %v, %v", ids, err)
			}
			if n := h.published(t); n != 0 {
				t.Errorf("%d tasks published for a refused request", n)
			}
		})
	}
}

// TestIdempotencyKeyStartsOneRun: the same idempotency key returns the same Run and
// publishes one task; another key starts another Run.
func TestIdempotencyKeyStartsOneRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.add(sessID, typeCredentials, sessReady)
	req := apiRequest(nil)
	req.IdempotencyKey = "order-42"
	first := h.start(req)
	again := h.start(proto.Clone(req).(*latchkeyv1.StartRunRequest))
	if again.GetId() != first.GetId() || again.GetIdempotencyKey() != "order-42" {
		t.Fatalf("the same key started %s, then %s", first.GetId(), again.GetId())
	}
	task := h.takeTask(taskAPI)
	if task.GetRunId() != first.GetId() {
		t.Fatalf("task for %s, want %s", task.GetRunId(), first.GetId())
	}

	req.IdempotencyKey = "order-43"
	if other := h.start(req); other.GetId() == first.GetId() {
		t.Fatal("another key returned the same Run")
	}
	h.takeTask(taskAPI)
	if ids, _ := h.o.Store.Keys(t.Context(), testProject); len(ids) != 4 { // two Runs, each with its VALIDATE child
		t.Errorf("runs stored: %v, want two API Runs and their checks", ids)
	}
}

// TestIdempotencyKeyClaimedButNeverStored: a StartRun that claimed its key and died
// (or whose store's answer was lost) before storing the Run must not block the key
// for good. The NATS intake's retry, which names the same run id, goes on at once;
// another caller waits out IdempotencyOrphanAfter, then takes the key over.
func TestIdempotencyKeyClaimedButNeverStored(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, claimedBy string
		orphanAfter     time.Duration
		wantRefused     bool
	}{
		{"the same run id retries", "run-intake", time.Hour, false},
		{"another caller, claim too young", "run-dead", time.Hour, true},
		{"another caller, orphaned claim", "run-dead", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(p *Policy) { p.IdempotencyOrphanAfter = tc.orphanAfter })
			h.reg.add(sessID, typeCredentials, sessReady)
			if _, fresh, err := h.o.Store.ClaimIdempotencyKey(t.Context(), testProject, "order-7", tc.claimedBy); err != nil || !fresh {
				t.Fatalf("claim: %v %v", fresh, err)
			}
			req := apiRequest(nil)
			req.IdempotencyKey = "order-7"
			run, err := h.o.Start(t.Context(), testProject, req, StartOptions{RunID: "run-intake"})
			if tc.wantRefused {
				if !errors.Is(err, errs.ErrUnavailable) {
					t.Fatalf("Start: %v, want Unavailable while the claim may still be stored", err)
				}
				h.noTasks()
				return
			}
			if err != nil || run.GetId() != "run-intake" {
				t.Fatalf("Start = %v, %v; want run-intake started", run.GetId(), err)
			}
			h.takeTask(taskAPI)
			if again, err := h.o.Start(t.Context(), testProject, req, StartOptions{}); err != nil || again.GetId() != "run-intake" {
				t.Fatalf("the key afterwards: %v %v, want run-intake", again.GetId(), err)
			}
		})
	}
}
