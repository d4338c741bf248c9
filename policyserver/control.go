package policyserver

// The control API: a small HTTP service on a loopback address of its own
// (smps --control), through which a lab or a test tells the server to
// misbehave. It is not on the TLI port because the faults act on that
// port: a server that refuses connections or rejects handshakes there
// could not be told to resume there. docs/faults.md documents it. What a
// command is (paths, parameters, limits, the header, the answers) is
// package fault's, shared with the lab's client.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/agentlab/agentlab/fault"
)

// ControlHandler serves the control API: GET /faults gives the faults in
// force, POST /faults/ACTION applies one. Answers are JSON; errors are one
// line of text naming what was wrong.
func (s *Server) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	guarded := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if msg := controlRefusal(r); msg != "" {
			http.Error(w, "smps control: "+msg, http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
	mux.HandleFunc(fault.ControlPrefix, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "smps control: "+fault.ControlPrefix+" is read with GET; faults are POSTed to "+fault.ControlPrefix+"/ACTION", http.StatusMethodNotAllowed)
			return
		}
		writeJSON(w, http.StatusOK, s.FaultState())
	})
	mux.HandleFunc(fault.ControlPrefix+"/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "smps control: faults are applied with POST", http.StatusMethodNotAllowed)
			return
		}
		a, err := fault.ParseControl(r.URL.Path, r.URL.RawQuery)
		if err != nil {
			http.Error(w, "smps control: "+err.Error(), http.StatusBadRequest)
			return
		}
		res, err := s.Apply(a)
		if err != nil {
			http.Error(w, "smps control: "+err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	return guarded
}

// controlRefusal says why a request is refused, or "". The Host check
// defeats DNS rebinding: a page whose name was made to resolve to a
// loopback address still sends its own name as Host.
func controlRefusal(r *http.Request) string {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		return "no listener address to check the Host header against"
	}
	want, err := netip.ParseAddrPort(local.String())
	got, gerr := netip.ParseAddrPort(r.Host)
	if err != nil || gerr != nil || got.Addr().Unmap() != want.Addr().Unmap() || got.Port() != want.Port() {
		return fmt.Sprintf("Host %q is not this listener's address %s", r.Host, local)
	}
	if r.Method == http.MethodPost && r.Header.Get(fault.ControlHeader) != "1" {
		return fmt.Sprintf("a POST needs the header %s: 1", fault.ControlHeader)
	}
	return ""
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// ListenControl listens for the control API on a loopback address only:
// whoever reaches it can break the server.
func ListenControl(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("control address %q: %w", addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("control address %q: want a loopback IP address (127.0.0.0/8 or ::1): whoever reaches the control API can break the server", addr)
	}
	return net.Listen("tcp", addr)
}

// controlLimits bound what a control client can hold: a lab sends one short
// request at a time, so anything slower or more is a client to drop.
type controlLimits struct {
	read, write, idle time.Duration
	conns             int
}

var defaultControlLimits = controlLimits{read: 5 * time.Second, write: 5 * time.Second, idle: 30 * time.Second, conns: 16}

// ServeControl serves the control API on l until ctx ends; it returns nil
// after a cancel.
func (s *Server) ServeControl(ctx context.Context, l net.Listener) error {
	return s.serveControl(ctx, l, defaultControlLimits)
}

func (s *Server) serveControl(ctx context.Context, l net.Listener, lim controlLimits) error {
	// IdleTimeout matters most: without it a kept-alive connection that
	// sent a few bytes of its next request waits with no deadline at all.
	hs := &http.Server{Handler: s.ControlHandler(), ReadHeaderTimeout: lim.read, ReadTimeout: lim.read,
		WriteTimeout: lim.write, IdleTimeout: lim.idle}
	l = &limitListener{Listener: l, slots: make(chan struct{}, lim.conns)}
	stop := context.AfterFunc(ctx, func() { hs.Close() })
	defer stop()
	err := hs.Serve(l)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("policy server %s: control API on %s: %w", s.cfg.Name, l.Addr(), err)
}

// limitListener closes a connection at once when slots are all taken,
// rather than queueing it: a waiting connection would hold a descriptor
// just as an open one does.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			c.Close()
		}
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// CloseWrite passes through: net/http half-closes before it closes, so that
// a client reads an error answer rather than a reset.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
