package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/latchkey/latchkey/libs/bus"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
)

func (e *env) audit(t testing.TB, req *vaultv1.ListAuditEventsRequest) *vaultv1.ListAuditEventsResponse {
	t.Helper()
	r, err := e.ListAuditEvents(t.Context(), req)
	if err != nil {
		t.Fatalf("ListAuditEvents: %v", err)
	}
	return r
}

func TestEveryDecryptIsAudited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.put(t, "acme", "session-s1", map[string]string{"password": "pw"})
	blob := cctx("acme", "storage_state", "s1")
	ct := e.encrypt(t, blob, []byte("state")).GetCiphertext()
	before := time.Now()

	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(t.Context(), "run")
	defer span.End()
	reason := &vaultv1.AccessReason{Purpose: "recreate", RunId: "run-1"}
	if _, err := e.GetSecret(caller(ctx, "latchkey-scheduler"), &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "session-s1", Reason: reason}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Decrypt(caller(ctx, "latchkey-browser-runner"), &vaultv1.DecryptRequest{Context: blob, Ciphertext: ct, Reason: &vaultv1.AccessReason{Purpose: "run:run-1", RunId: "run-1"}}); err != nil {
		t.Fatal(err)
	}
	// Accesses that release nothing are not audit events.
	_, err := e.GetSecret(caller(ctx, "x"), &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "missing"})
	wantCode(t, err, codes.NotFound)
	_, err = e.Decrypt(caller(ctx, "x"), &vaultv1.DecryptRequest{Context: cctx("acme", "storage_state", "s2"), Ciphertext: ct})
	wantCode(t, err, codes.InvalidArgument)

	got := e.audit(t, &vaultv1.ListAuditEventsRequest{ProjectId: "acme"})
	want := []*vaultv1.AuditEvent{
		{ProjectId: "acme", Kind: "secret", ResourceId: "session-s1", Caller: "latchkey-scheduler", Reason: reason, KeyVersion: 1},
		{ProjectId: "acme", Kind: "storage_state", ResourceId: "s1", Caller: "latchkey-browser-runner", Reason: &vaultv1.AccessReason{Purpose: "run:run-1", RunId: "run-1"}, KeyVersion: 1},
	}
	if diff := cmp.Diff(want, got.GetEvents(), protocmp.Transform(), protocmp.IgnoreFields(&vaultv1.AuditEvent{}, "time")); diff != "" {
		t.Fatalf("audit events (-want +got):\n%s", diff)
	}
	for _, ev := range got.GetEvents() {
		if at := ev.GetTime().AsTime(); at.Before(before.Add(-time.Second)) || at.After(time.Now()) {
			t.Errorf("event time %v is not the time of the access", at)
		}
	}
	if got.GetNextPageToken() != "" {
		t.Errorf("next page token %q at the end", got.GetNextPageToken())
	}

	// The events carry the caller's trace context, so they join the Run's trace.
	stream, err := e.js.Stream(t.Context(), bus.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(t.Context(), "lk.audit.acme")
	if err != nil {
		t.Fatal(err)
	}
	if tp := msg.Header.Get("traceparent"); !strings.Contains(tp, span.SpanContext().TraceID().String()) {
		t.Errorf("traceparent %q is not of the caller's trace %s", tp, span.SpanContext().TraceID())
	}
	if msg.Header.Get(bus.HeaderMsgID) == "" {
		t.Error("no Nats-Msg-Id on the audit event")
	}
}

func TestAuditEventsPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cts := map[string][]byte{}
	for _, id := range []string{"a", "b"} {
		cts[id] = e.encrypt(t, cctx("acme", "storage_state", id), []byte(id)).GetCiphertext()
	}
	for i := range 25 {
		id := []string{"a", "b"}[i%2]
		_, err := e.Decrypt(caller(t.Context(), "svc"), &vaultv1.DecryptRequest{
			Context: cctx("acme", "storage_state", id), Ciphertext: cts[id], Reason: &vaultv1.AccessReason{Purpose: fmt.Sprint(i)},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	e.encrypt(t, cctx("globex", "storage_state", "a"), []byte("other project"))

	cases := []struct {
		name     string
		resource string
		size     int32
		pages    []int
	}{
		{"all in pages of 10", "", 10, []int{10, 10, 5}},
		{"default page size", "", 0, []int{25}},
		{"exact fit", "", 25, []int{25}},
		{"one resource", "a", 5, []int{5, 5, 3}},
		{"unknown resource", "zzz", 5, []int{0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var purposes []string
			token := ""
			for i, want := range tc.pages {
				r := e.audit(t, &vaultv1.ListAuditEventsRequest{ProjectId: "acme", ResourceId: tc.resource, PageSize: tc.size, PageToken: token})
				if len(r.GetEvents()) != want {
					t.Fatalf("page %d has %d events, want %d", i, len(r.GetEvents()), want)
				}
				for _, ev := range r.GetEvents() {
					if tc.resource != "" && ev.GetResourceId() != tc.resource {
						t.Fatalf("filter %q returned %q", tc.resource, ev.GetResourceId())
					}
					purposes = append(purposes, ev.GetReason().GetPurpose())
				}
				token = r.GetNextPageToken()
				if last := i == len(tc.pages)-1; last != (token == "") {
					t.Fatalf("page %d: next token %q", i, token)
				}
			}
			// Oldest first, no event twice.
			for i := 1; i < len(purposes); i++ {
				var a, b int
				fmt.Sscan(purposes[i-1], &a)
				fmt.Sscan(purposes[i], &b)
				if b <= a {
					t.Fatalf("events out of order: %v", purposes)
				}
			}
		})
	}
	if r := e.audit(t, &vaultv1.ListAuditEventsRequest{ProjectId: "initech"}); len(r.GetEvents()) != 0 || r.GetNextPageToken() != "" {
		t.Fatalf("a project with no events: %v", r)
	}
}

func TestNothingIsReleasedWithoutAnAuditRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.put(t, "acme", "login", map[string]string{"password": "pw"})
	c := cctx("acme", "storage_state", "s1")
	ct := e.encrypt(t, c, []byte("state")).GetCiphertext()
	if err := e.js.DeleteStream(t.Context(), bus.StreamAudit); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	r, err := e.GetSecret(caller(ctx, "svc"), &vaultv1.GetSecretRequest{ProjectId: "acme", SecretId: "login"})
	wantCode(t, err, codes.Unavailable)
	if r != nil {
		t.Fatal("fields released without an audit record")
	}
	d, err := e.Decrypt(caller(ctx, "svc"), &vaultv1.DecryptRequest{Context: c, Ciphertext: ct})
	wantCode(t, err, codes.Unavailable)
	if d != nil {
		t.Fatal("plaintext released without an audit record")
	}
}
