package llawp

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/agentlab/ipc"
)

// fakeTimers records the linger's timers so that a test fires them by hand.
type fakeTimers struct {
	mu     sync.Mutex
	timers []*fakeTimer
}

type fakeTimer struct {
	d       time.Duration
	f       func()
	stopped bool
}

func (ft *fakeTimers) afterFunc(d time.Duration, f func()) func() bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	t := &fakeTimer{d: d, f: f}
	ft.timers = append(ft.timers, t)
	return func() bool {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

func (ft *fakeTimers) last() *fakeTimer {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.timers[len(ft.timers)-1]
}

func (ft *fakeTimers) armed() int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	n := 0
	for _, t := range ft.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestLingerCancelledByRegister(t *testing.T) {
	var ft fakeTimers
	l := newLinger(0, ft.afterFunc)
	reg := NewRegistry(RegistryOptions{OnCount: l.SetWorkers})
	if ft.armed() != 1 || ft.last().d != DefaultLinger {
		t.Fatalf("a new LLAWP with no worker should linger %v: %d timers armed", DefaultLinger, ft.armed())
	}
	id := reg.Register(ipc.Worker{PID: 1})
	if ft.armed() != 0 {
		t.Fatal("Register left the linger armed")
	}
	reg.Unregister(id)
	if ft.armed() != 1 {
		t.Fatal("the last Unregister did not arm the linger")
	}
	stale := ft.last()
	reg.Register(ipc.Worker{PID: 2}) // within the linger
	if ft.armed() != 0 {
		t.Fatal("a Register within the linger did not cancel it")
	}
	// A timer that fired just as it was stopped must not end the LLAWP.
	stale.f()
	if closed(l.Done()) {
		t.Fatal("a cancelled linger asked to exit")
	}
}

func TestLingerFiresAfterLastUnregister(t *testing.T) {
	var ft fakeTimers
	l := newLinger(5*time.Second, ft.afterFunc)
	reg := NewRegistry(RegistryOptions{OnCount: l.SetWorkers})
	a, b := reg.Register(ipc.Worker{PID: 1}), reg.Register(ipc.Worker{PID: 2})
	reg.Unregister(a)
	if ft.armed() != 0 {
		t.Fatal("the linger armed with a worker still registered")
	}
	reg.Unregister(b)
	if ft.armed() != 1 || ft.last().d != 5*time.Second {
		t.Fatal("the last Unregister did not arm the linger")
	}
	ft.last().f()
	if !closed(l.Done()) {
		t.Fatal("the linger ran out without asking to exit")
	}
	// Once it has asked, it stays asked.
	reg.Register(ipc.Worker{PID: 3})
	if !closed(l.Done()) || l.Wait(context.Background()) != nil {
		t.Fatal("Done reopened")
	}
}

func TestLingerRealTimer(t *testing.T) {
	l := NewLinger(time.Millisecond)
	l.SetWorkers(1)
	l.SetWorkers(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Wait(ctx); err != nil {
		t.Fatalf("linger did not run out: %v", err)
	}
}

func TestLingerNegativeNeverExits(t *testing.T) {
	var ft fakeTimers
	l := newLinger(-1, ft.afterFunc)
	l.SetWorkers(0)
	if ft.armed() != 0 {
		t.Fatal("a negative linger armed a timer")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx); err == nil {
		t.Fatal("Wait returned nil without the linger running out")
	}
}

func TestLingerClose(t *testing.T) {
	var ft fakeTimers
	l := newLinger(time.Second, ft.afterFunc)
	first := ft.last()
	l.Close()
	l.SetWorkers(0)
	first.f()
	if ft.armed() != 0 || closed(l.Done()) {
		t.Fatal("a closed linger armed or fired")
	}
}
