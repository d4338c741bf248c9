// Package testsupport holds what tests of several packages share, so that
// it is written once: waiting for a condition that other goroutines or
// processes make true. It imports no package of the project.
package testsupport

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds and fails t if it still does not after
// within. The bound only catches a hang; it measures nothing, so give it
// room (seconds), and assert timings elsewhere. cond runs on the test's
// goroutine and may have effects (a write that should fail at last).
// Inside a testing/synctest bubble the polling sleeps advance the bubble's
// clock, so a condition that depends on time is reached without waiting.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(within)
	for pause := time.Millisecond; !cond(); pause = min(2*pause, 20*time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(pause)
	}
}
