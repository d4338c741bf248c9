// Package backoff is the one wait between tries that agentlab's
// supervisors use: a worker, an LLAWP or a child that died is started
// again after Min, then after twice as long each time it dies again soon,
// up to Max; one that ran long enough first starts the count over. It
// imports nothing of the project, so that any package can use it.
package backoff

import (
	"context"
	"time"
)

// Backoff is a doubling delay. The zero Backoff waits 0 each time; set Min
// and Max. It is not safe for concurrent use: one supervisor loop owns it.
type Backoff struct {
	// Min is the first delay, and the one after Reset.
	Min time.Duration
	// Max caps the doubling.
	Max time.Duration
	// Stable is how long a try must have run for its failure to count as
	// a first one again (Failed resets first); 0 means Max: a process
	// that outlived the longest wait was not failing in a loop.
	Stable time.Duration

	next time.Duration // 0: Min
}

// Next is the delay before the next try; each call doubles the one after
// it, up to Max.
func (b *Backoff) Next() time.Duration {
	d := b.next
	if d <= 0 {
		d = b.Min
	}
	b.next = min(2*d, b.Max)
	return d
}

// Reset makes the next delay Min again.
func (b *Backoff) Reset() { b.next = 0 }

// Failed is Next for a try that ran for ran before it failed: Min again
// after a try that ran longer than Stable.
func (b *Backoff) Failed(ran time.Duration) time.Duration {
	stable := b.Stable
	if stable <= 0 {
		stable = b.Max
	}
	if ran > stable {
		b.Reset()
	}
	return b.Next()
}

// Wait waits d, or until ctx ends; it returns ctx's error if ctx ended
// first, so that a supervisor stops rather than starts anything.
func Wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
