package tli

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/trace"
)

// An idle session, on either side, holds no read buffer: a Policy Server
// holding thousands of idle agent connections would otherwise hold 4 KiB
// for each (issue 12). The trace still shows one Receive per frame.
func TestIdleSessionHoldsNoReader(t *testing.T) {
	for _, requests := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("%d requests", requests), func(t *testing.T) {
			// idle reports, after the handshake and after each answer,
			// whether the server's session holds a reader.
			idle := make(chan bool, requests+1)
			ts := startServer(t, serverConfig(), func(sc *ServerConn) {
				idle <- sc.s.br == nil
				var req tlipb.Request
				for {
					req.Reset()
					if err := sc.ReadRequest(&req); err != nil {
						return
					}
					if err := sc.WriteResponse(&req, &tlipb.Response{Result: tlipb.Result_YES}); err != nil {
						return
					}
					idle <- sc.s.br == nil
				}
			})
			c := dial(t, ts.addr, clientConfig())
			if r := ts.result(t); r.err != nil {
				t.Fatal(r.err)
			}
			if c.s.br != nil {
				t.Error("the client holds a reader after its handshake")
			}
			for i := range requests {
				if _, err := c.Do(context.Background(), isProtected("/")); err != nil {
					t.Fatal(err)
				}
				if c.s.br != nil {
					t.Errorf("the client holds a reader after request %d", i+1)
				}
			}
			for i := range requests + 1 {
				select {
				case ok := <-idle:
					if !ok {
						t.Errorf("the server holds a reader while idle (after %d requests)", i)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the server never answered")
				}
			}
			// ClientHello, ClientConfirm, then one per request.
			if got, want := countOp(ts.trace.events(t), trace.OpReceive), 2+requests; got != want {
				t.Errorf("server trace: %d Receive events, want %d (one per frame)", got, want)
			}
		})
	}
}

// Bytes the peer sent ahead of the frame being read stay with the session:
// the reader is kept until they are read.
func TestFrameSentAheadIsKept(t *testing.T) {
	type seen struct {
		id       uint64
		buffered bool
	}
	got := make(chan seen, 2)
	ts := startServer(t, serverConfig(), func(sc *ServerConn) {
		var req tlipb.Request
		for range 2 {
			req.Reset()
			if err := sc.ReadRequest(&req); err != nil {
				t.Error(err)
				return
			}
			got <- seen{req.Id, sc.s.br != nil}
		}
	})
	c := dial(t, ts.addr, clientConfig())
	if r := ts.result(t); r.err != nil {
		t.Fatal(r.err)
	}
	// Two requests in one write, as a peer that does not wait would send.
	var both []byte
	for id := uint64(1); id <= 2; id++ {
		req := isProtected("/")
		req.Id = id
		plain, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if both, err = c.s.keys.c2s.sealFrame(both, FrameRequest, plain); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.s.conn.Write(both); err != nil {
		t.Fatal(err)
	}
	for _, want := range []seen{{1, true}, {2, false}} {
		select {
		case s := <-got:
			if s != want {
				t.Errorf("server read request %d holding a reader %v, want request %d, %v", s.id, s.buffered, want.id, want.buffered)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the server never read both requests")
		}
	}
}

// The server's idle wait, which holds no buffer, still ends at the read
// deadline (the idle timeout) and when the server closes the connection.
func TestIdleWaitEnds(t *testing.T) {
	tests := []struct {
		name    string
		end     func(sc *ServerConn)
		timeout bool
	}{
		{"read deadline", func(sc *ServerConn) { sc.Conn().SetReadDeadline(time.Now().Add(20 * time.Millisecond)) }, true},
		{"server closes", func(sc *ServerConn) { time.AfterFunc(20*time.Millisecond, func() { sc.Conn().Close() }) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errs := make(chan error, 1)
			ts := startServer(t, serverConfig(), func(sc *ServerConn) {
				tc.end(sc)
				var req tlipb.Request
				errs <- sc.ReadRequest(&req)
			})
			dial(t, ts.addr, clientConfig())
			if r := ts.result(t); r.err != nil {
				t.Fatal(r.err)
			}
			err := waitErr(t, errs)
			if IsTimeout(err) != tc.timeout || IsClosed(err) == tc.timeout {
				t.Errorf("%v: timeout %v, closed %v", err, IsTimeout(err), IsClosed(err))
			}
		})
	}
}

// waitReadable waits for the peer's bytes holding no reader, and leaves
// them to the read that follows.
func TestWaitReadable(t *testing.T) {
	type result struct {
		beforeErr, afterErr error
		heldReader          bool
		req                 uint64
	}
	res := make(chan result, 1)
	sent := make(chan struct{})
	ts := startServer(t, serverConfig(), func(sc *ServerConn) {
		var r result
		s := sc.s
		if s.raw == nil {
			t.Error("no system socket under the trace and fault layers")
		}
		// Nothing sent yet: the wait ends at the deadline.
		s.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		r.beforeErr = s.waitReadable()
		s.conn.SetReadDeadline(time.Time{})
		close(sent)
		r.afterErr = s.waitReadable()
		r.heldReader = s.br != nil
		var req tlipb.Request
		if err := sc.ReadRequest(&req); err != nil {
			t.Error(err)
		}
		r.req = req.Id
		res <- r
	})
	c := dial(t, ts.addr, clientConfig())
	if r := ts.result(t); r.err != nil {
		t.Fatal(r.err)
	}
	<-sent
	go c.Do(context.Background(), isProtected("/"))
	var r result
	select {
	case r = <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("the server never read the request")
	}
	if !IsTimeout(r.beforeErr) {
		t.Errorf("waiting with nothing sent: %v, want a timeout", r.beforeErr)
	}
	if r.afterErr != nil || r.heldReader || r.req != 1 {
		t.Errorf("after the request was sent: %v, holding a reader %v, read request %d", r.afterErr, r.heldReader, r.req)
	}
}
