package testsupport

import (
	"sync/atomic"
	"testing"
	"time"
)

// fakeT records a Fatalf instead of ending the test, so that WaitFor's
// failure can be checked.
type fakeT struct {
	testing.TB
	failed atomic.Bool
	msg    string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed.Store(true)
	f.msg = format
	// Fatalf must not return; end this goroutine as testing does.
	panic(f)
}

func TestWaitFor(t *testing.T) {
	tests := []struct {
		name     string
		trueAt   int // cond holds from this call on; 0: never
		within   time.Duration
		wantFail bool
	}{
		{"at once", 1, time.Second, false},
		{"after a few polls", 5, time.Second, false},
		{"never", 0, 30 * time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ft := &fakeT{TB: t}
			calls := 0
			func() {
				defer func() {
					if r := recover(); r != nil && r != ft {
						panic(r)
					}
				}()
				WaitFor(ft, tt.within, "the condition", func() bool {
					calls++
					return tt.trueAt > 0 && calls >= tt.trueAt
				})
			}()
			if ft.failed.Load() != tt.wantFail {
				t.Errorf("failed = %v, want %v (%d calls)", ft.failed.Load(), tt.wantFail, calls)
			}
			if !tt.wantFail && calls != tt.trueAt {
				t.Errorf("cond called %d times, want %d: WaitFor must stop at the first true", calls, tt.trueAt)
			}
		})
	}
}
