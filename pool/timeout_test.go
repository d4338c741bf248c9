package pool

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestTryTimeouts: each try of a request is bounded by RequestTimeout or by
// the caller's earlier deadline, and its error says which, in virtual time
// (a synctest bubble): the bounds are exact, and a minute costs nothing.
// TestRequestTimeout shows the same over real sockets.
func TestTryTimeouts(t *testing.T) {
	tests := []struct {
		name      string
		limit     time.Duration // RequestTimeout
		caller    time.Duration // the caller's deadline; 0: none
		cancelAt  time.Duration // the caller cancels then; 0: never
		wantEnd   time.Duration // when the try ends
		wantOurs  bool          // the end blames the server (RequestTimeout)
		wantErr   string
		wantIs    []error
		wantNotIs []error
	}{
		{name: "RequestTimeout", limit: time.Minute, wantEnd: time.Minute, wantOurs: true,
			wantErr: "no answer within RequestTimeout 60s (socket 3)", wantIs: []error{ErrTimeout, context.DeadlineExceeded}},
		{name: "the caller's shorter deadline", limit: time.Minute, caller: 300 * time.Millisecond, wantEnd: 300 * time.Millisecond,
			wantErr: "the caller's deadline passed (socket 3)", wantIs: []error{ErrTimeout, context.DeadlineExceeded}},
		{name: "the caller's longer deadline", limit: 2 * time.Second, caller: time.Hour, wantEnd: 2 * time.Second, wantOurs: true,
			wantErr: "no answer within RequestTimeout 2s (socket 3)", wantIs: []error{ErrTimeout}},
		{name: "the caller cancels", limit: time.Minute, cancelAt: 5 * time.Second, wantEnd: 5 * time.Second,
			wantErr: "canceled by the caller (socket 3)", wantIs: []error{context.Canceled}, wantNotIs: []error{ErrTimeout}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				if tt.caller > 0 {
					ctx, cancel = context.WithTimeout(ctx, tt.caller)
					defer cancel()
				}
				if tt.cancelAt > 0 {
					time.AfterFunc(tt.cancelAt, cancel)
				}
				c := &call{ctx: ctx, req: isProtected("/x"), limit: tt.limit}
				start := time.Now()
				tr := c.begin()
				defer tr.cancel()
				time.Sleep(tt.wantEnd - time.Nanosecond)
				synctest.Wait()
				if tr.ended() {
					t.Fatalf("the try ended before %v", tt.wantEnd)
				}
				<-tr.ctx.Done()
				if got := time.Since(start); got != tt.wantEnd || !tr.ended() {
					t.Fatalf("the try ended after %v (ended() %v), want %v", got, tr.ended(), tt.wantEnd)
				}
				// While the caller still waits, only RequestTimeout lets the
				// call go on to another server.
				if got := c.timedOut(tr); got != tt.wantOurs {
					t.Errorf("timedOut = %v, want %v", got, tt.wantOurs)
				}
				err := c.endErr(tr, &server{addr: "smps1.shared.lab:44443"}, "(socket 3)", tr.ctx.Err())
				if !strings.HasPrefix(err.Error(), "pool: IsProtected GET /x to smps1.shared.lab:44443: "+tt.wantErr) {
					t.Errorf("error %q, want it to say %q", err, tt.wantErr)
				}
				for _, target := range tt.wantIs {
					if !errors.Is(err, target) {
						t.Errorf("error %q is not %v", err, target)
					}
				}
				for _, target := range tt.wantNotIs {
					if errors.Is(err, target) {
						t.Errorf("error %q is %v", err, target)
					}
				}
			})
		})
	}
}
