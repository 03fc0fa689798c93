package store_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/libs/bus"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/testkit"
	"github.com/latchkey/latchkey/services/scheduler/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LibraryGoroutines()...) }

func newStore(t testing.TB) *store.Store {
	t.Helper()
	_, _, js := testkit.NATS(t)
	kv, err := js.KeyValue(t.Context(), bus.BucketRuns)
	if err != nil {
		t.Fatal(err)
	}
	return store.New(kv)
}

func record(id string) *schedulerv1.RunRecord {
	return &schedulerv1.RunRecord{Run: &latchkeyv1.Run{Id: id, ProjectId: "acme", State: latchkeyv1.RunState_RUN_STATE_QUEUED}}
}

func TestConcurrentUpdatesAllLand(t *testing.T) {
	s := newStore(t)
	if err := s.Create(t.Context(), record("run-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(t.Context(), record("run-1")); err == nil {
		t.Fatal("a run was created twice")
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := s.Update(t.Context(), "acme", "run-1", func(r *schedulerv1.RunRecord) error {
				r.CheckAttempts++
				return nil
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	rec, _, err := s.Get(t.Context(), "acme", "run-1")
	if err != nil || rec.GetCheckAttempts() != 20 {
		t.Fatalf("after 20 concurrent increments: %d, %v", rec.GetCheckAttempts(), err)
	}
	if _, _, err := s.Get(t.Context(), "acme", "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing run: %v", err)
	}
}

func TestIdempotencyKeyNamesTheFirstRun(t *testing.T) {
	s := newStore(t)
	id, fresh, err := s.ClaimIdempotencyKey(t.Context(), "acme", "order-42", "run-a")
	if err != nil || !fresh || id != "run-a" {
		t.Fatalf("first claim: %q %v %v", id, fresh, err)
	}
	id, fresh, err = s.ClaimIdempotencyKey(t.Context(), "acme", "order-42", "run-b")
	if err != nil || fresh || id != "run-a" {
		t.Fatalf("second claim: %q %v %v", id, fresh, err)
	}
	// Another project has its own keys.
	if _, fresh, _ := s.ClaimIdempotencyKey(t.Context(), "other", "order-42", "run-c"); !fresh {
		t.Fatal("idempotency keys leak across projects")
	}
}

func TestEachWaiterIsTakenOnce(t *testing.T) {
	s := newStore(t)
	for _, r := range []string{"run-1", "run-2", "run-3"} {
		if err := s.AddWaiter(t.Context(), "acme", "sess", r); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			runs, err := s.TakeWaiters(t.Context(), "acme", "sess")
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			for _, r := range runs {
				seen[r]++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(seen) != 3 {
		t.Fatalf("waiters taken: %v", seen)
	}
	for r, n := range seen {
		if n != 1 {
			t.Errorf("%s taken %d times", r, n)
		}
	}
}

func TestKeysListNewestFirst(t *testing.T) {
	s := newStore(t)
	for _, id := range []string{"run-a", "run-c", "run-b"} {
		if err := s.Create(t.Context(), record(id)); err != nil {
			t.Fatal(err)
		}
	}
	ids, err := s.Keys(t.Context(), "acme")
	if err != nil || len(ids) != 3 || ids[0] != "run-c" || ids[2] != "run-a" {
		t.Fatalf("keys = %v, %v", ids, err)
	}
}

// fill creates n Run records in project, every tenth of them still running.
func fill(tb testing.TB, s *store.Store, project string, n int) (active []string) {
	tb.Helper()
	for i := range n {
		rec := record(fmt.Sprintf("run-%05d", i))
		rec.Run.ProjectId = project
		rec.Stage = schedulerv1.Stage_STAGE_DONE
		if i%10 == 0 {
			rec.Stage = schedulerv1.Stage_STAGE_DISPATCHED
			active = append(active, rec.GetRun().GetId())
		}
		if err := s.Create(tb.Context(), rec); err != nil {
			tb.Fatal(err)
		}
	}
	return active
}

// TestAllActiveFindsEveryUnfinishedRun: the recovery sweep sees exactly the Runs
// that have not ended, across projects.
func TestAllActiveFindsEveryUnfinishedRun(t *testing.T) {
	s := newStore(t)
	if err := s.AllActive(t.Context(), func(*schedulerv1.RunRecord) { t.Error("a Run in an empty store") }); err != nil {
		t.Fatalf("empty store: %v", err)
	}
	want := append(fill(t, s, "acme", 50), fill(t, s, "other", 30)...)
	var got []string
	if err := s.AllActive(t.Context(), func(r *schedulerv1.RunRecord) { got = append(got, r.GetRun().GetId()) }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("active runs = %v, want %v", got, want)
	}
}

// BenchmarkAllActive times one recovery sweep over 5,000 records, 500 of them active.
func BenchmarkAllActive(b *testing.B) {
	s := newStore(b)
	fill(b, s, "acme", 5000)
	for b.Loop() {
		n := 0
		if err := s.AllActive(b.Context(), func(*schedulerv1.RunRecord) { n++ }); err != nil || n != 500 {
			b.Fatalf("%d active, %v", n, err)
		}
	}
}
