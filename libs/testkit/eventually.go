package testkit

import (
	"testing"
	"time"
)

// Poll intervals of Eventually: the first check is immediate, then the wait doubles
// from pollFirst up to pollMax, so a condition that holds quickly is seen quickly and
// one that takes seconds costs a few RPCs a second, not hundreds.
const (
	pollFirst = 10 * time.Millisecond
	pollMax   = 250 * time.Millisecond
)

// Eventually polls cond until it reports true, and fails the test if it has not within
// timeout, or if the test's context ends first. cond returns whether the condition
// holds and, when it does not, what it saw instead (for the failure message; the last
// one is reported). A cond that calls a service folds a transient error into its
// message and returns false, so the poll goes on.
//
// Eventually replaces time.Sleep as synchronisation: wait for the thing itself, not for
// "long enough". Like tb.Fatal it must be called from the test's own goroutine.
func Eventually(tb testing.TB, timeout time.Duration, cond func() (ok bool, why string)) {
	tb.Helper()
	if why, ok := poll(tb, timeout, cond); !ok {
		tb.Fatalf("condition not met within %s: %s", timeout, why)
	}
}

// poll runs cond until it holds (ok), timeout passes or tb's context ends, and returns
// cond's last message. It is Eventually without the failure, for testing Eventually.
func poll(tb testing.TB, timeout time.Duration, cond func() (bool, string)) (string, bool) {
	ctx := tb.Context()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	wait := pollFirst
	for {
		ok, why := cond()
		if ok {
			return "", true
		}
		select {
		case <-deadline.C:
			return why, false
		case <-ctx.Done():
			return why + " (test context ended: " + ctx.Err().Error() + ")", false
		case <-time.After(wait):
		}
		wait = min(2*wait, pollMax)
	}
}
