package trace

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// closeHook is a TCP connection that runs a hook right after its socket is
// closed: the moment another goroutine's Close can slip in.
type closeHook struct {
	*net.TCPConn
	after func()
}

func (c *closeHook) Close() error {
	err := c.TCPConn.Close()
	if c.after != nil {
		c.after()
	}
	return err
}

// TestResetRacingClose closes a connection from another goroutine just as
// Reset has closed its socket, as a Policy Server's handler closes a
// connection that fault injection resets: the trace must record the RST
// that the peer got, not a FIN.
func TestResetRacingClose(t *testing.T) {
	l := listen(t)
	ch := acceptOne(t, l, nil, "")
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := get(t, ch)
	w := &lineWriter{}
	hook := &closeHook{TCPConn: raw.(*net.TCPConn)}
	c := NewRecorder(w, Options{}).Client(hook, "")
	closed := make(chan struct{})
	hook.after = func() {
		hook.after = nil
		go func() {
			defer close(closed)
			c.Close()
		}()
		// The racing Close either finishes now (and would record its
		// FIN first) or waits for Reset to record the RST.
		select {
		case <-closed:
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	<-closed
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the peer's read: %v, want ECONNRESET", err)
	}
	if got, want := ops(w.events(t)), []string{OpConnect, OpReset}; !equal(got, want) {
		t.Errorf("events %q, want %q: the trace must show the RST that went out", got, want)
	}
}
