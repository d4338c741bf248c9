package trace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/testsupport"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// labHosts names the listener's socket smps1.shared.lab and the loopback
// address wa1.shared.lab, as a lab without loopback aliases does.
func labHosts(t *testing.T, l net.Listener) *Hosts {
	t.Helper()
	h, err := NewHosts(map[string][]string{
		l.Addr().String(): {"smps1.shared.lab"},
		"127.0.0.1":       {"wa1.shared.lab"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

type accepted struct {
	c   *Conn
	err error
}

// acceptOne accepts one connection on a recording listener.
func acceptOne(t *testing.T, l net.Listener, rec *Recorder, phase string) <-chan accepted {
	ch := make(chan accepted, 1)
	tl := rec.Listen(l, phase)
	go func() {
		c, err := tl.Accept()
		if err != nil {
			ch <- accepted{err: err}
			return
		}
		ch <- accepted{c: c.(*Conn)}
	}()
	return ch
}

func get(t *testing.T, ch <-chan accepted) *Conn {
	t.Helper()
	select {
	case a := <-ch:
		if a.err != nil {
			t.Fatal(a.err)
		}
		t.Cleanup(func() { a.c.Close() })
		return a.c
	case <-time.After(5 * time.Second):
		t.Fatal("accept timed out")
	}
	return nil
}

func ops(evs []Event) []string {
	var s []string
	for _, e := range evs {
		op := e.Op
		if e.Note != "" {
			op += " (" + e.Note + ")"
		}
		// The flag and the note say the same, one to a program, the
		// other to a person: a mismatch shows in the op.
		if e.Peer != (e.Note == NoteClosedByPeer || e.Note == NoteResetByPeer) {
			op += fmt.Sprintf(" [by_peer %v]", e.Peer)
		}
		s = append(s, op)
	}
	return s
}

func sumLen(evs []Event, op string) (n int, data []byte) {
	for _, e := range evs {
		if e.Op == op {
			n += e.Len
			data = append(data, e.Data...)
		}
	}
	return n, data
}

func TestConnRecordsTCPEvents(t *testing.T) {
	for _, payload := range []bool{false, true} {
		t.Run(map[bool]string{false: "no payload", true: "payload"}[payload], func(t *testing.T) {
			l := listen(t)
			hosts := labHosts(t, l)
			cw, sw := &lineWriter{}, &lineWriter{}
			crec := NewRecorder(cw, Options{Proc: "w3wp.exe", Role: "hla", Host: "wa1.shared.lab", Hosts: hosts, Payload: payload})
			srec := NewRecorder(sw, Options{Proc: "smps", Role: "policyserver", Host: "smps1.shared.lab", Hosts: hosts, Payload: payload})
			ch := acceptOne(t, l, srec, PhaseRequests)

			_, port, _ := net.SplitHostPort(l.Addr().String())
			c, err := crec.Dial(context.Background(), nil, "smps1.shared.lab:"+port, PhaseBootstrap)
			if err != nil {
				t.Fatal(err)
			}
			s := get(t, ch)
			if c.ID() == "" || s.ID() == "" || !c.Tracing() {
				t.Fatalf("ids %q %q, tracing %v", c.ID(), s.ID(), c.Tracing())
			}

			ping, pong := []byte("hello"), []byte("bonjour")
			if _, err := c.Write(ping); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(ping))
			if _, err := io.ReadFull(s, got); err != nil {
				t.Fatal(err)
			}
			c.SetPhase(PhaseHCO)
			if _, err := s.Write(pong); err != nil {
				t.Fatal(err)
			}
			got = make([]byte, len(pong))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if c.Phase() != PhaseHCO {
				t.Errorf("phase %q", c.Phase())
			}
			cLocal, cRemote := c.LocalAddr().String(), c.RemoteAddr().String()
			sLocal, sRemote := s.LocalAddr().String(), s.RemoteAddr().String()
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("server read after the client's close: %d, %v; want EOF", n, err)
			}
			s.Close()

			cev, sev := cw.events(t), sw.events(t)
			wantC := []string{OpConnect, OpSend, OpReceive, OpDisconnect}
			if got := dedupe(ops(cev)); !equal(got, wantC) {
				t.Errorf("client events %q, want %q", ops(cev), wantC)
			}
			wantS := []string{OpAccept, OpReceive, OpSend, OpDisconnect + " (closed by peer)", OpDisconnect}
			if got := dedupe(ops(sev)); !equal(got, wantS) {
				t.Errorf("server events %q, want %q", ops(sev), wantS)
			}
			for _, e := range cev {
				if e.Local != cLocal || e.Remote != cRemote || e.Conn != c.ID() {
					t.Errorf("client %s: local %s remote %s conn %s; socket has %s %s %s", e.Op, e.Local, e.Remote, e.Conn, cLocal, cRemote, c.ID())
				}
				if e.LocalHost != "wa1.shared.lab" || e.RemoteHost != "smps1.shared.lab" {
					t.Errorf("client %s: hosts %q -> %q", e.Op, e.LocalHost, e.RemoteHost)
				}
				if e.Proc != "w3wp.exe" || e.Role != "hla" {
					t.Errorf("client %s: proc %q role %q", e.Op, e.Proc, e.Role)
				}
			}
			for _, e := range sev {
				if e.Local != sLocal || e.Remote != sRemote || e.Conn != s.ID() {
					t.Errorf("server %s: local %s remote %s; socket has %s %s", e.Op, e.Local, e.Remote, sLocal, sRemote)
				}
				if e.LocalHost != "smps1.shared.lab" || e.RemoteHost != "wa1.shared.lab" {
					t.Errorf("server %s: hosts %q -> %q", e.Op, e.LocalHost, e.RemoteHost)
				}
				if e.Phase != PhaseRequests {
					t.Errorf("server %s: phase %q", e.Op, e.Phase)
				}
			}
			// What the handshake agreed on, on the connect and the accept
			// only: Linux's loopback offers every option and a window
			// scale, and sends in segments of a few KiB at least.
			for _, e := range append(cev, sev...) {
				ti := e.TCP
				switch {
				case e.Op != OpConnect && e.Op != OpAccept:
					if ti != nil {
						t.Errorf("%s %s has TCP_INFO", e.Proc, e.Op)
					}
				case ti == nil:
					t.Errorf("%s %s: no TCP_INFO", e.Proc, e.Op)
				case ti.MSS < 536 || !ti.SACK || !ti.Timestamps || !ti.WindowScaling || ti.RcvWindowScale == 0 || ti.SndWindowScale == 0:
					t.Errorf("%s %s: TCP_INFO %+v", e.Proc, e.Op, *ti)
				}
			}
			if cev[0].Phase != PhaseBootstrap || cev[len(cev)-1].Phase != PhaseHCO {
				t.Errorf("client phases %q ... %q", cev[0].Phase, cev[len(cev)-1].Phase)
			}

			check := func(who string, evs []Event, op string, want []byte) {
				t.Helper()
				n, data := sumLen(evs, op)
				if n != len(want) {
					t.Errorf("%s %s: %d bytes recorded, %d moved", who, op, n, len(want))
				}
				if payload && !bytes.Equal(data, want) {
					t.Errorf("%s %s: payload %q, want %q", who, op, data, want)
				}
				if !payload && data != nil {
					t.Errorf("%s %s: payload %q recorded without Options.Payload", who, op, data)
				}
			}
			check("client", cev, OpSend, ping)
			check("client", cev, OpReceive, pong)
			check("server", sev, OpReceive, ping)
			check("server", sev, OpSend, pong)
		})
	}
}

// dedupe folds runs of the same op: a read may return a message in pieces.
func dedupe(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] || strings.HasPrefix(x, OpDisconnect) {
			out = append(out, x)
		}
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestConnResetIsSeenByPeer(t *testing.T) {
	l := listen(t)
	cw, sw := &lineWriter{}, &lineWriter{}
	crec := NewRecorder(cw, Options{Proc: "LLAWP.exe"})
	srec := NewRecorder(sw, Options{Proc: "smps"})
	ch := acceptOne(t, l, srec, "")
	c, err := crec.Dial(context.Background(), nil, l.Addr().String(), PhaseBootstrap)
	if err != nil {
		t.Fatal(err)
	}
	s := get(t, ch)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = s.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer read after Reset: %v, want ECONNRESET", err)
	}
	// A second Close after Reset must not add a Disconnect.
	c.Close()
	s.Close()

	if got, want := ops(cw.events(t)), []string{OpConnect, OpSend, OpReset}; !equal(got, want) {
		t.Errorf("client events %q, want %q", got, want)
	}
	if got, want := ops(sw.events(t)), []string{OpAccept, OpReceive, OpReset + " (reset by peer)", OpDisconnect}; !equal(got, want) {
		t.Errorf("server events %q, want %q", got, want)
	}
}

func TestConnWriteAfterPeerReset(t *testing.T) {
	l := listen(t)
	sw := &lineWriter{}
	srec := NewRecorder(sw, Options{Proc: "smps"})
	ch := acceptOne(t, l, srec, "")
	c, err := NewRecorder(io.Discard, Options{}).Dial(context.Background(), nil, l.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	s := get(t, ch)
	c.Reset()
	// The RST may take a moment to arrive; writes then fail.
	testsupport.WaitFor(t, 5*time.Second, "a write to fail after the reset", func() bool {
		_, err = s.Write([]byte("late"))
		return err != nil
	})
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write after the peer's reset: %v", err)
	}
	var resets int
	for _, e := range sw.events(t) {
		if e.Op == OpReset && e.Peer {
			resets++
		}
	}
	if resets != 1 {
		t.Errorf("%d 'reset by peer' events, want 1: %q", resets, ops(sw.events(t)))
	}
}

func TestConnTimeoutIsNotAPeerEvent(t *testing.T) {
	l := listen(t)
	cw := &lineWriter{}
	ch := acceptOne(t, l, nil, "")
	c, err := NewRecorder(cw, Options{}).Dial(context.Background(), nil, l.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get(t, ch)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read with nothing to read succeeded")
	}
	if got := ops(cw.events(t)); !equal(got, []string{OpConnect}) {
		t.Errorf("events %q after a timeout, want only the connect", got)
	}
}

func TestDialFailed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: the connect is refused
	_, port, _ := net.SplitHostPort(addr)
	hosts, err := NewHosts(map[string][]string{addr: {"smps2.shared.lab"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dial, wantHost string
	}{
		{"lab name", "smps2.shared.lab:" + port, "smps2.shared.lab"},
		{"ip of a lab host", addr, "smps2.shared.lab"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &lineWriter{}
			rec := NewRecorder(w, Options{Proc: "LLAWP.exe", Host: "wa1.shared.lab", Hosts: hosts})
			c, err := rec.Dial(context.Background(), nil, tc.dial, PhaseBootstrap)
			if err == nil {
				c.Close()
				t.Fatal("dial to a closed port succeeded")
			}
			evs := w.events(t)
			if len(evs) != 1 {
				t.Fatalf("events %q, want one", ops(evs))
			}
			e := evs[0]
			if e.Op != OpConnect || e.Note != "failed: connect: connection refused" || e.Error != "connection refused" || e.Errno != "ECONNREFUSED" {
				t.Errorf("event %s %q, error %q, errno %q", e.Op, e.Note, e.Error, e.Errno)
			}
			if e.Remote != addr || e.RemoteHost != tc.wantHost || e.LocalHost != "wa1.shared.lab" || e.Phase != PhaseBootstrap {
				t.Errorf("event %+v", e)
			}
		})
	}

	// An address that is not a lab host is not named after its IP.
	w := &lineWriter{}
	if _, err := NewRecorder(w, Options{}).Dial(context.Background(), nil, "127.0.0.1:"+port, ""); err == nil {
		t.Fatal("dial succeeded")
	}
	if e := w.events(t)[0]; e.RemoteHost != "" {
		t.Errorf("remote host %q for a bare IP", e.RemoteHost)
	}

	// A dial cancelled by its context is recorded as failed too.
	w = &lineWriter{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewRecorder(w, Options{}).Dial(ctx, nil, "127.0.0.1:"+port, ""); err == nil {
		t.Fatal("dial with a cancelled context succeeded")
	}
	if e := w.events(t); len(e) != 1 || e[0].Note != "failed: operation was canceled" || e[0].Error != "operation was canceled" || e[0].Errno != "ECANCELED" {
		t.Errorf("events %+v", e)
	}

	// One that ran out of time: the system's ETIMEDOUT or the process's
	// own deadline read the same.
	if got := errnoOf(&net.OpError{Op: "dial", Err: context.DeadlineExceeded}); got != "ETIMEDOUT" {
		t.Errorf("a deadline is %q", got)
	}
	if got := errnoOf(errors.New("no system error")); got != "" {
		t.Errorf("a plain error is %q", got)
	}
}

func TestNilRecorderConn(t *testing.T) {
	var rec *Recorder
	l := listen(t)
	ch := acceptOne(t, l, rec, "")
	c, err := rec.Dial(context.Background(), &net.Dialer{Timeout: time.Second}, l.Addr().String(), PhaseBootstrap)
	if err != nil {
		t.Fatal(err)
	}
	s := get(t, ch)
	if c.Tracing() || c.ID() != "" || s.Tracing() {
		t.Error("a nil recorder traces")
	}
	c.Note(OpHandshake, 1, "nobody reads this")
	c.SetPhase(PhaseHCO)
	if _, err := c.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read after reset: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wrapped := rec.Client(pipeConn(t), "")
	if wrapped.Tracing() {
		t.Error("nil recorder Client traces")
	}
	wrapped.Close()

	// A refused dial with a nil recorder is just an error.
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l2.Addr().String()
	l2.Close()
	if _, err := rec.Dial(context.Background(), nil, addr, ""); err == nil {
		t.Error("dial to a closed port succeeded")
	}
}

func pipeConn(t *testing.T) net.Conn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a
}

func TestResetWithoutTCP(t *testing.T) {
	w := &lineWriter{}
	c := NewRecorder(w, Options{}).Server(pipeConn(t), "")
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	// No RST can go on a pipe: the trace must say it was a plain close.
	if got := ops(w.events(t)); !equal(got, []string{OpAccept, OpDisconnect + " (reset not supported: closed)"}) {
		t.Errorf("events %q", got)
	}
}

func TestResetAfterClose(t *testing.T) {
	l := listen(t)
	ch := acceptOne(t, l, nil, "")
	w := &lineWriter{}
	c, err := NewRecorder(w, Options{}).Dial(context.Background(), nil, l.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	get(t, ch)
	c.Close()
	if err := c.Reset(); err == nil {
		t.Error("Reset of a closed connection: no error")
	}
	if got := ops(w.events(t)); !equal(got, []string{OpConnect, OpDisconnect}) {
		t.Errorf("events %q", got)
	}
}

func TestNoteAndListener(t *testing.T) {
	l := listen(t)
	sw := &lineWriter{}
	srec := NewRecorder(sw, Options{Proc: "smps"})
	tl := srec.Listen(l, PhaseAdmin)
	done := make(chan error, 1)
	go func() {
		c, err := tl.Accept()
		if err == nil {
			c.(*Conn).Note(OpHandshake, 42, "ClientHello trusted host trust_wa1")
			c.Close()
		}
		done <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	evs := sw.events(t)
	if len(evs) != 3 || evs[1].Op != OpHandshake || evs[1].Len != 42 || evs[1].Note != "ClientHello trusted host trust_wa1" || evs[1].Phase != PhaseAdmin {
		t.Errorf("events %+v", evs)
	}
	tl.Close()
	if _, err := tl.Accept(); err == nil {
		t.Error("Accept on a closed listener succeeded")
	}
}

func TestConnIDsAreUnique(t *testing.T) {
	rec := NewRecorder(io.Discard, Options{PID: 99})
	seen := map[string]bool{}
	for range 10 {
		c := rec.Client(pipeConn(t), "")
		if seen[c.ID()] || !strings.HasPrefix(c.ID(), "99-") {
			t.Fatalf("id %q", c.ID())
		}
		seen[c.ID()] = true
	}
}

// A name no hosts map has is refused before any socket exists: no DNS
// query (under .invalid an answer is impossible, and a resolver's error
// would not be an *UnknownHostError), no connect, no event.
func TestDialUnknownName(t *testing.T) {
	hosts, err := NewHosts(map[string][]string{"127.0.0.21": {"smps1.shared.lab"}})
	if err != nil {
		t.Fatal(err)
	}
	w := &lineWriter{}
	for _, rec := range []*Recorder{NewRecorder(w, Options{Hosts: hosts}), NewRecorder(w, Options{}), nil} {
		c, err := rec.Dial(context.Background(), nil, "smps2.shared.invalid:44443", PhaseBootstrap)
		var unknown *UnknownHostError
		if !errors.As(err, &unknown) || unknown.Name != "smps2.shared.invalid" {
			if c != nil {
				c.Close()
			}
			t.Fatalf("Dial of a name outside the hosts map: %v, want an UnknownHostError", err)
		}
	}
	if evs := w.events(t); len(evs) != 0 {
		t.Errorf("events %q for a dial that never reached the network", ops(evs))
	}
}
