package testkit

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	t.Parallel()
	calls := 0
	Eventually(t, 5*time.Second, func() (bool, string) {
		calls++
		return calls == 3, "calls=" + strconv.Itoa(calls)
	})
	if calls != 3 {
		t.Errorf("cond called %d times, want 3 (it held on the third)", calls)
	}
}

func TestPollGivesUpWithTheLastMessage(t *testing.T) {
	t.Parallel()
	calls := 0
	start := time.Now()
	why, ok := poll(t, 100*time.Millisecond, func() (bool, string) {
		calls++
		return false, "seen " + strconv.Itoa(calls)
	})
	if ok {
		t.Fatal("poll reported a condition that never held")
	}
	if elapsed := time.Since(start); elapsed < 100*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("poll gave up after %s, want about 100ms", elapsed)
	}
	if want := "seen " + strconv.Itoa(calls); why != want || calls < 2 {
		t.Errorf("poll reported %q after %d calls, want %q", why, calls, want)
	}
}

func TestPollStopsWhenTheTestContextEnds(t *testing.T) {
	t.Parallel()
	start := time.Now()
	why, ok := poll(endedTB{t}, time.Minute, func() (bool, string) { return false, "never" })
	if ok || !strings.Contains(why, "test context ended") || time.Since(start) > 10*time.Second {
		t.Errorf("poll on an ended context: ok=%v why=%q after %s", ok, why, time.Since(start))
	}
}

// endedTB is a test whose context has already ended.
type endedTB struct{ testing.TB }

func (endedTB) Context() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
