package hla

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// preforkListener hands out one connection at a time: the next Accept
// waits until the previous connection is closed. An Apache prefork child
// is one process with one thread, so while it holds a connection (keep-
// alive included) the kernel's accept queue, and the other children, take
// the rest; a goroutine per connection would hide that.
type preforkListener struct {
	net.Listener
	slot   chan struct{}
	closed chan struct{}
	once   sync.Once
}

func newPreforkListener(l net.Listener) net.Listener {
	p := &preforkListener{Listener: l, slot: make(chan struct{}, 1), closed: make(chan struct{})}
	p.slot <- struct{}{}
	return p
}

func (p *preforkListener) Accept() (net.Conn, error) {
	select {
	case <-p.slot:
	case <-p.closed:
		return nil, net.ErrClosed
	}
	c, err := p.Listener.Accept()
	if err != nil {
		p.slot <- struct{}{}
		return nil, err
	}
	return &preforkConn{Conn: c, release: func() { p.slot <- struct{}{} }}, nil
}

func (p *preforkListener) Close() error {
	p.once.Do(func() { close(p.closed) })
	return p.Listener.Close()
}

type preforkConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *preforkConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// serialize runs one request at a time. With preforkListener there is only
// one connection anyway; this also holds if a connection were ever served
// concurrently (HTTP/2), so that prefork stays one request per child.
func serialize(next http.Handler) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// countRequests calls limitReached once, when the max-th request arrives.
// That request and any after it on connections already accepted are still
// served, each with Connection: close, so that no browser is dropped: the
// child then stops accepting and drains, as Apache's does.
func countRequests(next http.Handler, max int, limitReached func()) http.Handler {
	var n atomic.Int64
	var once sync.Once
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) >= int64(max) {
			w.Header().Set("Connection", "close")
			once.Do(limitReached)
		}
		next.ServeHTTP(w, r)
	})
}

// drainGrace bounds how long a worker that stops or recycles waits for the
// requests it has accepted.
const drainGrace = 5 * time.Second

// drain is a recycling worker's exit: it stops accepting (the listening
// socket stays open in the parent and the other children, so the kernel's
// queue goes to them), turns keep-alive off so that each connection closes
// after the response it owes, and waits for its connections to close.
// Not http.Server.Shutdown: once shutting down, the server closes any
// connection it reads a request from without answering, a fresh one
// included, and the browser sees EOF on a request it cannot safely resend.
func drain(ctx context.Context, srv *http.Server, l net.Listener, served <-chan struct{}, conns *connCounter, grace time.Duration) {
	l.Close()
	<-served // Serve returns once its listener is closed
	srv.SetKeepAlivesEnabled(false)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-conns.idle():
	case <-t.C:
	case <-ctx.Done():
	}
	srv.Close()
}

// connCounter counts the connections an http.Server holds (its ConnState
// hook), for drain.
type connCounter struct {
	mu   sync.Mutex
	n    int
	zero chan struct{}
}

func (c *connCounter) track(_ net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch st {
	case http.StateNew:
		c.n++
	case http.StateClosed, http.StateHijacked:
		c.n--
		if c.n == 0 && c.zero != nil {
			close(c.zero)
			c.zero = nil
		}
	}
}

// idle is closed once no connection is open.
func (c *connCounter) idle() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	if c.zero == nil {
		c.zero = make(chan struct{})
	}
	return c.zero
}
