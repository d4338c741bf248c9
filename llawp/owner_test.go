package llawp

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestOwnerWatch(t *testing.T) {
	tests := []struct {
		name    string
		owner   int
		parents []int // getppid answers, in order; the last repeats
		cancel  bool
		want    error
	}{
		{"owner dies later", 0, []int{500, 500, 500, 1}, false, ErrOwnerGone},
		{"reparented to a subreaper", 500, []int{500, 77}, false, ErrOwnerGone},
		{"owner died before the first look", 500, []int{1}, false, ErrOwnerGone},
		{"owner alive until cancel", 500, []int{500}, true, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			getppid := func() int {
				i := int(calls.Add(1)) - 1
				return tt.parents[min(i, len(tt.parents)-1)]
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				go func() {
					for calls.Load() <= 3 {
						time.Sleep(time.Millisecond)
					}
					cancel()
				}()
			}
			err := OwnerWatch{PID: tt.owner, Interval: 1, Getppid: getppid}.Run(ctx)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Run: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestOwnerDying(t *testing.T) {
	tests := []struct {
		name    string
		owner   int
		parents []int // getppid answers, in order; the last repeats
		want    bool
	}{
		{"no owner known", 0, []int{1}, false},
		{"already reparented", 500, []int{1}, true},
		// Pdeathsig came as the forking thread ended; the rest of the
		// owner follows a few looks later.
		{"reparented a moment after", 500, []int{500, 500, 500, 1}, true},
		{"owner alive: the SIGTERM came from elsewhere", 500, []int{500}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			getppid := func() int {
				i := int(calls.Add(1)) - 1
				return tt.parents[min(i, len(tt.parents)-1)]
			}
			if got := (OwnerWatch{PID: tt.owner, Getppid: getppid}).Dying(); got != tt.want {
				t.Fatalf("Dying() = %v after %d looks, want %v", got, calls.Load(), tt.want)
			}
		})
	}
}

// TestStopOnSIGTERM: a SIGTERM ends the context, and says the owner is
// gone when it is (Pdeathsig's SIGTERM), so that the LLAWP logs why it
// leaves. The signal is this test process's own, caught by StopOnSIGTERM.
func TestStopOnSIGTERM(t *testing.T) {
	tests := []struct {
		name      string
		w         OwnerWatch
		wantOwner bool
	}{
		{"the owner lives: someone stopped the LLAWP", OwnerWatch{PID: 500, Getppid: func() int { return 500 }}, false},
		{"the owner is dying", OwnerWatch{PID: 500, Getppid: func() int { return 1 }}, true},
		{"no owner known", OwnerWatch{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, stop := StopOnSIGTERM(tt.w)
			defer stop()
			if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("SIGTERM did not end the context")
			}
			cause := context.Cause(ctx)
			if errors.Is(cause, ErrOwnerGone) != tt.wantOwner || !strings.Contains(cause.Error(), "received signal terminated") {
				t.Errorf("cause %q; want the signal, and the owner gone: %v", cause, tt.wantOwner)
			}
		})
	}
	// stop ends it with no cause of its own.
	ctx, stop := StopOnSIGTERM(OwnerWatch{})
	stop()
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
		t.Errorf("stopped: cause %v, want context.Canceled", cause)
	}
}
