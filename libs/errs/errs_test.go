package errs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestStatusMapsEveryKind(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.code.String(), func(t *testing.T) {
			t.Parallel()
			err := Status(t.Context(), nil, "test", "/m", fmt.Errorf("doing it: %w", New(k.kind, "fix %s", "this")))
			st := status.Convert(err)
			if st.Code() != k.code || st.Message() != "fix this" {
				t.Fatalf("got %s %q, want %s %q", st.Code(), st.Message(), k.code, "fix this")
			}
		})
	}
}

func TestInternalErrorsAreGenericAndLogged(t *testing.T) {
	t.Parallel()
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	err := Status(t.Context(), log, "session registry", "/m", errors.New("kv: disk on fire"))
	st := status.Convert(err)
	if st.Code() != codes.Internal || strings.Contains(st.Message(), "disk") || !strings.Contains(st.Message(), "session registry") {
		t.Fatalf("got %s %q", st.Code(), st.Message())
	}
	if !strings.Contains(logged.String(), "disk on fire") {
		t.Fatalf("the internal error was not logged: %q", logged.String())
	}
	if c := status.Code(Status(t.Context(), nil, "x", "/m", fmt.Errorf("w: %w", context.Canceled))); c != codes.Canceled {
		t.Fatalf("canceled caller got %s", c)
	}
}

// A reason and a detail survive the trip server → status → client.
func TestReasonAndDetailRoundTrip(t *testing.T) {
	t.Parallel()
	sent := New(ErrPrecondition, "session s1 is EXPIRED").
		WithReason("AUTH_SESSION_EXPIRED", map[string]string{"auth_session_id": "s1"}).
		WithDetail(wrapperspb.String("current"))
	wire := Status(t.Context(), nil, "x", "/m", sent)
	got := FromStatus(wire)
	if !errors.Is(got, ErrPrecondition) || !HasReason(got, "AUTH_SESSION_EXPIRED") {
		t.Fatalf("kind or reason lost: %v", got)
	}
	var e *Error
	if !errors.As(got, &e) || e.msg != "session s1 is EXPIRED" || e.meta["auth_session_id"] != "s1" {
		t.Fatalf("message or metadata lost: %#v", e)
	}
	if d, ok := e.Detail().(*wrapperspb.StringValue); !ok || d.GetValue() != "current" {
		t.Fatalf("detail lost: %v", e.Detail())
	}
	if status.Code(got) != codes.FailedPrecondition {
		t.Fatalf("the client error no longer reads as a status: %s", status.Code(got))
	}
}

// Another service's refusal is not passed on as ours: only Unavailable is, because the
// caller may retry it; the rest is internal.
func TestRemoteErrorsAreNotRelayed(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	notFound := FromStatus(status.Error(codes.NotFound, "bundle not found"))
	if !errors.Is(notFound, ErrNotFound) {
		t.Fatalf("FromStatus lost the kind: %v", notFound)
	}
	if c := status.Code(Status(t.Context(), log, "scheduler", "/m", fmt.Errorf("reading: %w", notFound))); c != codes.Internal {
		t.Fatalf("a relayed remote NotFound answered %s, want Internal", c)
	}
	unavailable := FromStatus(status.Error(codes.Unavailable, "connection refused"))
	if c := status.Code(Status(t.Context(), log, "scheduler", "/m", unavailable)); c != codes.Unavailable {
		t.Fatalf("a remote Unavailable answered %s", c)
	}
	// Wrapped in the service's own Error, the refusal is the service's to explain.
	own := New(ErrNotFound, "no API named x").WithCause(notFound)
	if st := status.Convert(Status(t.Context(), log, "scheduler", "/m", own)); st.Code() != codes.NotFound || st.Message() != "no API named x" {
		t.Fatalf("got %s %q", st.Code(), st.Message())
	}
	if !errors.Is(own, ErrNotFound) {
		t.Fatal("WithCause hid the kind")
	}
}

func TestFromStatusLeavesOtherErrors(t *testing.T) {
	t.Parallel()
	plain := errors.New("plain")
	if FromStatus(plain) != plain || FromStatus(nil) != nil {
		t.Fatal("FromStatus changed a non-status error")
	}
	internal := status.Error(codes.Internal, "boom")
	if got := FromStatus(internal); IsUser(got) {
		t.Fatalf("an Internal status became a user error: %v", got)
	}
	if got := FromStatus(status.Error(codes.DeadlineExceeded, "slow")); !errors.Is(got, context.DeadlineExceeded) || status.Code(got) != codes.DeadlineExceeded {
		t.Fatalf("DeadlineExceeded: %v (%s)", got, status.Code(got))
	}
	if got := FromStatus(status.Error(codes.Canceled, "gone")); !errors.Is(got, context.Canceled) || status.Code(got) != codes.Canceled {
		t.Fatalf("Canceled: %v (%s)", got, status.Code(got))
	}
}

// A status a handler built by hand passes the server interceptor unchanged.
func TestServerInterceptorPassesStatuses(t *testing.T) {
	t.Parallel()
	built := status.Error(codes.AlreadyExists, "by hand")
	if got := serverError(t.Context(), nil, "x", "/m", built); got != built {
		t.Fatalf("got %v", got)
	}
	if c := status.Code(serverError(t.Context(), nil, "x", "/m", New(ErrStale, "lost the race"))); c != codes.Aborted {
		t.Fatalf("got %s", c)
	}
}

// A failure SetTransient recognises answers Unavailable, which clients retry, not
// Internal (libs/bus registers NATS JetStream's; TestTransientJetStreamErrors).
func TestTransientErrorsAreUnavailable(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	passing := errors.New("leader election")
	SetTransient(func(err error) bool { return errors.Is(err, passing) })
	t.Cleanup(func() { SetTransient(func(error) bool { return false }) })
	if c := status.Code(Status(t.Context(), log, "session registry", "/m", fmt.Errorf("reading: %w", passing))); c != codes.Unavailable {
		t.Errorf("a passing failure answered %s, want Unavailable", c)
	}
	if c := status.Code(Status(t.Context(), log, "session registry", "/m", errors.New("broken"))); c != codes.Internal {
		t.Errorf("another failure answered %s, want Internal", c)
	}
}
