package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/trace"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The HCO phase as the seed's capture shows it: two sockets to the server,
// each with its own handshake, then the ACO over the first one.
func TestStartOpensMinSocketsAndFetchesACOOverTheFirst(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ps := l.realServer("smps1.shared.lab")
	cfg, tb := l.config(hcoFor(true, ps.ep))
	p, aco := l.start(cfg)

	if got := ps.srv.Stats().Accepted.Load(); got != 2 {
		t.Errorf("server accepted %d connections, want MinSocketsPerPort = 2", got)
	}
	var hellos int
	for _, e := range ps.trace.events(t) {
		if e.Op == trace.OpHandshake && e.Handshake == trace.HandshakeClientHello && e.Note == "ClientHello trusted host "+trustedHost {
			hellos++
		}
	}
	if hellos != 2 {
		t.Errorf("server saw the trusted host in %d ClientHellos, want one per socket (2)", hellos)
	}

	want := conf.ACO{Name: "aco.wa1", DefaultAgentName: "wa1", PSPollInterval: conf.Seconds(30 * time.Second)}
	if aco.Name != want.Name || aco.DefaultAgentName != want.DefaultAgentName || aco.PSPollInterval != want.PSPollInterval ||
		aco.MaxResourceCacheSize != 0 || aco.MaxSessionCacheSize != 0 {
		t.Errorf("ACO = %+v, want name aco.wa1, agent wa1, poll 30s, caches off", aco)
	}

	evs := tb.events(t)
	var conns []string
	for _, e := range evs {
		if e.Op == trace.OpConnect {
			conns = append(conns, e.Conn)
			if e.RemoteHost != "smps1.shared.lab" || e.Phase != trace.PhaseHCO {
				t.Errorf("connect %s to %q in phase %q, want smps1.shared.lab in %q", e.Conn, e.RemoteHost, e.Phase, trace.PhaseHCO)
			}
		}
	}
	if len(conns) != 2 {
		t.Fatalf("agent connected %d times, want 2: %v", len(conns), conns)
	}
	for _, c := range conns {
		hs := connEvents(evs, c, trace.OpHandshake)
		if len(hs) == 0 || hs[0].Note != "ClientHello trusted host "+trustedHost {
			t.Errorf("connection %s: no ClientHello with the trusted host: %+v", c, hs)
		}
	}
	first := conns[0]
	var reqs []string
	for _, e := range evs {
		if e.Op == trace.OpRequest {
			reqs = append(reqs, fmt.Sprintf("%s on %s (%s)", e.Note, e.Conn, e.Phase))
		}
	}
	wantReqs := []string{
		fmt.Sprintf("SetAgentInfo wa1 on %s (hco)", first),
		fmt.Sprintf("GetAgentConfig aco.wa1 on %s (hco)", first),
	}
	if !slices.Equal(reqs, wantReqs) {
		t.Errorf("requests:\n %s\nwant\n %s", strings.Join(reqs, "\n "), strings.Join(wantReqs, "\n "))
	}

	st := p.Stats().Servers[0]
	if st.State != Active || st.Open != 2 || st.Opened != 2 || st.Busy != 0 || st.Requests != 2 {
		t.Errorf("stats %+v, want Active, 2 open, 2 opened, 2 requests", st)
	}
	if st.Sockets[0].ConnID != first {
		t.Errorf("socket 1 is connection %s, want the first one, %s", st.Sockets[0].ConnID, first)
	}

	// Traffic keeps to the oldest socket, in the phase of what it does.
	ctx := context.Background()
	resp, err := p.Do(ctx, isProtected("/protected/index.html"))
	if err != nil || resp.Result != tlipb.Result_YES || resp.GetIsProtected().GetRealm() != "realm.protected" {
		t.Fatalf("IsProtected: %v %v", resp, err)
	}
	resp, err = p.Do(ctx, &tlipb.Request{Body: &tlipb.Request_DoManagement{DoManagement: &tlipb.DoManagementRequest{AgentName: "wa1", Command: "GET_AGENT_COMMANDS"}}})
	if err != nil || resp.Result != tlipb.Result_SUCCESS {
		t.Fatalf("DoManagement: %v %v", resp, err)
	}
	var phases []string
	for _, e := range tb.events(t) {
		if e.Op == trace.OpRequest && e.Conn == first {
			phases = append(phases, e.Phase)
		}
	}
	if want := []string{trace.PhaseHCO, trace.PhaseHCO, trace.PhaseRequests, trace.PhaseManagement}; !slices.Equal(phases, want) {
		t.Errorf("phases of the requests on socket 1: %v, want %v", phases, want)
	}
	if got := ps.srv.Stats().Accepted.Load(); got != 2 {
		t.Errorf("server accepted %d connections after two requests, want still 2", got)
	}
}

// Growth: all sockets busy opens NewSocketStep more, never beyond
// MaxSocketsPerPort; then requests queue.
func TestGrowth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		concurrent  int
		wantSockets int
		wantQueued  int
	}{
		{1, 2, 0},
		{2, 2, 0},
		{3, 4, 0},
		{5, 6, 0},
		{19, 20, 0},
		{25, 20, 5},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d concurrent", tt.concurrent), func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			f := l.fakeServer("smps1.shared.lab", nil)
			cfg, tb := l.config(hcoFor(true, f.ep)) // Min 2, Step 2, Max 20
			p, _ := l.start(cfg)

			chs := make([]<-chan result, tt.concurrent)
			for i := range chs {
				chs[i] = goDo(p, context.Background(), isProtected(fmt.Sprintf("/hold/%d", i)))
			}
			inFlight := tt.concurrent - tt.wantQueued
			testsupport.WaitFor(t, wait, fmt.Sprintf("%d requests held by the server, %d queued, no socket being opened", inFlight, tt.wantQueued), func() bool {
				st := p.Stats()
				return f.held.Load() == int64(inFlight) && st.Queued == tt.wantQueued && st.Servers[0].Opening == 0
			})
			st := p.Stats().Servers[0]
			if st.Open != tt.wantSockets || st.Opened != int64(tt.wantSockets) || st.Opening != 0 {
				t.Errorf("pool: %d open, %d opened, %d opening; want %d sockets", st.Open, st.Opened, st.Opening, tt.wantSockets)
			}
			if got := f.accepted.Load(); got != int64(tt.wantSockets) {
				t.Errorf("server accepted %d connections, want %d", got, tt.wantSockets)
			}
			if st.Busy != inFlight {
				t.Errorf("%d sockets busy, want %d", st.Busy, inFlight)
			}

			f.release()
			for i, ch := range chs {
				r := get(t, ch, fmt.Sprintf("request %d", i))
				if r.err != nil || r.resp.Result != tlipb.Result_YES {
					t.Errorf("request %d: %v %v", i, r.resp, r.err)
				}
			}
			if got := f.maxConns.Load(); got > 20 {
				t.Errorf("server saw %d connections at once, more than MaxSocketsPerPort 20", got)
			}
			st = p.Stats().Servers[0]
			if st.Open != tt.wantSockets || st.Busy != 0 || st.Queued != 0 {
				t.Errorf("after the burst: %d open, %d busy, %d queued; want %d open, none busy or queued", st.Open, st.Busy, st.Queued, tt.wantSockets)
			}
			if tt.wantQueued > 0 && p.Stats().MaxQueued != tt.wantQueued {
				t.Errorf("MaxQueued %d, want %d", p.Stats().MaxQueued, tt.wantQueued)
			}
			checkSteps(t, tb.events(t), 2, tt.wantSockets)
			// The agent log tells each step as the pool takes it.
			for from := 2; from < tt.wantSockets; from += 2 {
				fields := fmt.Sprintf(`"step":%d,"from":%d,"to":%d`, from/2, from, from+2)
				msg := fmt.Sprintf(`opening 2 more (newsocketstep='2'), from %d to %d sockets."`, from, from+2)
				if !strings.Contains(l.log.String(), fields) || !strings.Contains(l.log.String(), msg) {
					t.Errorf("the agent log has no line for the step from %d to %d sockets:\n%s", from, from+2, l.log)
				}
			}
		})
	}
}

// checkSteps checks the pool's growth as the trace records it: every
// socket opened beyond MinSocketsPerPort (min) carries its step, the steps
// are numbered from 1 and go from min to last in NewSocketStep (2) batches,
// each with as many sockets as it says.
func checkSteps(t *testing.T, evs []trace.Event, min, last int) {
	t.Helper()
	var steps []trace.PoolStep
	conns := map[int]int{}
	for _, e := range evs {
		if e.Op != trace.OpConnect {
			continue
		}
		if e.PoolStep == nil {
			if e.Phase != trace.PhaseHCO {
				t.Errorf("socket %s opened in phase %s with no pool step", e.Conn, e.Phase)
			}
			continue
		}
		if conns[e.PoolStep.N] == 0 {
			steps = append(steps, *e.PoolStep)
		}
		conns[e.PoolStep.N]++
	}
	slices.SortFunc(steps, func(a, b trace.PoolStep) int { return a.N - b.N })
	from := min
	for i, st := range steps {
		if st.N != i+1 || st.From != from || st.To != from+2 || conns[st.N] != 2 || st.NewSocketStep != 2 || st.MaxSocketsPerPort != 20 {
			t.Errorf("step %d: %+v with %d sockets, want step %d from %d to %d with 2", i+1, st, conns[st.N], i+1, from, from+2)
		}
		from = st.To
	}
	if from != last {
		t.Errorf("the steps %v end at %d sockets, want %d", steps, from, last)
	}
}

// Past MaxSocketsPerPort busy sockets and MaxQueue waiting requests, the
// next request fails at once.
func TestQueueFull(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := l.fakeServer("smps1.shared.lab", nil)
	cfg, _ := l.config(hcoFor(true, f.ep))
	cfg.MaxQueue = 3
	p, _ := l.start(cfg)

	var chs []<-chan result
	for i := range 23 {
		chs = append(chs, goDo(p, context.Background(), isProtected(fmt.Sprintf("/hold/%d", i))))
	}
	testsupport.WaitFor(t, wait, "20 requests held and 3 queued", func() bool { return f.held.Load() == 20 && p.Stats().Queued == 3 })

	r := get(t, goDo(p, context.Background(), isProtected("/hold/one-too-many")), "the request beyond the queue")
	if !errors.Is(r.err, ErrQueueFull) || !errors.Is(r.err, ErrNoConnection) || Result(r.err) != tlipb.Result_NOCONNECTION {
		t.Fatalf("beyond the queue: %v, want ErrQueueFull and ErrNoConnection", r.err)
	}
	if want := fmt.Sprintf("pool: 3 requests already waiting for a socket to %s (MaxSocketsPerPort 20)", f.ep.addr()); r.err.Error() != want {
		t.Errorf("error %q, want %q", r.err, want)
	}
	if got := f.accepted.Load(); got != 20 {
		t.Errorf("server accepted %d connections, want 20", got)
	}

	f.release()
	for i, ch := range chs {
		if r := get(t, ch, fmt.Sprintf("request %d", i)); r.err != nil {
			t.Errorf("request %d: %v", i, r.err)
		}
	}
}

// RequestTimeout bounds a request; the socket is reset since a late answer
// would answer the next request, and the request is sent again on a new
// socket, MaxResends times (TestResendOnNewConnection tells them apart). A
// caller's own shorter deadline resets the socket too, but is no fault of
// the server's, and the request is not sent again.
func TestRequestTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		requestTimeout time.Duration
		callerTimeout  time.Duration
		wantFailed     bool
		wantMsg        string
		wantResets     int64
		// wantSocks are the sockets left; nil: not checked (which of the
		// resends' new sockets answered first is the scheduler's choice).
		wantSocks []int
	}{
		{"RequestTimeout", time.Second, 0, true, "no answer within RequestTimeout 1s (socket ", MaxResends + 1, nil},
		{"caller deadline", time.Minute, 300 * time.Millisecond, false, "the caller's deadline passed (socket 1 reset)", 1, []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			f := l.fakeServer("smps1.shared.lab", nil)
			hco := hcoFor(true, f.ep)
			hco.RequestTimeout = conf.Seconds(tt.requestTimeout)
			cfg, tb := l.config(hco)
			p, _ := l.start(cfg)
			first := p.Stats().Servers[0].Sockets[0].ConnID

			ctx := context.Background()
			if tt.callerTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.callerTimeout)
				defer cancel()
			}
			r := get(t, goDo(p, ctx, isProtected("/hold")), "the held request")
			if !errors.Is(r.err, ErrTimeout) || !errors.Is(r.err, context.DeadlineExceeded) || Result(r.err) != tlipb.Result_TIMEOUT {
				t.Fatalf("held request: %v, want ErrTimeout wrapping context.DeadlineExceeded", r.err)
			}
			if !strings.Contains(r.err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", r.err, tt.wantMsg)
			}

			st := p.Stats().Servers[0]
			if got := sockNums(st); tt.wantSocks != nil && !slices.Equal(got, tt.wantSocks) {
				t.Errorf("sockets left %v, want %v: socket 1 reset, no older one to close", got, tt.wantSocks)
			}
			if st.Resets != tt.wantResets || (st.State == Failed) != tt.wantFailed {
				t.Errorf("stats %+v: want %d resets, server failed: %v", st, tt.wantResets, tt.wantFailed)
			}
			if !ourReset(tb.events(t), first) {
				t.Errorf("socket 1 (%s) was not reset", first)
			}

			// The pool goes on, over the socket left and new ones.
			var chs []<-chan result
			for i := range 3 {
				chs = append(chs, goDo(p, context.Background(), isProtected(fmt.Sprintf("/ok/%d", i))))
			}
			for i, ch := range chs {
				if r := get(t, ch, "after the timeout"); r.err != nil || r.resp.Result != tlipb.Result_YES {
					t.Errorf("request %d after the timeout: %v %v", i, r.resp, r.err)
				}
			}
			if st := p.Stats().Servers[0]; st.State != Active {
				t.Errorf("server %s after answering again, want Active", st.State)
			}
			f.release()
		})
	}
}

// A request waiting in the queue is bounded by RequestTimeout too. The held
// request times out first and the server fails: the queued request then
// waits for a new socket, which the server never accepts.
func TestRequestTimeoutWhileQueued(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := l.fakeServer("smps1.shared.lab", nil)
	hco := hcoFor(true, f.ep)
	hco.MinSocketsPerPort, hco.MaxSocketsPerPort = 1, 1
	hco.RequestTimeout = conf.Seconds(time.Second)
	cfg, _ := l.config(hco)
	p, _ := l.start(cfg)

	f.mute.Store(true)
	busy := goDo(p, context.Background(), isProtected("/hold/busy"))
	testsupport.WaitFor(t, wait, "the first request held", func() bool { return f.held.Load() == 1 })
	r := get(t, goDo(p, context.Background(), isProtected("/hold/queued")), "the queued request")
	if !errors.Is(r.err, ErrTimeout) || !strings.Contains(r.err.Error(), "while waiting for a socket") {
		t.Errorf("queued request: %v, want ErrTimeout while waiting for a socket", r.err)
	}
	if r := get(t, busy, "the held request"); !errors.Is(r.err, ErrTimeout) {
		t.Errorf("held request: %v, want ErrTimeout", r.err)
	}
	f.release()
}

// An error on a socket resets it and closes the sockets of the same age or
// older: idle ones at once, busy ones when their request is done. Younger
// sockets stay.
func TestSocketErrorClosesOlderSockets(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := l.fakeServer("smps1.shared.lab", nil)
	cfg, tb := l.config(hcoFor(true, f.ep))
	p, _ := l.start(cfg)
	ctx := context.Background()

	// Four sockets: three requests at once open two more.
	var chs []<-chan result
	for i := range 3 {
		chs = append(chs, goDo(p, ctx, isProtected(fmt.Sprintf("/hold/%d", i))))
	}
	testsupport.WaitFor(t, wait, "3 requests held and no socket being opened", func() bool {
		return f.held.Load() == 3 && p.Stats().Servers[0].Opening == 0
	})
	f.release()
	for _, ch := range chs {
		if r := get(t, ch, "growth"); r.err != nil {
			t.Fatal(r.err)
		}
	}
	st := p.Stats().Servers[0]
	if got := sockNums(st); !slices.Equal(got, []int{1, 2, 3, 4}) {
		t.Fatalf("sockets %v, want [1 2 3 4]", got)
	}
	conn := map[int]string{}
	for _, k := range st.Sockets {
		conn[k.Num] = k.ConnID
	}
	f.rearm()

	held := goDo(p, ctx, isProtected("/hold/on-socket-1"))
	testsupport.WaitFor(t, wait, "a request held on socket 1", func() bool { return f.held.Load() == 1 })
	r := get(t, goDo(p, ctx, isProtected("/reset")), "the request whose socket is reset")
	if !errors.Is(r.err, ErrNoConnection) || Result(r.err) != tlipb.Result_NOCONNECTION {
		t.Fatalf("reset request: %v, want ErrNoConnection (no other server to retry on)", r.err)
	}
	st = p.Stats().Servers[0]
	if got := sockNums(st); !slices.Equal(got, []int{1, 3, 4}) {
		t.Errorf("sockets %v, want [1 3 4]: 2 reset, busy 1 kept until returned, younger 3 and 4 kept", got)
	}
	if st.State != Failed || st.Resets != 1 || st.Failures != 1 {
		t.Errorf("stats %+v, want Failed, 1 reset, 1 failure", st)
	}
	if !ourReset(tb.events(t), conn[2]) {
		t.Errorf("socket 2 (%s) was not reset", conn[2])
	}

	f.release()
	if r := get(t, held, "the held request"); r.err != nil || r.resp.Result != tlipb.Result_YES {
		t.Fatalf("held request on socket 1: %v %v; its answer must still arrive", r.resp, r.err)
	}
	st = p.Stats().Servers[0]
	if got := sockNums(st); !slices.Equal(got, []int{3, 4}) {
		t.Errorf("sockets %v after socket 1 came back, want [3 4]", got)
	}
	if st.State != Failed {
		t.Errorf("state %s, want Failed: an answer to a request sent before the failure proves nothing", st.State)
	}
	evs := tb.events(t)
	if d := connEvents(evs, conn[1], trace.OpDisconnect, trace.OpReset); len(d) != 1 || d[0].Op != trace.OpDisconnect || d[0].Note != "" {
		t.Errorf("socket 1 (%s) ended with %+v, want our own TCP Disconnect (FIN)", conn[1], d)
	}
	for _, n := range []int{3, 4} {
		if d := connEvents(evs, conn[n], trace.OpDisconnect, trace.OpReset); len(d) != 0 {
			t.Errorf("younger socket %d was closed: %+v", n, d)
		}
	}
	testsupport.WaitFor(t, wait, "the server to see 2 connections left", func() bool { return f.conns.Load() == 2 })

	// No server is available: the failed one is retried with new sockets,
	// and those from before the failure are closed.
	if resp, err := p.Do(ctx, isProtected("/ok")); err != nil || resp.Result != tlipb.Result_YES {
		t.Fatalf("after the failure: %v %v", resp, err)
	}
	testsupport.WaitFor(t, wait, "no socket being opened", func() bool { return p.Stats().Servers[0].Opening == 0 })
	if st := p.Stats().Servers[0]; st.State != Active || !slices.Equal(sockNums(st), []int{5, 6}) {
		t.Errorf("after the retry: %s with sockets %v, want Active with [5 6] (NewSocketStep new ones)", st.State, sockNums(st))
	}
	evs = tb.events(t)
	for _, n := range []int{3, 4} {
		if d := connEvents(evs, conn[n], trace.OpDisconnect); len(d) != 1 || d[0].Note != "" {
			t.Errorf("socket %d from before the failure ended with %+v, want our FIN", n, d)
		}
	}
}

// ourReset tells whether the agent reset conn (an RST the server sent
// shows too, as "reset by peer").
func ourReset(evs []trace.Event, conn string) bool {
	for _, e := range connEvents(evs, conn, trace.OpReset) {
		if !e.Peer {
			return true
		}
	}
	return false
}

// resetAgentRequests resets every request but the HCO phase's.
func resetAgentRequests(req *tlipb.Request) verdict {
	switch req.GetBody().(type) {
	case *tlipb.Request_SetAgentInfo, *tlipb.Request_GetAgentConfig:
		return answer
	}
	return reset
}

// With EnableFailover, a request whose socket fails goes to the next server
// if it is safe to send twice.
func TestFailoverRetriesOnTheNextServer(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := l.fakeServer("smps1.shared.lab", resetAgentRequests)
	ps2 := l.realServer("smps2.shared.lab")

	tests := []struct {
		name    string
		req     *tlipb.Request
		retried bool
		want    tlipb.Result
	}{
		{"IsProtected", isProtected("/protected/"), true, tlipb.Result_YES},
		{"Authorize", &tlipb.Request{Body: &tlipb.Request_Authorize{Authorize: &tlipb.AuthorizeRequest{AgentName: "wa1", SessionToken: "stale", Resource: "/protected/", Action: "GET"}}}, true, tlipb.Result_CHALLENGE},
		{"DoManagement", &tlipb.Request{Body: &tlipb.Request_DoManagement{DoManagement: &tlipb.DoManagementRequest{AgentName: "wa1", Command: "GET_AGENT_COMMANDS"}}}, true, tlipb.Result_SUCCESS},
		{"Logout", &tlipb.Request{Body: &tlipb.Request_Logout{Logout: &tlipb.LogoutRequest{AgentName: "wa1", SessionToken: "stale"}}}, true, tlipb.Result_SUCCESS},
		{"Login is not sent twice", &tlipb.Request{Body: &tlipb.Request_Login{Login: &tlipb.LoginRequest{AgentName: "wa1", Realm: "realm.protected", User: "user1", Password: "Passw0rd1"}}}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := l.config(hcoFor(true, f.ep, ps2.ep))
			p, _ := l.start(cfg)
			before := ps2.requests()

			resp, err := p.Do(context.Background(), tt.req)
			st := p.Stats()
			if st.Servers[0].State != Failed || st.Servers[0].Failures != 1 {
				t.Errorf("first server: %+v, want Failed after 1 failure", st.Servers[0])
			}
			if !tt.retried {
				if !errors.Is(err, ErrNoConnection) {
					t.Fatalf("got %v %v, want ErrNoConnection", resp, err)
				}
				if got := ps2.requests() - before; got != 0 {
					t.Errorf("second server got %d requests, want none", got)
				}
				return
			}
			if err != nil || resp.Result != tt.want {
				t.Fatalf("got %v %v, want %s from the second server", resp, err, tt.want)
			}
			if got := ps2.requests() - before; got != 1 {
				t.Errorf("second server got %d requests, want 1", got)
			}
			// The failed server is left alone from now on.
			sent := f.requests.Load()
			if _, err := p.Do(context.Background(), isProtected("/")); err != nil {
				t.Fatal(err)
			}
			if f.requests.Load() != sent || ps2.requests()-before != 2 {
				t.Errorf("the next request did not go straight to the second server")
			}
		})
	}
}

// A Login that never left the agent goes to the next server like any other
// request: here it queued for smps1's only socket, whose request then broke.
func TestUnsentLoginFailsOver(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := l.fakeServer("smps1.shared.lab", nil)
	ps2 := l.realServer("smps2.shared.lab")
	hco := hcoFor(true, f.ep, ps2.ep)
	hco.MinSocketsPerPort, hco.MaxSocketsPerPort = 1, 1
	cfg, _ := l.config(hco)
	p, _ := l.start(cfg)

	busy := goDo(p, context.Background(), isProtected("/hold-reset"))
	testsupport.WaitFor(t, wait, "smps1's only socket busy", func() bool { return f.held.Load() == 1 })
	login := goDo(p, context.Background(), &tlipb.Request{Body: &tlipb.Request_Login{Login: &tlipb.LoginRequest{
		AgentName: "wa1", Realm: "realm.protected", User: "user1", Password: "Passw0rd1"}}})
	testsupport.WaitFor(t, wait, "the Login queued", func() bool { return p.Stats().Queued == 1 })
	f.release()

	r := get(t, login, "the Login")
	if r.err != nil || r.resp.Result != tlipb.Result_SUCCESS || r.resp.GetLogin().GetSessionToken() == "" {
		t.Fatalf("Login: %v %v, want SUCCESS from smps2", r.resp, r.err)
	}
	// smps2 knows /hold-reset as part of the public realm.
	if r := get(t, busy, "the request whose socket was reset"); r.err != nil || r.resp.Result != tlipb.Result_NO {
		t.Errorf("IsProtected on the reset socket: %v %v, want NO (unprotected) from smps2", r.resp, r.err)
	}
	if f.requests.Load() != 3 || ps2.requests() != 2 {
		t.Errorf("smps1 saw %d requests (want start's 2 and the reset one), smps2 %d (want the Login and the retry)",
			f.requests.Load(), ps2.requests())
	}
	if st := p.Stats().Servers[0]; st.State != Failed {
		t.Errorf("smps1 %s, want Failed", st.State)
	}
}

// A server that refuses a new socket (at its connection limit) keeps
// answering on those it has: it stays Active, its sockets stay open, and
// the request that wanted the new socket waits for one of them.
func TestNewSocketRefused(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := l.fakeServer("smps1.shared.lab", nil)
	hco := hcoFor(true, f.ep)
	hco.MinSocketsPerPort, hco.NewSocketStep = 1, 1
	cfg, _ := l.config(hco)
	p, _ := l.start(cfg)

	busy := goDo(p, context.Background(), isProtected("/hold"))
	testsupport.WaitFor(t, wait, "the only socket busy", func() bool { return f.held.Load() == 1 })
	f.refuse.Store(true)
	queued := goDo(p, context.Background(), isProtected("/queued"))
	testsupport.WaitFor(t, wait, "the new socket refused", func() bool { return p.Stats().Servers[0].DialFailures == 1 })
	if st := p.Stats().Servers[0]; st.State != Active || st.Queued != 1 || !slices.Equal(sockNums(st), []int{1}) {
		t.Errorf("after the refusal: %s, %d queued, sockets %v; want Active, 1 queued, [1]", st.State, st.Queued, sockNums(st))
	}
	f.release()
	for _, ch := range []<-chan result{busy, queued} {
		if r := get(t, ch, "a request"); r.err != nil || r.resp.Result != tlipb.Result_YES {
			t.Errorf("%v %v", r.resp, r.err)
		}
	}
	if st := p.Stats().Servers[0]; st.State != Active || st.DialFailures != 1 || st.Opened != 1 {
		t.Errorf("%+v: want Active, 1 dial failure, still the one socket", st)
	}
}

// A server that goes away (its sockets closed under the agent) fails over
// to the next; when no server is left available, a Disabled one is retried.
func TestServerStoppedFailsOver(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ps1 := l.realServer("smps1.shared.lab")
	ps2 := l.realServer("smps2.shared.lab")
	cfg, _ := l.config(hcoFor(true, ps1.ep, ps2.ep))
	p, _ := l.start(cfg)
	ctx := context.Background()

	if err := ps1.stop(); err != nil {
		t.Fatal(err)
	}
	resp, err := p.Do(ctx, isProtected("/protected/"))
	if err != nil || resp.Result != tlipb.Result_YES {
		t.Fatalf("after smps1 stopped: %v %v", resp, err)
	}
	st := p.Stats()
	if st.Servers[0].State != Failed || st.Servers[1].State != Active || ps2.requests() != 1 {
		t.Errorf("states %s/%s, smps2 answered %d; want Failed/Active, 1", st.Servers[0].State, st.Servers[1].State, ps2.requests())
	}

	// smps1 comes back and smps2 goes: with no server available, the
	// failed one is tried again.
	ps1b := l.serveReal(ps1.ep, nil)
	if err := ps2.stop(); err != nil {
		t.Fatal(err)
	}
	resp, err = p.Do(ctx, isProtected("/protected/"))
	if err != nil || resp.Result != tlipb.Result_YES {
		t.Fatalf("after smps2 stopped and smps1 came back: %v %v", resp, err)
	}
	st = p.Stats()
	if st.Servers[0].State != Active || st.Servers[1].State != Failed || ps1b.requests() != 1 {
		t.Errorf("states %s/%s, smps1 answered %d; want Active/Failed, 1", st.Servers[0].State, st.Servers[1].State, ps1b.requests())
	}
}

// EnableFailover=no spreads requests round robin.
func TestRoundRobinSpreadsRequests(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ps1 := l.realServer("smps1.shared.lab")
	ps2 := l.realServer("smps2.shared.lab")
	cfg, _ := l.config(hcoFor(false, ps1.ep, ps2.ep))
	p, _ := l.start(cfg)
	// Start's SetAgentInfo and GetAgentConfig went to the first server.
	before1, before2 := ps1.requests(), ps2.requests()
	if before1 != 2 || before2 != 0 {
		t.Errorf("start: %d and %d requests, want 2 and 0", before1, before2)
	}
	for i := range 10 {
		if _, err := p.Do(context.Background(), isProtected(fmt.Sprintf("/page/%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if n1, n2 := ps1.requests()-before1, ps2.requests()-before2; n1 != 5 || n2 != 5 {
		t.Errorf("servers answered %d and %d requests, want 5 each", n1, n2)
	}
	st := p.Stats()
	if st.Servers[0].Requests != 7 || st.Servers[1].Requests != 5 {
		t.Errorf("pool counted %d and %d, want 7 (with start's 2) and 5", st.Servers[0].Requests, st.Servers[1].Requests)
	}
}

func TestServerDownAtStart(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	down := l.down("smps1.shared.lab")
	ps2 := l.realServer("smps2.shared.lab")
	cfg, tb := l.config(hcoFor(true, down, ps2.ep))
	p, aco := l.start(cfg)
	if aco.Name != "aco.wa1" {
		t.Errorf("ACO %q", aco.Name)
	}
	st := p.Stats()
	if s := st.Servers[0]; s.State != Disabled || s.Open != 0 || s.DialFailures != 1 || s.LastError == "" {
		t.Errorf("server down at start: %+v, want Disabled, no socket, 1 dial failure and its error", s)
	}
	if s := st.Servers[1]; s.State != Active || s.Open != 2 || s.Requests != 2 {
		t.Errorf("second server: %+v, want Active, 2 sockets, the start's 2 requests", s)
	}
	var failedConnect bool
	for _, e := range tb.events(t) {
		failedConnect = failedConnect || e.Op == trace.OpConnect && e.RemoteHost == "smps1.shared.lab" && e.Conn == "" && e.Error != ""
	}
	if !failedConnect {
		t.Error("the trace does not show the attempt to reach smps1")
	}
	if _, err := p.Do(context.Background(), isProtected("/")); err != nil || ps2.requests() != 3 {
		t.Fatalf("request: %v; smps2 answered %d, want 3", err, ps2.requests())
	}

	// Down servers stay unavailable for CheckServers...
	err := p.CheckServers(context.Background())
	if err == nil || !strings.Contains(err.Error(), down.addr()) || !strings.Contains(err.Error(), "Disabled") {
		t.Errorf("CheckServers with smps1 still down: %v", err)
	}
	// ...until they answer. With failover, the primary then takes the
	// traffic back.
	ps1 := l.serveReal(down, nil)
	if err := p.CheckServers(context.Background()); err != nil {
		t.Fatalf("CheckServers: %v", err)
	}
	if s := p.Stats().Servers[0]; s.State != Active || s.Open != 2 {
		t.Errorf("after CheckServers: %+v, want Active with MinSocketsPerPort sockets", s)
	}
	if _, err := p.Do(context.Background(), isProtected("/")); err != nil || ps1.requests() != 1 {
		t.Errorf("request after recovery: %v; smps1 answered %d, want 1", err, ps1.requests())
	}
}

func TestAllServersDown(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	d1, d2 := l.down("smps1.shared.lab"), l.down("smps2.shared.lab")
	cfg, _ := l.config(hcoFor(true, d1, d2))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	p, _, err := Start(ctx, cfg, testInfo, "aco.wa1")
	if err == nil {
		p.Close()
		t.Fatal("Start succeeded with every server down")
	}
	if !errors.Is(err, ErrNoConnection) {
		t.Errorf("%v is not ErrNoConnection", err)
	}
	for _, want := range []string{trustedHost, "hco.test", d1.addr(), d2.addr()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ps := l.realServer("smps1.shared.lab")
	tests := []struct {
		name   string
		change func(*Config)
		aco    string
		want   string
	}{
		{"unknown ACO", nil, "aco.nowhere", `did not give agent configuration object "aco.nowhere": FAILURE`},
		{"wrong secret", func(c *Config) { c.Secret = []byte("not the secret") }, "aco.wa1", "Shared secret incorrect"},
		{"no trusted host", func(c *Config) { c.TrustedHost = "" }, "aco.wa1", "no trusted host"},
		{"bad HCO", func(c *Config) { c.HCO.MaxSocketsPerPort = 1 }, "aco.wa1", "below min_sockets_per_port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := l.config(hcoFor(true, ps.ep))
			if tt.change != nil {
				tt.change(&cfg)
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			p, _, err := Start(ctx, cfg, testInfo, tt.aco)
			if err == nil {
				p.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

// Close ends every socket, busy ones included, and does not wait out the
// requests' RequestTimeout.
func TestCloseWithRequestsInFlight(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := l.fakeServer("smps1.shared.lab", nil)
	cfg, tb := l.config(hcoFor(true, f.ep))
	p, _ := l.start(cfg)

	var chs []<-chan result
	for i := range 23 {
		chs = append(chs, goDo(p, context.Background(), isProtected(fmt.Sprintf("/hold/%d", i))))
	}
	testsupport.WaitFor(t, wait, "20 requests held and 3 queued", func() bool { return f.held.Load() == 20 && p.Stats().Queued == 3 })

	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Close hangs with requests in flight")
	}
	for i, ch := range chs {
		if r := get(t, ch, "a request cut by Close"); !errors.Is(r.err, ErrClosed) {
			t.Errorf("request %d: %v, want ErrClosed", i, r.err)
		}
	}
	if _, err := p.Do(context.Background(), isProtected("/")); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
	if err := p.CheckServers(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("CheckServers after Close: %v, want ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	var fins, resets int
	for _, e := range tb.events(t) {
		switch {
		case e.Op == trace.OpDisconnect && !e.Peer:
			fins++
		case e.Op == trace.OpReset:
			resets++
		}
	}
	if fins != 20 || resets != 0 {
		t.Errorf("Close ended sockets with %d FINs and %d RSTs, want 20 FINs", fins, resets)
	}
	// The held requests block the server's reads: it sees the FINs once
	// they are answered.
	f.release()
	testsupport.WaitFor(t, wait, "the server to see every socket closed", func() bool { return f.conns.Load() == 0 })
}

// A caller that gives up while queued leaves the queue; its place goes to
// the next.
func TestCallerCancelsWhileQueued(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := l.fakeServer("smps1.shared.lab", nil)
	hco := hcoFor(true, f.ep)
	hco.MinSocketsPerPort, hco.MaxSocketsPerPort = 1, 1
	cfg, _ := l.config(hco)
	p, _ := l.start(cfg)

	busy := goDo(p, context.Background(), isProtected("/hold/busy"))
	testsupport.WaitFor(t, wait, "the first request held", func() bool { return f.held.Load() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := goDo(p, ctx, isProtected("/queued/1"))
	next := goDo(p, context.Background(), isProtected("/queued/2"))
	testsupport.WaitFor(t, wait, "2 queued", func() bool { return p.Stats().Queued == 2 })
	cancel()
	if r := get(t, gaveUp, "the canceled request"); !errors.Is(r.err, context.Canceled) || errors.Is(r.err, ErrTimeout) {
		t.Errorf("canceled request: %v, want context.Canceled", r.err)
	}
	testsupport.WaitFor(t, wait, "1 queued", func() bool { return p.Stats().Queued == 1 })
	f.release()
	for _, ch := range []<-chan result{busy, next} {
		if r := get(t, ch, "a request"); r.err != nil {
			t.Errorf("%v", r.err)
		}
	}
	if st := p.Stats().Servers[0]; st.State != Active || st.Open != 1 || st.Opened != 1 {
		t.Errorf("%+v: want Active, still the one socket", st)
	}
}

// Close does not wait for a health check's handshake to time out.
func TestCloseDuringCheckServers(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ps1 := l.realServer("smps1.shared.lab")
	down := l.down("smps2.shared.lab")
	cfg, _ := l.config(hcoFor(true, ps1.ep, down))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	p, _, err := Start(ctx, cfg, testInfo, "aco.wa1")
	if err != nil {
		t.Fatal(err)
	}

	// Connects complete in the kernel's backlog; nobody ever answers the
	// ClientHello.
	mute := down.listen(t)
	defer mute.Close()
	checked := make(chan error, 1)
	go func() { checked <- p.CheckServers(context.Background()) }()
	testsupport.WaitFor(t, wait, "the health check's handshake under way", func() bool { return p.Stats().Servers[1].Opening == 1 })

	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	for _, ch := range []chan error{closed, checked} {
		select {
		case <-ch:
		case <-time.After(wait / 2):
			t.Fatal("Close waits for the health check's handshake")
		}
	}
}

// An agent that takes its ACO from its LLAWP (Apache children with
// --aco-from-llawp) still opens its own sockets and says who it is, but
// never asks for the ACO.
func TestStartSkipACO(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ps := l.realServer("smps1.shared.lab")
	cfg, tb := l.config(hcoFor(true, ps.ep))
	cfg.SkipACO = true
	p, aco := l.start(cfg)
	if got := ps.srv.Stats().Accepted.Load(); got != 2 {
		t.Errorf("server accepted %d connections, want MinSocketsPerPort = 2", got)
	}
	if aco.Name != "" {
		t.Errorf("ACO %q returned with SkipACO, want the zero ACO", aco.Name)
	}
	var reqs []string
	for _, e := range tb.events(t) {
		if e.Op == trace.OpRequest {
			reqs = append(reqs, e.Note)
		}
	}
	if want := []string{"SetAgentInfo wa1"}; !slices.Equal(reqs, want) {
		t.Errorf("requests %q, want %q", reqs, want)
	}
	if st := p.Stats(); len(st.Servers) != 1 || st.Servers[0].Open != 2 {
		t.Errorf("pool stats %+v, want 2 sockets open to the one server", st)
	}
}
