package hla

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
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
