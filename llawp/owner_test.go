package llawp

import (
	"context"
	"errors"
	"sync/atomic"
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
