package policyserver

// Each fault is observed the way an agent meets it: through a real client
// on a real socket, never through the server's own state alone.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/fault"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

func mustApply(t testing.TB, ls *liveServer, a fault.Action) fault.Result {
	t.Helper()
	res, err := ls.srv.Apply(a)
	if err != nil {
		t.Fatalf("Apply(%+v): %v", a, err)
	}
	return res
}

// quickDial handshakes with a short timeout: long enough on a loaded
// machine for a server that answers, short for one that does not.
func (ls *liveServer) quickDial(cfg tli.ClientConfig, d time.Duration) (*tli.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cfg.HandshakeTimeout = d
	return tli.Dial(ctx, ls.addr, cfg)
}

func TestFaultStopAccepting(t *testing.T) {
	cases := []struct {
		name  string
		queue bool
		// connect checks what a new client meets while the fault is on.
		connect func(t *testing.T, ls *liveServer)
	}{
		{"refuse", false, func(t *testing.T, ls *liveServer) {
			_, err := net.DialTimeout("tcp", ls.addr, liveWait)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("connect while refusing: %v, want connection refused", err)
			}
		}},
		{"queue", true, func(t *testing.T, ls *liveServer) {
			// The kernel completes the connect; nobody answers the hello.
			c, err := net.DialTimeout("tcp", ls.addr, liveWait)
			if err != nil {
				t.Fatalf("connect while queueing: %v, want it to complete in the backlog", err)
			}
			c.Close()
			_, err = ls.quickDial(ls.agentConfig(), 300*time.Millisecond)
			if !tli.IsTimeout(err) && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("handshake while queueing: %v, want a timeout", err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ls := runLiveServer(t, nil)
			old := ls.dial(t)
			res := mustApply(t, ls, fault.Action{Kind: fault.StopAccepting, Queue: c.queue})
			if want := map[bool]string{false: "refusing", true: "queueing"}[c.queue]; res.State.Accept != want {
				t.Errorf("state %+v, want accept %q", res.State, want)
			}
			accepted := ls.srv.Stats().Accepted.Load()

			// A handshake that starts during the fault and ends after it.
			var late *tli.Client
			var lateErr error
			var wg sync.WaitGroup
			if c.queue {
				wg.Go(func() { late, lateErr = ls.tryDial(ls.agentConfig()) })
			}
			c.connect(t, ls)
			// Sessions opened before go on: the fault is about new ones.
			mustPing(t, old, "a session opened before the fault")
			if n := ls.srv.Stats().Accepted.Load(); n != accepted {
				t.Errorf("the server accepted %d connections while not accepting", n-accepted)
			}

			mustApply(t, ls, fault.Action{Kind: fault.Resume})
			fresh := ls.dial(t)
			mustPing(t, fresh, "a session opened after resume")
			wg.Wait()
			if c.queue {
				if lateErr != nil {
					t.Fatalf("a handshake queued during the fault did not complete after resume: %v", lateErr)
				}
				mustPing(t, late, "the queued session")
				late.Close()
			}
			if st := ls.srv.FaultState(); st.Accept != "accepting" || len(st.Listening) != 1 || st.Listening[0] != ls.addr {
				t.Errorf("after resume: %+v, want accepting on %s", st, ls.addr)
			}
			ls.waitLog(t, "", "Fault injection: stopped accepting connections")
			ls.waitLog(t, "", "Fault injection: resumed")
		})
	}
}

// TestFaultRefuseThenShutdown: a server that refuses, or holds a queued
// connection, still stops at once when asked to (goleak checks the rest).
func TestFaultRefuseThenShutdown(t *testing.T) {
	for _, queue := range []bool{false, true} {
		ls := runLiveServer(t, nil)
		mustApply(t, ls, fault.Action{Kind: fault.StopAccepting, Queue: queue})
		if queue {
			c := ls.rawDial(t)
			c.Write(liveFrame(t, tli.FrameClientHello, []byte{}))
		}
		if err := ls.stop(); err != nil {
			t.Errorf("queue=%v: %v", queue, err)
		}
	}
}

func TestFaultReset(t *testing.T) {
	ls := runLiveServer(t, nil)
	clients := []*tli.Client{ls.dial(t), ls.dial(t)}
	for _, c := range clients {
		mustPing(t, c, "before the reset")
	}
	// A raw socket past the TCP handshake but not the TLI one is open too.
	raw := ls.rawDial(t)
	testsupport.WaitFor(t, liveWait, "3 open connections", func() bool { return ls.srv.Conns() == 3 })

	res := mustApply(t, ls, fault.Action{Kind: fault.Reset})
	if res.Reset != 3 {
		t.Errorf("reset %d connections, want 3", res.Reset)
	}
	raw.SetReadDeadline(time.Now().Add(liveWait))
	if _, err := raw.Read(make([]byte, 16)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read after the reset: %v, want connection reset by peer (an RST, not a FIN)", err)
	}
	for i, c := range clients {
		err := livePingErr(c)
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Errorf("client %d after the reset: %v, want ECONNRESET or EPIPE", i, err)
		}
	}
	// The server goes on accepting.
	mustPing(t, ls.dial(t), "a session opened after the reset")
}

func TestFaultStall(t *testing.T) {
	cases := []struct {
		name    string
		stall   time.Duration
		resume  time.Duration // 0: let the stall end by itself
		atLeast time.Duration
		atMost  time.Duration
	}{
		{"ends by itself", 600 * time.Millisecond, 0, 500 * time.Millisecond, liveWait},
		{"ended by resume", time.Minute, 300 * time.Millisecond, 250 * time.Millisecond, 30 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tr syncBuffer
			ls := runLiveServer(t, func(cfg *Config) {
				cfg.Recorder = trace.NewRecorder(&tr, trace.Options{Proc: "smps", Role: "policyserver"})
			})
			cl := ls.dial(t)
			mustPing(t, cl, "before the stall")
			t0 := time.Now()
			mustApply(t, ls, fault.Action{Kind: fault.Stall, For: c.stall})
			if c.resume > 0 {
				time.AfterFunc(c.resume, func() { ls.srv.Apply(fault.Action{Kind: fault.Resume}) })
			}
			// A handshake during the stall gets no ServerHello either.
			var wg sync.WaitGroup
			var hsErr error
			wg.Go(func() { _, hsErr = ls.quickDial(ls.agentConfig(), 150*time.Millisecond) })
			mustPing(t, cl, "during the stall")
			took := time.Since(t0)
			if took < c.atLeast || took > c.atMost {
				t.Errorf("the reply took %s, want between %s and %s", took, c.atLeast, c.atMost)
			}
			wg.Wait()
			if hsErr == nil {
				t.Error("a handshake completed during the stall")
			}
			mustPing(t, cl, "after the stall")
			mustPing(t, ls.dial(t), "a session opened after the stall")

			// The server read the request at once and sent the reply late.
			evs, err := trace.ReadEvents("trace", strings.NewReader(tr.String()))
			if err != nil {
				t.Fatal(err)
			}
			local := cl.Conn().LocalAddr().String()
			var recv, sent time.Time
			for _, e := range evs {
				if e.T.Before(t0) || e.Remote != local {
					continue
				}
				if e.Op == trace.OpReceive && recv.IsZero() {
					recv = e.T
				}
				if e.Op == trace.OpSend && sent.IsZero() && !recv.IsZero() {
					sent = e.T
				}
			}
			if recv.IsZero() || sent.IsZero() || recv.Sub(t0) > c.atLeast/2 || sent.Sub(recv) < c.atLeast*9/10 {
				t.Errorf("trace: request received %s after the ping started, reply sent %s after that; want the receive at once and the send held",
					recv.Sub(t0), sent.Sub(recv))
			}
		})
	}
}

// TestFaultStallKeepsDeadlines: a stall holds a reply, but the server's
// own deadlines still end the wait, and closing the connection frees it.
func TestFaultStallKeepsDeadlines(t *testing.T) {
	ls := runLiveServer(t, func(cfg *Config) { cfg.HandshakeTimeout = 200 * time.Millisecond })
	mustApply(t, ls, fault.Action{Kind: fault.Stall, For: time.Minute})
	c := ls.rawDial(t)
	c.Write(liveHello(t, nil))
	// The server's answer (here the error frame for a hello of version 0)
	// is held until its write deadline; then it gives up and closes.
	waitClosed(t, c, "a handshake held by a stall")
	testsupport.WaitFor(t, liveWait, "the held connection to close", func() bool { return ls.srv.Conns() == 0 })
}

func TestFaultRejectHandshakes(t *testing.T) {
	cases := []struct {
		name  string
		code  int // 0: the default
		want  int
		admin bool
	}{
		{"default code", 0, tli.CodeSecretIncorrect, false},
		{"bad version", tli.CodeBadVersion, tli.CodeBadVersion, false},
		{"no client ack", tli.CodeNoClientAck, tli.CodeNoClientAck, false},
		{"administrator too", tli.CodeBadEncryption, tli.CodeBadEncryption, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ls := runLiveServer(t, nil)
			old := ls.dial(t)
			mustApply(t, ls, fault.Action{Kind: fault.RejectHandshakes, Code: c.code})
			cfg := ls.agentConfig()
			if c.admin {
				cfg = tli.ClientConfig{Admin: true, TrustedHost: "smreghost", HandshakeTimeout: liveWait}
			}
			_, tap, err := ls.handshakeVia(t, cfg, nil)
			var he *tli.HandshakeError
			if !errors.As(err, &he) || he.Code != c.want {
				t.Fatalf("handshake: %v, want handshake error %d", err, c.want)
			}
			if he.Message != tli.CodeText(c.want) {
				t.Errorf("message %q, want the vendor's %q", he.Message, tli.CodeText(c.want))
			}
			ls.waitLog(t, tap.LocalAddr().String(), "Handshake error: "+tli.CodeText(c.want))
			ls.waitLog(t, tap.LocalAddr().String(), "Failed handshake with")
			mustPing(t, old, "a session opened before the fault")
			mustApply(t, ls, fault.Action{Kind: fault.Resume})
			mustPing(t, ls.dial(t), "a session opened after resume")
		})
	}
}

func TestFaultApplyRejects(t *testing.T) {
	ls := runLiveServer(t, nil)
	cases := []struct {
		a    fault.Action
		want string
	}{
		{fault.Action{Kind: "explode"}, `unknown fault "explode"`},
		{fault.Action{Kind: fault.Kill}, `unknown fault "kill"`}, // the lab's, not smps's
		{fault.Action{Kind: fault.Stall}, "positive duration"},
		{fault.Action{Kind: fault.Stall, For: 2100000 * time.Hour}, "at most 24h0m0s"},
		{fault.Action{Kind: fault.RejectHandshakes, Code: 42}, "3152 to 3157"},
	}
	for _, c := range cases {
		if _, err := ls.srv.Apply(c.a); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Apply(%+v) = %v, want an error saying %q", c.a, err, c.want)
		}
	}
	mustPing(t, ls.dial(t), "after refused commands")
}

// TestControlClient: the lab's client and smps's control API agree on
// every action smps carries out, as a lab file writes it.
func TestControlClient(t *testing.T) {
	ls := runLiveServer(t, nil)
	hs := httptest.NewServer(ls.srv.ControlHandler())
	defer hs.Close()
	c := fault.Client{Addr: strings.TrimPrefix(hs.URL, "http://"), Name: "smps"}
	cases := []struct {
		action string
		done   string
		check  func(fault.State) bool
	}{
		{"stop-accepting queue", "stopped accepting connections: queueing", func(s fault.State) bool { return s.Accept == "queueing" }},
		{"stop-accepting", "stopped accepting connections: refusing", func(s fault.State) bool { return s.Accept == "refusing" && len(s.Closed) == 1 }},
		{"stall 1m", "stalling every reply for 1m0s", func(s fault.State) bool { return s.StallUntil != nil }},
		{"reject-handshakes", "rejecting every handshake with 3154 " + tli.CodeText(3154), func(s fault.State) bool { return s.RejectCode == 3154 }},
		{"reject-handshakes 3153", "rejecting every handshake with 3153 Bad version", func(s fault.State) bool { return s.RejectCode == 3153 }},
		{"resume", "resumed: accepting, replying, handshaking and looking users up normally", func(s fault.State) bool {
			return s.Accept == "accepting" && s.StallUntil == nil && s.RejectCode == 0 && len(s.Listening) == 1
		}},
		{"reset", "reset 0 connections", func(s fault.State) bool { return s.Conns == 0 }},
	}
	for _, tc := range cases {
		a, err := fault.Parse(tc.action)
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Apply(context.Background(), a)
		if err != nil || res.Done != tc.done || !tc.check(res.State) {
			t.Errorf("%s: %+v, %v; want done %q and the state it says", tc.action, res, err, tc.done)
		}
	}
	mustPing(t, ls.dial(t), "after the client's resume")
}

// TestControlHandler drives the control API as agentlab does, over HTTP.
func TestControlHandler(t *testing.T) {
	ls := runLiveServer(t, nil)
	hs := httptest.NewServer(ls.srv.ControlHandler())
	defer hs.Close()
	local := strings.TrimPrefix(hs.URL, "http://")
	_, port, _ := net.SplitHostPort(local)
	cases := []struct {
		method, path string
		code         int
		body         string
		host         string // the Host header; "": the listener's address
		noHeader     bool   // leave out X-Agentlab-Control
	}{
		{"GET", "/faults", 200, `"accept":"accepting"`, "", false},
		{"POST", "/faults/stall?for=1m", 200, `"done":"stalling every reply for 1m0s"`, "", false},
		{"GET", "/faults", 200, `"stall_until"`, "", false},
		{"POST", "/faults/reject-handshakes?code=3153", 200, `"reject_handshakes":3153`, "", false},
		{"POST", "/faults/stop-accepting?mode=queue", 200, `"accept":"queueing"`, "", false},
		{"POST", "/faults/resume", 200, `"accept":"accepting"`, "", false},
		{"POST", "/faults/reset", 200, `"done":"reset 0 connections"`, "", false},
		{"GET", "/faults/reset", 405, "POST", "", false},
		{"POST", "/faults", 405, "GET", "", false},
		{"POST", "/faults/explode", 400, `smps control: unknown fault "explode"`, "", false},
		{"POST", "/faults/stall", 400, "needs for=DURATION", "", false},
		{"GET", "/nothing", 404, "", "", false},
		// A web page cannot POST without a custom header (CORS preflight),
		// nor pass the Host check through DNS rebinding.
		// The final ping shows that none of them was applied.
		{"POST", "/faults/stop-accepting", 403, "smps control: a POST needs the header X-Agentlab-Control: 1", "", true},
		{"POST", "/faults/reject-handshakes", 403, `smps control: Host "attacker.example:` + port + `" is not this listener's address`, "attacker.example:" + port, false},
		{"GET", "/faults", 403, `Host "localhost:` + port + `"`, "localhost:" + port, false},
		{"POST", "/faults/stop-accepting", 403, "is not this listener's address", "127.0.0.1", false},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, hs.URL+c.path, nil)
		if c.host != "" {
			req.Host = c.host
		}
		if !c.noHeader {
			req.Header.Set(fault.ControlHeader, "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(string(b), c.body) {
			t.Errorf("%s %s: %d %s, want %d with %q", c.method, c.path, resp.StatusCode, b, c.code, c.body)
		}
		if c.code == 403 && strings.Count(strings.TrimSpace(string(b)), "\n") != 0 {
			t.Errorf("%s %s: want one line, got %q", c.method, c.path, b)
		}
		if c.code == 200 && !json.Valid(b) {
			t.Errorf("%s %s: not JSON: %s", c.method, c.path, b)
		}
	}
	// After resume the server serves as before.
	mustPing(t, ls.dial(t), "after the control API's resume")
}

// TestControlLimits: a control client cannot hold connections: a partial
// request, even after a kept-alive one, is dropped, and connections past
// the cap are closed at once.
func TestControlLimits(t *testing.T) {
	for name, d := range map[string]time.Duration{"read": defaultControlLimits.read, "write": defaultControlLimits.write, "idle": defaultControlLimits.idle} {
		if d <= 0 || d > time.Minute {
			t.Errorf("default %s timeout %s: 0 means none", name, d)
		}
	}
	if defaultControlLimits.conns <= 0 {
		t.Errorf("default connection cap %d", defaultControlLimits.conns)
	}
	ls := runLiveServer(t, nil)
	serve := func(lim controlLimits) string {
		l, err := ListenControl("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ls.srv.serveControl(ctx, l, lim) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
		return l.Addr().String()
	}
	// get sends a whole request on c and reads the answer, keeping c open.
	get := func(c net.Conn, br *bufio.Reader, addr string) {
		t.Helper()
		fmt.Fprintf(c, "GET /faults HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET /faults: %s", resp.Status)
		}
	}
	// closedWithin tells whether the server closes c within d.
	closedWithin := func(c net.Conn, br *bufio.Reader, d time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, br)
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}

	short := serve(controlLimits{read: 300 * time.Millisecond, write: 300 * time.Millisecond, idle: 300 * time.Millisecond, conns: 4})
	for _, c := range []struct {
		name      string
		keptAlive bool // a whole request first
		partial   string
	}{
		{"partial request", false, "GET"},
		{"partial request after a kept-alive one", true, "GET"},
		{"idle after a kept-alive one", true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", short)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			if c.keptAlive {
				get(conn, br, short)
			}
			io.WriteString(conn, c.partial)
			if !closedWithin(conn, br, 3*time.Second) {
				t.Error("the connection is still open after 3s")
			}
		})
	}

	t.Run("connection cap", func(t *testing.T) {
		addr := serve(controlLimits{read: 5 * time.Second, write: 5 * time.Second, idle: 10 * time.Second, conns: 2})
		var held []net.Conn
		for range 2 {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			get(conn, bufio.NewReader(conn), addr)
			held = append(held, conn)
		}
		extra, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer extra.Close()
		if !closedWithin(extra, bufio.NewReader(extra), 2*time.Second) {
			t.Error("a third connection was kept with two held and a cap of 2")
		}
		// A slot comes back when the server has closed its end of a
		// held connection: until then a new one is closed at once.
		held[0].Close()
		testsupport.WaitFor(t, liveWait, "a slot after a held connection closed", func() bool {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /faults HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			return err == nil && resp.StatusCode == 200
		})
	})
}

// syncBuffer is a trace sink written from the server's goroutines.
type syncBuffer = testsupport.Buffer
