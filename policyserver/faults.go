package policyserver

// Fault injection: a Policy Server told to misbehave, so that a lab can show
// what an agent does when its server stops accepting, resets its sockets,
// stalls, or refuses handshakes (docs/faults.md). Every fault acts on real
// sockets, so the agent meets what it would meet in the field: a refused
// connect, an RST, a reply that does not come, the vendor's error frame.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentlab/agentlab/fault"
	"github.com/agentlab/agentlab/tli"
)

// AcceptMode is how a server takes new connections.
type AcceptMode int

const (
	// Accepting is the normal mode.
	Accepting AcceptMode = iota
	// Queueing keeps the listeners open but stops accepting: a connect
	// completes in the kernel's backlog and its handshake waits, as with a
	// server too busy to call accept, until the backlog is full and SYNs
	// are dropped.
	Queueing
	// Refusing closes the listeners: a connect is refused (RST), as with a
	// server that is up but not listening, and connections still in the
	// backlog are reset.
	Refusing
)

func (m AcceptMode) String() string {
	switch m {
	case Accepting:
		return "accepting"
	case Queueing:
		return "queueing"
	case Refusing:
		return "refusing"
	}
	return fmt.Sprintf("AcceptMode(%d)", int(m))
}

// faults is a server's fault state. The zero value is a server behaving.
type faults struct {
	mu        sync.Mutex
	mode      AcceptMode
	listeners []*faultListener
	// changed is closed, and forgotten, on every change: whoever waits for
	// a change takes it under mu and selects on it.
	changed chan struct{}

	stallUntil atomic.Int64 // Unix nanoseconds; 0: no stall
	reject     atomic.Int32 // handshake error code; 0: handshakes proceed
}

// faultListener is one address a Serve call answers on. Its listener is
// nil while the server refuses: resume listens again on the same address.
type faultListener struct {
	addr string
	l    net.Listener
	shut bool // Serve is ending: never listen again
}

func (f *faults) changedLocked() chan struct{} {
	if f.changed == nil {
		f.changed = make(chan struct{})
	}
	return f.changed
}

func (f *faults) notifyLocked() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// add registers a listener Serve was given. A server that already refuses
// closes it at once: a listener added later must not undo the fault.
func (f *faults) add(l net.Listener) *faultListener {
	fl := &faultListener{addr: l.Addr().String(), l: l}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listeners = append(f.listeners, fl)
	if f.mode == Refusing {
		l.Close()
		fl.l = nil
	}
	return fl
}

// shut closes a listener for good, when its Serve ends.
func (f *faults) shut(fl *faultListener) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl.shut = true
	if fl.l != nil {
		fl.l.Close()
		fl.l = nil
	}
	f.listeners = slices.DeleteFunc(f.listeners, func(o *faultListener) bool { return o == fl })
	f.notifyLocked()
}

// accept is Accept under the faults: it waits while the listener is closed
// by a refusal, picks up the new listener on resume, and holds a
// connection while the server queues.
func (f *faults) accept(done <-chan struct{}, fl *faultListener) (net.Conn, error) {
	for {
		f.mu.Lock()
		l, shut, ch := fl.l, fl.shut, f.changedLocked()
		f.mu.Unlock()
		if shut {
			return nil, net.ErrClosed
		}
		if l == nil {
			select {
			case <-ch:
				continue
			case <-done:
				return nil, net.ErrClosed
			}
		}
		c, err := l.Accept()
		if err != nil {
			f.mu.Lock()
			replaced := fl.l != l && !fl.shut
			f.mu.Unlock()
			if replaced {
				continue // closed by a refusal, or listening anew
			}
			return nil, err
		}
		if f.hold(done, c) {
			return c, nil
		}
	}
}

// hold keeps a connection accepted while the server queues, and resets it
// if the server starts refusing meanwhile, as the kernel resets the
// backlog of a closed listener. It tells whether to serve the connection.
func (f *faults) hold(done <-chan struct{}, c net.Conn) bool {
	for {
		f.mu.Lock()
		mode, ch := f.mode, f.changedLocked()
		f.mu.Unlock()
		switch mode {
		case Accepting:
			return true
		case Refusing:
			resetRaw(c)
			return false
		}
		select {
		case <-ch:
		case <-done:
			c.Close()
			return false
		}
	}
}

func resetRaw(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// setAccept moves every listener to mode: closed for Refusing, open
// (listening again on the same address if need be) otherwise.
func (f *faults) setAccept(mode AcceptMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, fl := range f.listeners {
		switch {
		case mode == Refusing && fl.l != nil:
			fl.l.Close()
			fl.l = nil
		case mode != Refusing && fl.l == nil:
			l, err := net.Listen("tcp", fl.addr)
			if err != nil {
				errs = append(errs, fmt.Errorf("listening again on %s: %w", fl.addr, err))
				continue
			}
			fl.l = l
		}
	}
	f.mode = mode
	f.notifyLocked()
	return errors.Join(errs...)
}

func (f *faults) setStall(until int64) {
	f.stallUntil.Store(until)
	f.mu.Lock()
	f.notifyLocked()
	f.mu.Unlock()
}

// wrap gives an accepted connection the write side of a stall.
func (f *faults) wrap(c net.Conn) net.Conn {
	return &faultConn{Conn: c, f: f, closed: make(chan struct{}), dlSet: make(chan struct{}, 1)}
}

// NetConn is the socket under the fault layer, for the trace recorder to
// ask the system about (trace.Event.TCP), as crypto/tls's Conn offers.
func (c *faultConn) NetConn() net.Conn { return c.Conn }

// faultConn holds writes while the server stalls: the server still reads
// what agents send, and answers nothing until the stall ends. Deadlines
// keep their meaning, so the server's own timeouts still end a wait.
// It sits under the trace recorder, so a held reply shows in the trace
// when it goes on the wire, not when it was computed.
type faultConn struct {
	net.Conn
	f         *faults
	closed    chan struct{}
	closeOnce sync.Once
	wdl       atomic.Int64  // write deadline, Unix nanoseconds; 0: none
	dlSet     chan struct{} // a deadline changed while a write waits
}

func (c *faultConn) Write(p []byte) (int, error) {
	if until := c.f.stallUntil.Load(); until != 0 && time.Now().UnixNano() < until {
		if err := c.waitStall(); err != nil {
			return 0, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
		}
	}
	return c.Conn.Write(p)
}

func (c *faultConn) waitStall() error {
	for {
		c.f.mu.Lock()
		ch := c.f.changedLocked()
		c.f.mu.Unlock()
		now := time.Now().UnixNano()
		until := c.f.stallUntil.Load()
		if until == 0 || now >= until {
			return nil
		}
		wait := until - now
		if dl := c.wdl.Load(); dl != 0 {
			if now >= dl {
				return os.ErrDeadlineExceeded
			}
			wait = min(wait, dl-now)
		}
		t := time.NewTimer(time.Duration(wait))
		select {
		case <-t.C:
		case <-ch:
		case <-c.dlSet:
		case <-c.closed:
			t.Stop()
			return net.ErrClosed
		}
		t.Stop()
	}
}

func (c *faultConn) setWDL(t time.Time) {
	var v int64
	if !t.IsZero() {
		v = max(t.UnixNano(), 1)
	}
	c.wdl.Store(v)
	select {
	case c.dlSet <- struct{}{}:
	default:
	}
}

func (c *faultConn) SetDeadline(t time.Time) error {
	c.setWDL(t)
	return c.Conn.SetDeadline(t)
}

func (c *faultConn) SetWriteDeadline(t time.Time) error {
	c.setWDL(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *faultConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// SetLinger and CloseWrite pass through, so that the trace recorder's
// Reset and the server's drainClose still reach the TCP socket.
func (c *faultConn) SetLinger(sec int) error {
	tc, ok := c.Conn.(*net.TCPConn)
	if !ok {
		return errors.New("not a TCP connection")
	}
	return tc.SetLinger(sec)
}

func (c *faultConn) CloseWrite() error {
	tc, ok := c.Conn.(*net.TCPConn)
	if !ok {
		return errors.New("not a TCP connection")
	}
	return tc.CloseWrite()
}

// rejectHandshake is tli's Reject hook.
func (s *Server) rejectHandshake(string) (int, string) {
	if code := s.faults.reject.Load(); code != 0 {
		return int(code), "the server was told to reject handshakes (fault injection)"
	}
	return 0, ""
}

// ResetConnections ends every open agent connection with an RST
// (SO_LINGER 0, then close), as a crashed network device or a server
// restart would. The server goes on accepting. It returns how many it reset.
func (s *Server) ResetConnections() int {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.active))
	for c := range s.active {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	type resetter interface{ Reset() error }
	for _, c := range conns {
		if r, ok := c.(resetter); ok {
			r.Reset()
		} else {
			c.Close()
		}
	}
	return len(conns)
}

// Apply carries out a fault action smps owns (fault.Action.CheckServer);
// the log says what was done, for the learner reading the server's log
// next to the agent's.
func (s *Server) Apply(a fault.Action) (fault.Result, error) {
	log := s.cfg.Log
	f := &s.faults
	var res fault.Result
	if err := a.CheckServer(); err != nil {
		return res, err
	}
	switch a.Kind {
	case fault.StopAccepting:
		mode := Refusing
		if a.Queue {
			mode = Queueing
		}
		if err := f.setAccept(mode); err != nil {
			return res, err
		}
		res.Done = "stopped accepting connections: " + mode.String()
	case fault.Reset:
		res.Reset = s.ResetConnections()
		res.Done = fmt.Sprintf("reset %d connections", res.Reset)
	case fault.Stall:
		f.setStall(time.Now().Add(a.For).UnixNano())
		res.Done = fmt.Sprintf("stalling every reply for %s", a.For)
	case fault.RejectHandshakes:
		code := a.RejectCode()
		f.reject.Store(int32(code))
		res.Done = fmt.Sprintf("rejecting every handshake with %d %s", code, tli.CodeText(code))
	case fault.SlowDirectory:
		lat := a.Latency
		s.dirLatency.Store(&lat)
		res.Done = fmt.Sprintf("user directory lookups take %s each", lat)
	case fault.FastDirectory:
		s.dirLatency.Store(nil)
		res.Done = fmt.Sprintf("user directory lookups take the store's %s each", s.cfg.Store.Directory().Latency)
	case fault.FlushRequests:
		res.Flushed = s.FlushRequests()
		res.Done = fmt.Sprintf("flushed %d queued requests", res.Flushed)
	case fault.Resume:
		f.reject.Store(0)
		f.setStall(0)
		s.dirLatency.Store(nil)
		if err := f.setAccept(Accepting); err != nil {
			log.Error().Err(err).Msg("Fault injection: could not resume accepting")
			return res, err
		}
		res.Done = "resumed: accepting, replying, handshaking and looking users up normally"
	}
	if a.Kind != fault.FlushRequests { // an administrator's command, logged as such by FlushRequests
		log.Warn().Str("fault", string(a.Kind)).Msgf("Fault injection: %s", res.Done)
	}
	res.State = s.FaultState()
	return res, nil
}

// FaultState reports the faults in force.
func (s *Server) FaultState() fault.State {
	f := &s.faults
	st := fault.State{RejectCode: int(f.reject.Load()), Conns: s.Conns(), Listening: []string{}}
	if p := s.dirLatency.Load(); p != nil {
		st.DirectoryLatency = *p
	}
	if until := f.stallUntil.Load(); until != 0 && time.Now().UnixNano() < until {
		t := time.Unix(0, until)
		st.StallUntil = &t
	}
	f.mu.Lock()
	st.Accept = f.mode.String()
	for _, fl := range f.listeners {
		if fl.l != nil {
			st.Listening = append(st.Listening, fl.addr)
		} else {
			st.Closed = append(st.Closed, fl.addr)
		}
	}
	f.mu.Unlock()
	return st
}
