package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/trace"
)

// poll is the health poll of the tests that want one: often, so that a
// recovery is found at once, yet each test waits for it by its effect.
const poll = 10 * time.Millisecond

func authorize(i int) *tlipb.Request {
	return &tlipb.Request{Body: &tlipb.Request_Authorize{Authorize: &tlipb.AuthorizeRequest{
		AgentName: "wa1", SessionToken: "stale", Resource: fmt.Sprintf("/protected/%d", i), Action: "GET"}}}
}

func doManagement() *tlipb.Request {
	return &tlipb.Request{Body: &tlipb.Request_DoManagement{DoManagement: &tlipb.DoManagementRequest{AgentName: "wa1", Command: "GET_AGENT_COMMANDS"}}}
}

func login() *tlipb.Request {
	return &tlipb.Request{Body: &tlipb.Request_Login{Login: &tlipb.LoginRequest{
		AgentName: "wa1", Realm: "realm.protected", User: "user1", Password: "Passw0rd1"}}}
}

// hasNote tells whether notes holds one that starts with prefix and ends
// with suffix.
func hasNote(notes []string, prefix, suffix string) bool {
	return slices.ContainsFunc(notes, func(n string) bool { return strings.HasPrefix(n, prefix) && strings.HasSuffix(n, suffix) })
}

// EnableFailover=yes, the primary killed under load: every retry-safe
// request still gets its answer, from the backup, and the trace tells the
// learner why the traffic moved.
func TestPrimaryKilledUnderLoad(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ps1 := l.realServer("smps1.shared.lab")
	ps2 := l.realServer("smps2.shared.lab")
	cfg, tb := l.config(hcoFor(true, ps1.ep, ps2.ep))
	p, _ := l.start(cfg)
	if got := states(p); !slices.Equal(got, []State{Active, Inactive}) {
		t.Fatalf("states at start %v, want [Active Inactive]", got)
	}

	// Callers go on until the primary is killed, then send some more each.
	const callers, after = 6, 20
	var killed atomic.Bool
	var sent, failed atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			for i, left := 0, after; left > 0; i++ {
				if killed.Load() {
					left--
				}
				var req *tlipb.Request
				switch (g + i) % 3 {
				case 0:
					req = isProtected(fmt.Sprintf("/protected/%d/%d", g, i))
				case 1:
					req = authorize(i)
				default:
					req = doManagement()
				}
				sent.Add(1)
				if _, err := p.Do(context.Background(), req); err != nil {
					failed.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
				}
			}
		})
	}
	testsupport.WaitFor(t, wait, "smps1 to answer some of the traffic", func() bool { return ps1.requests() >= 30 })
	if err := ps1.stop(); err != nil {
		t.Fatal(err)
	}
	killed.Store(true)
	wg.Wait()

	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed, want none; the first: %v", n, sent.Load(), firstErr)
	}
	if ps2.requests() < callers*after {
		t.Errorf("smps2 answered %d requests, want at least the %d sent after the kill", ps2.requests(), callers*after)
	}
	if got := states(p); !slices.Equal(got, []State{Failed, Active}) {
		t.Errorf("states after the kill %v, want [Failed Active]", got)
	}
	notes := stateNotes(tb.events(t))
	a1, a2 := ps1.ep.addr(), ps2.ep.addr()
	want := []string{
		a1 + " Active: up at start; new requests go to " + a1 + ", the first server up in HCO order",
		a2 + " Inactive: up at start; new requests go to " + a1 + ", the first server up in HCO order",
	}
	if len(notes) < 4 || !slices.Equal(notes[:2], want) || !strings.HasPrefix(notes[2], a1+" Active -> Failed: ") ||
		notes[3] != a2+" Inactive -> Active: new requests go to "+a2+", the first server up in HCO order" {
		t.Errorf("state notes:\n %s\nwant the start's two, then %s Active -> Failed, then %s Inactive -> Active", strings.Join(notes, "\n "), a1, a2)
	}
}

// holdAgentRequests answers the HCO phase and holds everything after it:
// a server that stopped answering without closing its sockets.
func holdAgentRequests(req *tlipb.Request) verdict {
	switch req.GetBody().(type) {
	case *tlipb.Request_SetAgentInfo, *tlipb.Request_GetAgentConfig:
		return answer
	}
	return hold
}

// A server that does not answer within RequestTimeout is Failed and the
// request goes to the next one, unless it is a Login: that one was written,
// and may have opened a session on the silent server.
func TestRequestTimeoutFailsOver(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		req     *tlipb.Request
		retried bool
		want    tlipb.Result
	}{
		{"IsProtected", isProtected("/protected/"), true, tlipb.Result_YES},
		{"Authorize", authorize(1), true, tlipb.Result_CHALLENGE},
		{"DoManagement", doManagement(), true, tlipb.Result_SUCCESS},
		{"Login is not sent twice", login(), false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			f := l.fakeServer("smps1.shared.lab", holdAgentRequests)
			ps2 := l.realServer("smps2.shared.lab")
			hco := hcoFor(true, f.ep, ps2.ep)
			hco.RequestTimeout = conf.Seconds(time.Second)
			cfg, tb := l.config(hco)
			p, _ := l.start(cfg)

			resp, err := p.Do(context.Background(), tt.req)
			if got := states(p); !slices.Equal(got, []State{Failed, Active}) {
				t.Errorf("states %v, want [Failed Active]", got)
			}
			if !hasNote(stateNotes(tb.events(t)), f.ep.addr()+" Active -> Failed: no answer within RequestTimeout 1s", "") {
				t.Errorf("no state note says why smps1 failed: %q", stateNotes(tb.events(t)))
			}
			if !tt.retried {
				if !errors.Is(err, ErrTimeout) || Result(err) != tlipb.Result_TIMEOUT {
					t.Fatalf("got %v %v, want ErrTimeout", resp, err)
				}
				if ps2.requests() != 0 {
					t.Errorf("smps2 got %d requests, want none", ps2.requests())
				}
				return
			}
			if err != nil || resp.Result != tt.want {
				t.Fatalf("got %v %v, want %s from smps2", resp, err, tt.want)
			}
			if ps2.requests() != 1 {
				t.Errorf("smps2 got %d requests, want 1", ps2.requests())
			}
		})
	}
}

// A Login finds the server it would go to stopped (its idle sockets closed
// by the server): it has not been written, so it goes to the next server.
func TestLoginOnAStoppedServerGoesElsewhere(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ps1 := l.realServer("smps1.shared.lab")
	ps2 := l.realServer("smps2.shared.lab")
	cfg, tb := l.config(hcoFor(true, ps1.ep, ps2.ep))
	p, _ := l.start(cfg)
	if err := ps1.stop(); err != nil {
		t.Fatal(err)
	}
	s := p.servers[0]
	testsupport.WaitFor(t, wait, "the agent to see smps1's FIN on socket 1", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return peerGone(s.socks[0].c.Conn().Conn) != nil
	})

	resp, err := p.Do(context.Background(), login())
	if err != nil || resp.Result != tlipb.Result_SUCCESS || resp.GetLogin().GetSessionToken() == "" {
		t.Fatalf("Login: %v %v, want SUCCESS from smps2", resp, err)
	}
	if ps2.requests() != 1 {
		t.Errorf("smps2 answered %d requests, want the Login", ps2.requests())
	}
	if got := states(p); !slices.Equal(got, []State{Failed, Active}) {
		t.Errorf("states %v, want [Failed Active]", got)
	}
	want := ps1.ep.addr() + " Active -> Failed: socket 1 was closed by the server while idle: EOF"
	if !slices.Contains(stateNotes(tb.events(t)), want) {
		t.Errorf("state notes %q, want %q", stateNotes(tb.events(t)), want)
	}
	// Nothing of the Login went over the dead socket.
	for _, e := range tb.events(t) {
		if e.Op == trace.OpRequest && e.Request == trace.ReqLogin && e.RemoteHost != "smps2.shared.lab" {
			t.Errorf("Login sent to %s: %+v", e.RemoteHost, e)
		}
	}
}

// A server down at start is Disabled; the health poll finds it when it
// comes up, and with EnableFailover=yes it takes the new requests back.
// The backup's sockets stay open, idle.
func TestDisabledAtStartRecoveredByHealthPoll(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	down := l.down("smps1.shared.lab")
	ps2 := l.realServer("smps2.shared.lab")
	cfg, tb := l.config(hcoFor(true, down, ps2.ep))
	cfg.HealthPollInterval = poll
	p, _ := l.start(cfg)
	if got := states(p); !slices.Equal(got, []State{Disabled, Active}) {
		t.Fatalf("states at start %v, want [Disabled Active]", got)
	}
	if _, err := p.Do(context.Background(), isProtected("/")); err != nil || ps2.requests() != 3 {
		t.Fatalf("request while smps1 is down: %v; smps2 answered %d, want 3 (start's 2 and this)", err, ps2.requests())
	}
	backup := p.Stats().Servers[1].Sockets

	ps1 := l.serveReal(down, nil)
	// The trace tells a change a moment after Stats shows it.
	testsupport.WaitFor(t, wait, "the health poll to find smps1, and the trace to tell it", func() bool {
		return p.Stats().Servers[0].State == Active && len(stateNotes(tb.events(t))) == 4
	})
	if got := states(p); !slices.Equal(got, []State{Active, Inactive}) {
		t.Errorf("states after the recovery %v, want [Active Inactive]", got)
	}
	for range 3 {
		if _, err := p.Do(context.Background(), isProtected("/")); err != nil {
			t.Fatal(err)
		}
	}
	if ps1.requests() != 3 || ps2.requests() != 3 {
		t.Errorf("smps1 answered %d and smps2 %d after the recovery, want 3 and still 3", ps1.requests(), ps2.requests())
	}
	if got := p.Stats().Servers[1].Sockets; !slices.Equal(got, backup) {
		t.Errorf("smps2's sockets %+v after the recovery, want them open as before: %+v", got, backup)
	}

	notes := stateNotes(tb.events(t))
	a1, a2 := down.addr(), ps2.ep.addr()
	if len(notes) != 4 ||
		!strings.HasPrefix(notes[0], a1+" Disabled: down at start: ") ||
		notes[1] != a2+" Active: up at start; new requests go to "+a2+", the first server up in HCO order" ||
		!hasNote(notes[2:3], a1+" Disabled -> Active: socket ", " connected (health poll)") ||
		notes[3] != a2+" Active -> Inactive: new requests go to "+a1+", the first server up in HCO order" {
		t.Errorf("state notes:\n %s", strings.Join(notes, "\n "))
	}
}

// EnableFailover=yes: the primary fails, then comes back; the health poll
// finds it, new requests go to it again, and the sockets to the backup
// stay open (TCP Disconnect on none of them).
func TestRecoveryMovesNewRequestsBack(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ps1 := l.realServer("smps1.shared.lab")
	ps2 := l.realServer("smps2.shared.lab")
	cfg, tb := l.config(hcoFor(true, ps1.ep, ps2.ep))
	cfg.HealthPollInterval = poll
	p, _ := l.start(cfg)

	if err := ps1.stop(); err != nil {
		t.Fatal(err)
	}
	// The poll or the request finds smps1 gone, whichever comes first.
	if _, err := p.Do(context.Background(), isProtected("/")); err != nil || ps2.requests() != 1 {
		t.Fatalf("request after the kill: %v; smps2 answered %d, want 1", err, ps2.requests())
	}
	if got := states(p); !slices.Equal(got, []State{Failed, Active}) {
		t.Fatalf("states after the kill %v, want [Failed Active]", got)
	}
	var backup []string
	for _, k := range p.Stats().Servers[1].Sockets {
		backup = append(backup, k.ConnID)
	}

	ps1b := l.serveReal(ps1.ep, nil)
	testsupport.WaitFor(t, wait, "the health poll to find smps1 back, and the trace to tell it", func() bool {
		return p.Stats().Servers[0].State == Active && len(stateNotes(tb.events(t))) == 6
	})
	for range 4 {
		if _, err := p.Do(context.Background(), isProtected("/")); err != nil {
			t.Fatal(err)
		}
	}
	if ps1b.requests() != 4 || ps2.requests() != 1 {
		t.Errorf("after the recovery smps1 answered %d, smps2 %d; want 4 and still 1", ps1b.requests(), ps2.requests())
	}
	if got := states(p); !slices.Equal(got, []State{Active, Inactive}) {
		t.Errorf("states after the recovery %v, want [Active Inactive]", got)
	}
	evs := tb.events(t)
	for _, c := range backup {
		if d := connEvents(evs, c, trace.OpDisconnect, trace.OpReset); len(d) != 0 {
			t.Errorf("socket %s to smps2 ended at the recovery: %+v", c, d)
		}
	}

	notes := stateNotes(evs)
	a1, a2 := ps1.ep.addr(), ps2.ep.addr()
	if len(notes) != 6 ||
		!strings.HasPrefix(notes[2], a1+" Active -> Failed: ") ||
		notes[3] != a2+" Inactive -> Active: new requests go to "+a2+", the first server up in HCO order" ||
		!hasNote(notes[4:5], a1+" Failed -> Active: socket ", " connected (health poll)") ||
		notes[5] != a2+" Active -> Inactive: new requests go to "+a1+", the first server up in HCO order" {
		t.Errorf("state notes:\n %s", strings.Join(notes, "\n "))
	}
}

// EnableFailover=no spreads requests evenly over the servers that are up.
func TestRoundRobinSpread(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		up       []bool
		requests int
		want     []int64
	}{
		{"three up", []bool{true, true, true}, 9, []int64{3, 3, 3}},
		{"the middle one down", []bool{true, false, true}, 10, []int64{5, 0, 5}},
		{"the first one down", []bool{false, true, true}, 10, []int64{0, 5, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			var eps []endpoint
			servers := make([]*realPS, len(tt.up))
			for i, up := range tt.up {
				name := fmt.Sprintf("smps%d.shared.lab", i+1)
				if !up {
					eps = append(eps, l.down(name))
					continue
				}
				servers[i] = l.realServer(name)
				eps = append(eps, servers[i].ep)
			}
			cfg, _ := l.config(hcoFor(false, eps...))
			p, _ := l.start(cfg)
			before := make([]int64, len(servers))
			for i, s := range servers {
				if s != nil {
					before[i] = s.requests()
				}
			}
			for i := range tt.requests {
				if _, err := p.Do(context.Background(), isProtected(fmt.Sprintf("/page/%d", i))); err != nil {
					t.Fatal(err)
				}
			}
			got := make([]int64, len(servers))
			for i, s := range servers {
				if s != nil {
					got[i] = s.requests() - before[i]
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("servers answered %v, want %v", got, tt.want)
			}
			for i, st := range p.Stats().Servers {
				if want := map[bool]State{true: Active, false: Disabled}[tt.up[i]]; st.State != want {
					t.Errorf("server %d is %s, want %s", i+1, st.State, want)
				}
			}
		})
	}
}

// Clusters: cluster 1 takes the requests while it has enough servers up;
// one down puts it below FailoverThreshold and cluster 2 takes over, with
// no request lost; back up, cluster 1 takes them back.
func TestClustersFailOverBelowThreshold(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ps1 := l.realServer("smps1.shared.lab")
	ps2 := l.realServer("smps2.shared.lab")
	ps3 := l.realServer("smps3.shared.lab")
	hco := hcoFor(true)
	hco.FailoverThreshold = 60 // of 2: ceil(1.2) = 2, both
	hco.Clusters = [][]conf.PolicyServer{{ps1.ep.ps(), ps2.ep.ps()}, {ps3.ep.ps()}}
	cfg, tb := l.config(hco)
	cfg.HealthPollInterval = poll
	p, _ := l.start(cfg)
	if got := states(p); !slices.Equal(got, []State{Active, Active, Inactive}) {
		t.Fatalf("states at start %v, want [Active Active Inactive]", got)
	}
	if st := p.Stats().Servers; st[0].Cluster != 1 || st[1].Cluster != 1 || st[2].Cluster != 2 {
		t.Errorf("clusters %d %d %d, want 1 1 2", st[0].Cluster, st[1].Cluster, st[2].Cluster)
	}
	do := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := p.Do(context.Background(), isProtected(fmt.Sprintf("/page/%d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	do(6)
	if n := ps1.requests() + ps2.requests(); n != 8 || ps3.requests() != 0 {
		t.Errorf("cluster 1 answered %d (want start's 2 and 6), smps3 %d (want 0)", n, ps3.requests())
	}

	if err := ps2.stop(); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, wait, "cluster 2 in use", func() bool { return slices.Equal(states(p), []State{Inactive, Failed, Active}) })
	before1 := ps1.requests()
	do(5)
	if ps3.requests() != 5 || ps1.requests() != before1 {
		t.Errorf("below the threshold smps3 answered %d (want 5), smps1 %d more (want 0)", ps3.requests(), ps1.requests()-before1)
	}

	ps2b := l.serveReal(ps2.ep, nil)
	testsupport.WaitFor(t, wait, "cluster 1 in use again", func() bool { return slices.Equal(states(p), []State{Active, Active, Inactive}) })
	do(4)
	if n := ps1.requests() - before1 + ps2b.requests(); n != 4 || ps3.requests() != 5 {
		t.Errorf("back above the threshold cluster 1 answered %d (want 4), smps3 %d (want still 5)", n, ps3.requests())
	}
	notes := stateNotes(tb.events(t))
	want := "cluster 2 in use (1 of 1 up, FailoverThreshold 60% needs 1); cluster 1 has 1 of 2 up; new requests go to the fastest, now " + ps3.ep.addr()
	if !slices.Contains(notes, ps3.ep.addr()+" Inactive -> Active: "+want) {
		t.Errorf("state notes:\n %s\nwant one with %q", strings.Join(notes, "\n "), want)
	}
}

// Inside the cluster in use, the fastest server gets the requests.
func TestClusterPrefersTheFastestServer(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	slow := l.slowServer("smps1.shared.lab", nil, 200*time.Millisecond)
	fast := l.realServer("smps2.shared.lab")
	hco := hcoFor(true)
	hco.Clusters = [][]conf.PolicyServer{{slow.ep.ps(), fast.ep.ps()}}
	cfg, _ := l.config(hco)
	p, _ := l.start(cfg)
	// Start's SetAgentInfo and GetAgentConfig went to the first server, and
	// measured it; the second is measured by its first request.
	for i := range 10 {
		if _, err := p.Do(context.Background(), isProtected(fmt.Sprintf("/page/%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if slow.requests.Load() != 2 || fast.requests() != 10 {
		t.Errorf("the slow server answered %d (want start's 2), the fast one %d (want 10)", slow.requests.Load(), fast.requests())
	}
	st := p.Stats().Servers
	if st[0].ResponseTime < 200*time.Millisecond || st[1].ResponseTime == 0 || st[1].ResponseTime >= st[0].ResponseTime {
		t.Errorf("response times %s and %s, want the slow one at least 200ms and the fast one measured and below", st[0].ResponseTime, st[1].ResponseTime)
	}
	if got := states(p); !slices.Equal(got, []State{Active, Active}) {
		t.Errorf("states %v, want both Active: the cluster is in use", got)
	}
}
