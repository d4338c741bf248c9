package llawp

import (
	"context"
	"sync"
	"time"
)

// DefaultLinger is how long an IIS LLAWP stays up with no worker left, so
// that a quick application pool recycle finds it still there.
const DefaultLinger = 20 * time.Second

// Linger asks the LLAWP to exit once it has had no registered worker for
// its delay. It starts armed: an LLAWP that no worker ever joins leaves too.
type Linger struct {
	delay time.Duration

	mu   sync.Mutex
	gen  uint64 // bumped by every change, so a timer that fires late is ignored
	stop func() bool
	over bool // expired or closed: nothing arms it again
	done chan struct{}
}

// NewLinger lingers for delay; 0 means DefaultLinger, a negative delay
// never asks to exit.
// Its tests run in a testing/synctest bubble, where the timer runs on the
// bubble's virtual clock.
func NewLinger(delay time.Duration) *Linger {
	if delay == 0 {
		delay = DefaultLinger
	}
	l := &Linger{delay: delay, done: make(chan struct{})}
	l.SetWorkers(0)
	return l
}

// Delay is the linger time in use.
func (l *Linger) Delay() time.Duration { return l.delay }

// SetWorkers is told the number of registered workers: 0 arms the linger,
// anything else disarms it.
func (l *Linger) SetWorkers(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.over {
		return
	}
	l.gen++
	if l.stop != nil {
		l.stop()
		l.stop = nil
	}
	if n > 0 || l.delay < 0 {
		return
	}
	gen := l.gen
	l.stop = time.AfterFunc(l.delay, func() { l.expire(gen) }).Stop
}

// armed says whether a timer is running, for tests.
func (l *Linger) armed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stop != nil
}

func (l *Linger) expire(gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.over || gen != l.gen {
		return
	}
	l.over = true
	l.stop = nil
	close(l.done)
}

// Done is closed when the linger has run out.
func (l *Linger) Done() <-chan struct{} { return l.done }

// Wait returns nil when the linger runs out, or ctx's error.
func (l *Linger) Wait(ctx context.Context) error {
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close disarms the linger for good.
func (l *Linger) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.over = true
	if l.stop != nil {
		l.stop()
		l.stop = nil
	}
}
