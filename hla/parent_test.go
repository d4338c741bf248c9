package hla

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func TestRestarts(t *testing.T) {
	type after struct {
		slot int
		d    time.Duration
	}
	// firing is C firing: when (since the start), and the slots due then.
	type firing struct {
		at    time.Duration
		slots []int
	}
	tests := []struct {
		name   string
		afters []after
		want   []firing
	}{
		{"none waits: C never fires", nil, nil},
		{"one slot", []after{{0, time.Second}}, []firing{{time.Second, []int{0}}}},
		{"the first due fires first, slots due together come in slot order",
			[]after{{2, 3 * time.Second}, {1, time.Second}, {0, 3 * time.Second}},
			[]firing{{time.Second, []int{1}}, {3 * time.Second, []int{0, 2}}}},
		{"a slot scheduled again takes its new time", []after{{0, time.Second}, {0, 5 * time.Second}},
			[]firing{{5 * time.Second, []int{0}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var r restarts
				defer r.stop()
				start := time.Now()
				for _, a := range tt.afters {
					r.after(a.slot, a.d)
				}
				for _, w := range tt.want {
					<-r.C()
					if at := time.Since(start); at != w.at {
						t.Errorf("fired at %v, want %v", at, w.at)
					}
					if got := r.due(); !slices.Equal(got, w.slots) {
						t.Errorf("due at %v: %v, want %v", w.at, got, w.slots)
					}
				}
				if r.C() != nil {
					t.Errorf("C is armed with %v still waiting", r.at)
				}
			})
		})
	}
}
