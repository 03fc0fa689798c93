package e2e

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
)

// TestRevokedKeyStopsAtOnceInOtherProcesses revokes an API key that a scheduler in
// another process has just accepted (and cached for 30 s): the scheduler refuses it
// within seconds, because it watches the registry's key records.
func TestRevokedKeyStopsAtOnceInOtherProcesses(t *testing.T) {
	t.Parallel()
	w := newSplitWorld(t)
	projects := latchkeyv1.NewProjectServiceClient(w.core.Dial(t, w.core.AdminKey))
	created, err := projects.CreateApiKey(t.Context(), &latchkeyv1.CreateApiKeyRequest{ProjectId: "acme", Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	runs := latchkeyv1.NewRunServiceClient(w.sched.Dial(t, created.GetApiKeySecret()))
	if _, err := runs.ListRuns(t.Context(), &latchkeyv1.ListRunsRequest{}); err != nil {
		t.Fatalf("ListRuns with a fresh key: %v", err)
	}
	if _, err := projects.RevokeApiKey(t.Context(), &latchkeyv1.RevokeApiKeyRequest{ProjectId: "acme", ApiKeyId: created.GetApiKey().GetId()}); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	testkit.Eventually(t, 10*time.Second, func() (bool, string) {
		_, err := runs.ListRuns(t.Context(), &latchkeyv1.ListRunsRequest{})
		return status.Code(err) == codes.Unauthenticated,
			fmt.Sprintf("the scheduler still accepts a revoked key (its cache keeps answers 30 s): %v", err)
	})
	t.Logf("refused %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	// The project's other key still works.
	if _, err := w.runs.ListRuns(t.Context(), &latchkeyv1.ListRunsRequest{}); err != nil {
		t.Fatalf("the project's other key: %v", err)
	}
}
