package pool

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/trace"
)

// A request that gets no answer within RequestTimeout is sent again on a
// new connection (DOMAIN.md section 9), MaxResends times at most; each
// timed-out socket is reset with the trace saying why (Event.Timeout), and
// each resend's Request event carries its try (Event.Resend).
func TestResendOnNewConnection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		holds     int64 // the server holds the first holds IsProtected
		wantTries int   // requests the server saw
		want      tlipb.Result
		wantErr   error
	}{
		{name: "answered on the first resend", holds: 1, wantTries: 2, want: tlipb.Result_YES},
		{name: "answered on the last resend", holds: MaxResends, wantTries: MaxResends + 1, want: tlipb.Result_YES},
		{name: "never answered", holds: 100, wantTries: MaxResends + 1, wantErr: ErrTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			var seen atomic.Int64
			f := l.fakeServer("smps1.shared.lab", func(req *tlipb.Request) verdict {
				if req.GetIsProtected() == nil || seen.Add(1) > tt.holds {
					return answer
				}
				return hold
			})
			hco := hcoFor(true, f.ep)
			hco.RequestTimeout = conf.Seconds(300 * time.Millisecond)
			cfg, tb := l.config(hco)
			p, _ := l.start(cfg)

			resp, err := p.Do(context.Background(), isProtected("/x"))
			f.release()
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) || Result(err) != tlipb.Result_TIMEOUT {
					t.Fatalf("got %v %v, want %v", resp, err, tt.wantErr)
				}
			case err != nil || resp.GetResult() != tt.want:
				t.Fatalf("got %v %v, want %s", resp, err, tt.want)
			}

			evs := tb.events(t)
			var conns []string
			var resends []int
			for _, e := range evs {
				if e.Op == trace.OpRequest && e.Request == trace.ReqIsProtected {
					conns = append(conns, e.Conn)
					resends = append(resends, e.Resend)
				}
			}
			if len(conns) != tt.wantTries {
				t.Fatalf("IsProtected sent %d times (%v), want %d", len(conns), conns, tt.wantTries)
			}
			for i := range resends {
				if resends[i] != i {
					t.Errorf("Request events' Resend %v, want 0, 1, ...", resends)
					break
				}
			}
			if c := slices.Compact(slices.Sorted(slices.Values(conns))); len(c) != len(conns) {
				t.Errorf("resends went over connections %v, want a new one each time", conns)
			}
			// Every socket that timed out is reset by the agent, and its
			// TCP Reset says after what; a socket that answered is not.
			timedOut := tt.wantTries
			if tt.wantErr == nil {
				timedOut--
			}
			for i, conn := range conns {
				var to *trace.RequestTimeout
				for _, e := range connEvents(evs, conn, trace.OpReset) {
					if !e.Peer {
						to = e.Timeout
					}
				}
				if i >= timedOut {
					if to != nil {
						t.Errorf("socket %s answered, yet reset as timed out", conn)
					}
					continue
				}
				if to == nil || *to != (trace.RequestTimeout{After: 300 * time.Millisecond, Request: trace.ReqIsProtected}) {
					t.Errorf("socket %s: reset with timeout %+v, want 300ms IsProtected", conn, to)
				}
			}
			st := p.Stats()
			if st.Resends != int64(tt.wantTries-1) {
				t.Errorf("Stats.Resends %d, want %d", st.Resends, tt.wantTries-1)
			}
			wantResult := tt.want.String()
			if tt.wantErr != nil {
				wantResult = tlipb.Result_TIMEOUT.String()
			}
			if got := st.Calls[CallResult{Call: trace.ReqIsProtected, Result: wantResult}]; got != 1 {
				t.Errorf("Stats.Calls %v, want one IsProtected %s", st.Calls, wantResult)
			}
		})
	}
}

// A Login written to a socket that times out is not sent again: it may
// have opened a session.
func TestLoginTimeoutNotResent(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := l.fakeServer("smps1.shared.lab", func(req *tlipb.Request) verdict {
		if req.GetLogin() != nil {
			return hold
		}
		return answer
	})
	hco := hcoFor(true, f.ep)
	hco.RequestTimeout = conf.Seconds(300 * time.Millisecond)
	cfg, _ := l.config(hco)
	p, _ := l.start(cfg)
	before := f.requests.Load()
	_, err := p.Do(context.Background(), login())
	f.release()
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Login: %v, want ErrTimeout", err)
	}
	if got := f.requests.Load() - before; got != 1 {
		t.Errorf("the server saw %d Logins, want 1", got)
	}
	if st := p.Stats(); st.Resends != 0 {
		t.Errorf("Stats.Resends %d, want 0", st.Resends)
	}
}
