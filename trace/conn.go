package trace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// Conn is a net.Conn whose reads, writes and close are recorded. Recording
// happens after each system call returns, with the byte count it returned.
type Conn struct {
	net.Conn
	rec        *Recorder
	id         string
	local      string
	remote     string
	localHost  string
	remoteHost string
	phase      atomic.Pointer[string]

	closeOnce sync.Once
	peerOnce  sync.Once
}

func (r *Recorder) wrap(c net.Conn, op, phase string, step *PoolStep) *Conn {
	tc := &Conn{Conn: c, rec: r, local: c.LocalAddr().String(), remote: c.RemoteAddr().String()}
	tc.phase.Store(&phase)
	if r != nil {
		tc.id = r.nextConnID()
		tc.localHost = r.opts.Host
		if n := r.opts.Hosts.Name(tc.local); n != "" {
			tc.localHost = n
		}
		tc.remoteHost = r.opts.Hosts.Name(tc.remote)
	}
	// Asked once, as it opens: Process Monitor's TCP Connect shows the
	// options the handshake agreed on.
	tc.NoteEvent(Event{Op: op, PoolStep: step, TCP: tcpInfoOf(c)})
	return tc
}

// Client wraps a connection this process opened (records TCP Connect).
func (r *Recorder) Client(c net.Conn, phase string) *Conn { return r.wrap(c, OpConnect, phase, nil) }

// Server wraps a connection this process accepted (records TCP Accept).
func (r *Recorder) Server(c net.Conn, phase string) *Conn { return r.wrap(c, OpAccept, phase, nil) }

// LocalDialer is the dialer of an agent on a lab host: source is that
// host's address, so that its connections leave from it and traces and
// pcapng files show the host as the seed does; "" leaves the choice to
// the system. The error names the value, for the caller to name its flag.
func LocalDialer(source string) (*net.Dialer, error) {
	d := &net.Dialer{}
	if source == "" {
		return d, nil
	}
	ip := net.ParseIP(source)
	if ip == nil {
		return nil, fmt.Errorf("%q is not an IP address", source)
	}
	d.LocalAddr = &net.TCPAddr{IP: ip}
	return d, nil
}

// Dial connects to addr, resolving lab host names through the recorder's
// hosts map only (Hosts.Resolve: a name it lacks is an *UnknownHostError,
// never a DNS query), and records the attempt. A failed attempt is recorded
// too (op TCP Connect with the error as note): a bootstrap that skips a
// server that is down should show that it tried. A name that does not
// resolve is not recorded: nothing went on the network.
func (r *Recorder) Dial(ctx context.Context, d *net.Dialer, addr, phase string) (*Conn, error) {
	return r.DialStep(ctx, d, addr, phase, nil)
}

// DialStep is Dial for a socket that a pool opens as part of step: its TCP
// Connect event (failed or not) carries the step.
func (r *Recorder) DialStep(ctx context.Context, d *net.Dialer, addr, phase string, step *PoolStep) (*Conn, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	resolved, err := r.Hosts().Resolve(addr)
	if err != nil {
		return nil, err
	}
	c, err := d.DialContext(ctx, "tcp", resolved)
	if err != nil {
		if r != nil {
			// Name the server as a successful connect would: from the
			// hosts map, else the name dialed; never an IP as a host name.
			remoteHost := r.Hosts().Name(resolved)
			if host, _, serr := net.SplitHostPort(addr); remoteHost == "" && serr == nil {
				if _, perr := netip.ParseAddr(host); perr != nil {
					remoteHost = host
				}
			}
			r.Emit(Event{Op: OpConnect, Remote: resolved, RemoteHost: remoteHost, LocalHost: r.opts.Host, Phase: phase,
				Note: "failed: " + errText(err), Error: connectError(err), Errno: errnoOf(err), PoolStep: step})
		}
		return nil, err
	}
	return r.wrap(c, OpConnect, phase, step), nil
}

// ID names the connection in trace events: "<pid>-<n>".
func (c *Conn) ID() string { return c.id }

// SetPhase labels the events that follow.
func (c *Conn) SetPhase(p string) { c.phase.Store(&p) }

// Phase is the current label.
func (c *Conn) Phase() string { return *c.phase.Load() }

// Tracing tells whether events are recorded, so callers can skip building
// notes that nobody will read.
func (c *Conn) Tracing() bool { return c.rec != nil }

// Note records a protocol-level event (Handshake, Request, Response) on this
// connection; n is the size of the message it describes.
func (c *Conn) Note(op string, n int, note string) { c.emit(op, n, note, nil) }

func (c *Conn) emit(op string, n int, note string, data []byte) {
	c.NoteEvent(Event{Op: op, Len: n, Note: note, Data: data})
}

// NoteEvent records e, an event with typed fields of its own (PoolStep,
// AgentCache), on this connection: the connection fills in which one it
// is, its ends and its phase.
func (c *Conn) NoteEvent(e Event) {
	if c.rec == nil {
		return
	}
	e.Conn, e.Local, e.Remote = c.id, c.local, c.remote
	e.LocalHost, e.RemoteHost, e.Phase = c.localHost, c.remoteHost, c.Phase()
	c.rec.Emit(e)
}

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.emit(OpReceive, n, "", c.payload(p[:n]))
	}
	if err != nil {
		c.peerClosed(err)
	}
	return n, err
}

func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.emit(OpSend, n, "", c.payload(p[:n]))
	}
	if err != nil {
		c.peerClosed(err)
	}
	return n, err
}

func (c *Conn) payload(p []byte) []byte {
	if c.rec == nil || !c.rec.opts.Payload {
		return nil
	}
	return append([]byte(nil), p...)
}

// peerClosed records the end of the stream as the peer made it: a FIN shows
// as EOF, an RST as ECONNRESET. Timeouts and our own close are not the peer's.
func (c *Conn) peerClosed(err error) {
	switch {
	case errors.Is(err, io.EOF):
		c.peerOnce.Do(func() { c.NoteEvent(Event{Op: OpDisconnect, Note: NoteClosedByPeer, Peer: true}) })
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		c.peerOnce.Do(func() { c.NoteEvent(Event{Op: OpReset, Note: NoteResetByPeer, Peer: true}) })
	}
}

// Close closes with a FIN and records TCP Disconnect.
//
// The first of Close and Reset closes the socket and records how, both
// under closeOnce: a handler's Close racing another goroutine's Reset must
// not record a FIN for the RST that went on the wire.
func (c *Conn) Close() error {
	first, err := false, error(nil)
	c.closeOnce.Do(func() {
		first = true
		err = c.Conn.Close()
		c.emit(OpDisconnect, 0, "", nil)
	})
	if !first {
		return c.Conn.Close()
	}
	return err
}

// Refuse closes a connection a Policy Server would not take, and records
// its TCP Disconnect with why (Event.Limit; the note is the vendor's
// message), so that a reader of the trace need not look for it in the
// server's log.
func (c *Conn) Refuse(limit *ConnLimit) error {
	first, err := false, error(nil)
	c.closeOnce.Do(func() {
		first = true
		err = c.Conn.Close()
		c.NoteEvent(Event{Op: OpDisconnect, Note: limit.Message, Limit: limit})
	})
	if !first {
		return c.Conn.Close()
	}
	return err
}

// Reset closes with an RST (SO_LINGER 0), as the agent does to its bootstrap
// connection, and records TCP Reset.
//
// A connection that cannot linger (not TCP, or already closed) is closed
// normally and recorded as what it was, a TCP Disconnect: a trace must not
// show an RST that never went on the wire.
func (c *Conn) Reset() error { return c.reset(nil) }

// ResetTimedOut is Reset for a socket whose request got no answer within
// the agent's RequestTimeout: its TCP Reset event carries to (Event.Timeout),
// so that a reader of the trace knows why the agent closed it.
func (c *Conn) ResetTimedOut(to *RequestTimeout) error { return c.reset(to) }

func (c *Conn) reset(to *RequestTimeout) error {
	type linger interface{ SetLinger(int) error }
	first, err := false, error(nil)
	c.closeOnce.Do(func() {
		first = true
		l, ok := c.Conn.(linger)
		if !ok {
			err = c.Conn.Close()
			c.emit(OpDisconnect, 0, "reset not supported: closed", nil)
			return
		}
		if err = l.SetLinger(0); err != nil {
			c.Conn.Close()
			c.emit(OpDisconnect, 0, "reset failed: "+errText(err), nil)
			return
		}
		err = c.Conn.Close()
		c.NoteEvent(Event{Op: OpReset, Timeout: to})
	})
	if !first {
		// Closed already: nothing is left to reset, and Close says so.
		return c.Conn.Close()
	}
	return err
}

// errnoOf names err as Event.Errno does.
func errnoOf(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "ECANCELED"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "ETIMEDOUT"
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return errnoName(en)
	}
	return ""
}

// connectError is Event.Error of a failed connect: errText without the
// system call's name, "connection refused" where errText says "connect:
// connection refused".
func connectError(err error) string {
	var sc *os.SyscallError
	if errors.As(err, &sc) && sc.Syscall == "connect" && sc.Err != nil {
		return sc.Err.Error()
	}
	return errText(err)
}

func errText(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

// Listener wraps accepted connections.
type Listener struct {
	net.Listener
	rec   *Recorder
	phase string
}

// Listen wraps l so that each accepted connection is a *Conn.
func (r *Recorder) Listen(l net.Listener, phase string) *Listener {
	return &Listener{Listener: l, rec: r, phase: phase}
}

func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.rec.Server(c, l.phase), nil
}
