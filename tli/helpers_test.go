package tli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/trace"
)

const trustedHost = "trust_wa1"

var secret = []byte("an agent's shared secret, 32 b..")

func knownHosts(host string) ([]byte, bool) {
	if host == trustedHost {
		return secret, true
	}
	return nil, false
}

func serverConfig() ServerConfig {
	return ServerConfig{Name: "smps1.shared.lab", Secret: knownHosts, HandshakeTimeout: 5 * time.Second}
}

func clientConfig() ClientConfig {
	return ClientConfig{TrustedHost: trustedHost, Secret: secret, HandshakeTimeout: 5 * time.Second}
}

// traceBuffer is an in-memory trace file.
type traceBuffer struct{ testsupport.Buffer }

func (tb *traceBuffer) events(t *testing.T) []trace.Event {
	t.Helper()
	evs, err := trace.ReadEvents("trace", bytes.NewReader(tb.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func recorder(proc string) (*trace.Recorder, *traceBuffer) {
	tb := &traceBuffer{}
	return trace.NewRecorder(tb, trace.Options{Proc: proc, Payload: true}), tb
}

type serverResult struct {
	sc      *ServerConn
	err     error
	elapsed time.Duration
}

// testServer is a Policy Server reduced to its handshake: each accepted
// connection runs ServerHandshake, reports the result, then (on success)
// runs handle. Cleanup closes every connection and waits for every goroutine.
type testServer struct {
	addr    string
	results chan serverResult
	rec     *trace.Recorder
	trace   *traceBuffer

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startServer(t *testing.T, cfg ServerConfig, handle func(*ServerConn)) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec, tb := recorder("smps")
	ts := &testServer{addr: l.Addr().String(), results: make(chan serverResult, 64), rec: rec, trace: tb}
	tl := rec.Listen(l, "")
	ctx, cancel := context.WithCancel(context.Background())
	ts.wg.Go(func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			ts.mu.Lock()
			ts.conns = append(ts.conns, c)
			ts.mu.Unlock()
			ts.wg.Go(func() {
				tc := c.(*trace.Conn)
				defer tc.Close()
				start := time.Now()
				sc, err := ServerHandshake(ctx, tc, cfg)
				ts.results <- serverResult{sc, err, time.Since(start)}
				if err == nil && handle != nil {
					handle(sc)
				}
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		l.Close()
		ts.mu.Lock()
		for _, c := range ts.conns {
			c.Close()
		}
		ts.mu.Unlock()
		ts.wg.Wait()
	})
	return ts
}

func (ts *testServer) result(t *testing.T) serverResult {
	t.Helper()
	select {
	case r := <-ts.results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the server never finished a handshake")
	}
	return serverResult{}
}

// refusal waits for the server's handshake to fail and returns its code.
func (ts *testServer) refusal(t *testing.T) (*HandshakeError, serverResult) {
	t.Helper()
	r := ts.result(t)
	if r.err == nil {
		t.Fatal("the server accepted the handshake")
	}
	var he *HandshakeError
	if !errors.As(r.err, &he) {
		t.Fatalf("server error %v is not a *HandshakeError", r.err)
	}
	return he, r
}

// echo answers every request with YES and the request's description.
func echo(sc *ServerConn) {
	var req tlipb.Request
	for {
		req.Reset()
		if err := sc.ReadRequest(&req); err != nil {
			return
		}
		if err := sc.WriteResponse(&req, &tlipb.Response{Result: tlipb.Result_YES, Message: Describe(&req)}); err != nil {
			return
		}
	}
}

func dial(t *testing.T, addr string, cfg ClientConfig) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func isProtected(resource string) *tlipb.Request {
	return &tlipb.Request{Body: &tlipb.Request_IsProtected{IsProtected: &tlipb.IsProtectedRequest{
		AgentName: "wa1", Resource: resource, Action: "GET",
	}}}
}

func rawDial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func newHello() *tlipb.ClientHello {
	return &tlipb.ClientHello{Version: Version, TrustedHost: trustedHost, ClientNonce: bytes.Repeat([]byte{7}, 16)}
}

// helloFrame encodes h, with a proof made from key when key is not nil.
func helloFrame(t *testing.T, h *tlipb.ClientHello, key []byte) []byte {
	t.Helper()
	if key != nil {
		h.Proof = clientProof(key, h)
	}
	b, err := proto.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return mustFrame(FrameClientHello, b)
}

func readFrameWithin(t *testing.T, c net.Conn, d time.Duration) (byte, []byte, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	return ReadFrame(c, nil)
}

// serverHello reads the ServerHello a raw client gets for a good hello.
func serverHello(t *testing.T, c net.Conn) *tlipb.ServerHello {
	t.Helper()
	typ, p, err := readFrameWithin(t, c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if typ != FrameServerHello {
		t.Fatalf("got a %s frame, want ServerHello", frameTypeName(typ))
	}
	sh := &tlipb.ServerHello{}
	if err := proto.Unmarshal(p, sh); err != nil {
		t.Fatal(err)
	}
	return sh
}

// clientSeesRefusal reads what a raw client gets after a refused
// handshake: one clear-text error frame, then the end of the stream.
func clientSeesRefusal(t *testing.T, c net.Conn) int {
	t.Helper()
	typ, p, err := readFrameWithin(t, c, 10*time.Second)
	if err != nil {
		t.Fatalf("the client got no error frame: %v", err)
	}
	if typ != FrameHandshakeError {
		t.Fatalf("the client got a %s frame, want HandshakeError", frameTypeName(typ))
	}
	he := &tlipb.HandshakeError{}
	if err := proto.Unmarshal(p, he); err != nil {
		t.Fatal(err)
	}
	if he.Message != CodeText(int(he.Code)) {
		t.Errorf("message %q for code %d", he.Message, he.Code)
	}
	if _, _, err := readFrameWithin(t, c, 10*time.Second); err != io.EOF {
		t.Errorf("after the error frame: %v, want EOF (the server closes)", err)
	}
	return int(he.Code)
}
