package llawp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/tli"
)

// fakeServer answers DoManagement with one scripted reply per poll; after
// the script it answers with no command.
type fakeServer struct {
	mu      sync.Mutex
	replies []reply
	reqs    []*tlipb.DoManagementRequest
}

type reply struct {
	cmds   []*tlipb.ManagementCommand
	result tlipb.Result
	err    error
}

func (f *fakeServer) Do(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req.GetDoManagement())
	var r reply
	if len(f.reqs) <= len(f.replies) {
		r = f.replies[len(f.reqs)-1]
	}
	if r.err != nil {
		return nil, r.err
	}
	return &tlipb.Response{Result: r.result, Message: "scripted", Body: &tlipb.Response_DoManagement{
		DoManagement: &tlipb.DoManagementResponse{Commands: r.cmds},
	}}, nil
}

func (f *fakeServer) polls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

type relayed struct {
	mu     sync.Mutex
	events []ipc.ManagementEvent
}

func (r *relayed) relay(ev ipc.ManagementEvent) (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return 1, 0
}

func (r *relayed) got() []ipc.ManagementEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ipc.ManagementEvent(nil), r.events...)
}

func TestPollerRelaysInOrderAndRetries(t *testing.T) {
	srv := &fakeServer{replies: []reply{
		// A Policy Server at its connection limit closes the LLAWP's new
		// socket before its hello: the log names that as the likely cause.
		{err: fmt.Errorf("pool: no connection to any policy server: %w", tli.ErrClosedBeforeHello)},
		{cmds: []*tlipb.ManagementCommand{
			{Code: 194, Name: "FLUSH_ALL"},
			{Code: 196, Arg: "dir1/uid=user1,ou=People,dc=shared,dc=lab"},
		}},
		{result: tlipb.Result_FAILURE},
		{cmds: []*tlipb.ManagementCommand{{Code: 198, Name: "FLUSH_REALM", Arg: "protected"}}},
	}}
	var out relayed
	var logs, traces syncBuffer
	p := &Poller{
		Client: srv, AgentName: "wa1", Interval: time.Millisecond, Relay: out.relay,
		Log: zerolog.New(&logs), Trace: zerolog.New(&traces),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	testsupport.WaitFor(t, 10*time.Second, "every scripted poll", func() bool { return srv.polls() > len(srv.replies) })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}

	got := out.got()
	want := []struct {
		code uint32
		name string
		arg  string
	}{
		{194, "FLUSH_ALL", ""},
		{196, "FLUSH_USER", "dir1/uid=user1,ou=People,dc=shared,dc=lab"},
		{198, "FLUSH_REALM", "protected"},
	}
	if len(got) != len(want) {
		t.Fatalf("relayed %+v, want %d events", got, len(want))
	}
	for i, w := range want {
		if got[i].Code != w.code || got[i].Name != w.name || got[i].Arg != w.arg || got[i].Time.IsZero() {
			t.Errorf("event %d: %+v, want %+v", i, got[i], w)
		}
	}
	for i, r := range srv.reqs {
		if r.GetAgentName() != "wa1" || r.GetCommand() != "GET_AGENT_COMMANDS" {
			t.Errorf("request %d: %v", i, r)
		}
	}
	st := p.Stats()
	if st.Failed != 2 || st.Relayed != 3 || st.Polls < 4 || st.LastPoll.IsZero() {
		t.Errorf("stats %+v: want 2 failed polls, 3 relayed", st)
	}
	if l := logs.String(); !strings.Contains(l, "no connection to any policy server") || !strings.Contains(l, "FAILURE") ||
		!strings.Contains(l, "Management command FLUSH_USER (196) relayed") ||
		!strings.Contains(l, "Likely cause: the Policy Server refused the new connection: it is likely at its connection limit") {
		t.Errorf("agent log:\n%s", l)
	}
	if tr := traces.String(); strings.Count(tr, "DoManagement GET_AGENT_COMMANDS") < 4 {
		t.Errorf("trace log has not every poll:\n%s", tr)
	}
}

func TestPollerFirstPollAtOnce(t *testing.T) {
	srv := &fakeServer{}
	p := &Poller{Client: srv, AgentName: "wa1", Interval: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	testsupport.WaitFor(t, 10*time.Second, "the first poll", func() bool { return srv.polls() == 1 })
	cancel()
	<-done
	if st := p.Stats(); st.Polls != 1 || st.Failed != 0 || st.LastError != "" {
		t.Errorf("stats %+v", st)
	}
}

func TestPollerBadInterval(t *testing.T) {
	if err := (&Poller{Client: &fakeServer{}}).Run(context.Background()); err == nil {
		t.Fatal("Run with no interval did not fail")
	}
}

// syncBuffer is the shared one (the HLA's tests use it too).
type syncBuffer = testsupport.Buffer
