package llawp

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentlab/agentlab/ipc"
)

// The linger's tests run in synctest bubbles: its timer is a real
// time.AfterFunc on the bubble's virtual clock, so a test waits out 20 s by
// sleeping them, at no cost, and synctest.Wait lets a fired timer finish.

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// after sleeps d of virtual time and lets whatever it woke finish.
func after(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func TestLingerCancelledByRegister(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLinger(0)
		defer l.Close()
		reg := NewRegistry(RegistryOptions{OnCount: l.SetWorkers})
		if !l.armed() || l.Delay() != DefaultLinger {
			t.Fatalf("a new LLAWP with no worker should linger %v: armed %v, delay %v", DefaultLinger, l.armed(), l.Delay())
		}
		after(DefaultLinger - time.Second)
		id := reg.Register(ipc.Worker{PID: 1})
		if l.armed() {
			t.Fatal("Register left the linger armed")
		}
		after(time.Hour)
		if closed(l.Done()) {
			t.Fatal("the LLAWP asked to exit with a worker registered")
		}
		reg.Unregister(id)
		if !l.armed() {
			t.Fatal("the last Unregister did not arm the linger")
		}
		l.mu.Lock()
		stale := l.gen // the generation of the timer just armed
		l.mu.Unlock()
		after(DefaultLinger / 2)
		reg.Register(ipc.Worker{PID: 2}) // within the linger
		if l.armed() {
			t.Fatal("a Register within the linger did not cancel it")
		}
		after(DefaultLinger)
		if closed(l.Done()) {
			t.Fatal("a cancelled linger asked to exit")
		}
		// A timer that fired just as it was stopped must not end the LLAWP.
		l.expire(stale)
		if closed(l.Done()) {
			t.Fatal("a stale timer asked to exit")
		}
	})
}

func TestLingerFiresAfterLastUnregister(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLinger(5 * time.Second)
		reg := NewRegistry(RegistryOptions{OnCount: l.SetWorkers})
		a, b := reg.Register(ipc.Worker{PID: 1}), reg.Register(ipc.Worker{PID: 2})
		reg.Unregister(a)
		if l.armed() {
			t.Fatal("the linger armed with a worker still registered")
		}
		reg.Unregister(b)
		start := time.Now()
		if !l.armed() {
			t.Fatal("the last Unregister did not arm the linger")
		}
		after(5*time.Second - time.Nanosecond)
		if closed(l.Done()) {
			t.Fatal("the linger ran out early")
		}
		if err := l.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited != 5*time.Second {
			t.Errorf("the linger ran out after %v, want 5s", waited)
		}
		// Once it has asked, it stays asked.
		reg.Register(ipc.Worker{PID: 3})
		if !closed(l.Done()) || l.Wait(context.Background()) != nil || l.armed() {
			t.Fatal("Done reopened")
		}
	})
}

func TestLingerNegativeNeverExits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLinger(-1)
		l.SetWorkers(0)
		if l.armed() {
			t.Fatal("a negative linger armed a timer")
		}
		ctx, cancel := context.WithTimeout(t.Context(), 24*time.Hour)
		defer cancel()
		if err := l.Wait(ctx); err == nil {
			t.Fatal("Wait returned nil without the linger running out")
		}
	})
}

func TestLingerClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLinger(time.Second)
		l.Close()
		l.SetWorkers(0)
		after(time.Hour)
		if l.armed() || closed(l.Done()) {
			t.Fatal("a closed linger armed or fired")
		}
	})
}
