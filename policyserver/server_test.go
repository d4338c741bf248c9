package policyserver

// These tests run a real Server on loopback and talk to it the way agents
// (and broken or hostile clients) do. Helper names carry "live" so that they
// do not collide with the store tests of the same package.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	liveTrustedHost = "trust_wa1"
	liveServerName  = "smps1.shared.lab"
	// liveWait bounds waits that normally end in milliseconds: long enough
	// for a loaded machine under -race, short enough that a hang fails.
	liveWait = 5 * time.Second
)

// The vendor's wording, written out rather than taken from tli.CodeText so
// that a change of wording there shows up here.
var liveVendorText = map[int]string{
	tli.CodeNoClientHello:   "No client hello",
	tli.CodeBadVersion:      "Bad version",
	tli.CodeSecretIncorrect: "Shared secret incorrect for this client",
	tli.CodeNoClientAck:     "No client ack",
	tli.CodeBadEncryption:   "Bad encryption",
}

// liveLog is the server's log. The server logs from one goroutine per
// connection, hence the lock; zerolog writes each event with one Write.
type liveLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *liveLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *liveLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type liveEntry map[string]any

func (e liveEntry) str(k string) string { s, _ := e[k].(string); return s }

func (e liveEntry) num(k string) int {
	f, ok := e[k].(float64)
	if !ok {
		return -1
	}
	return int(f)
}

func (l *liveLog) entries(t testing.TB) []liveEntry {
	t.Helper()
	var out []liveEntry
	for line := range strings.SplitSeq(l.String(), "\n") {
		if line == "" {
			continue
		}
		var e liveEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// find returns the entries whose message starts with msg; peer "" matches
// every peer.
func (l *liveLog) find(t testing.TB, peer, msg string) []liveEntry {
	t.Helper()
	var out []liveEntry
	for _, e := range l.entries(t) {
		if (peer == "" || e.str("peer") == peer) && strings.HasPrefix(e.str("message"), msg) {
			out = append(out, e)
		}
	}
	return out
}

type liveServer struct {
	srv    *Server
	store  *Store
	addr   string
	ln     net.Listener
	log    *liveLog
	secret []byte // liveTrustedHost's

	cancel   context.CancelFunc
	done     chan struct{} // closed when Serve has returned
	serveErr error
	// serveErrOK is set by a test that makes Serve fail on purpose.
	serveErrOK bool
}

// runLiveServer serves the seed store, with liveTrustedHost registered as
// smreghost would, on a free loopback port until the test ends.
func runLiveServer(t *testing.T, tune func(*Config)) *liveServer {
	t.Helper()
	st, err := SeedStore()
	if err != nil {
		t.Fatalf("SeedStore: %v", err)
	}
	th, err := st.RegisterHost(t.Context(), liveTrustedHost, "hco.smps1", false, nil)
	if err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}
	lg := &liveLog{}
	cfg := Config{Name: liveServerName, Store: st, Log: zerolog.New(lg)}
	if tune != nil {
		tune(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ls := &liveServer{srv: srv, store: st, addr: ln.Addr().String(), ln: ln, log: lg, secret: th.Secret, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ls.done)
		ls.serveErr = srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		if err := ls.stop(); err != nil && !ls.serveErrOK {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", lg)
		}
	})
	return ls
}

// stop cancels Serve and waits for it to return.
func (ls *liveServer) stop() error {
	ls.cancel()
	select {
	case <-ls.done:
		return ls.serveErr
	case <-time.After(2 * liveWait):
		return fmt.Errorf("Serve has not returned %s after the cancel", 2*liveWait)
	}
}

func (ls *liveServer) agentConfig() tli.ClientConfig {
	return tli.ClientConfig{TrustedHost: liveTrustedHost, Secret: ls.secret, HandshakeTimeout: liveWait}
}

// tryDial may run on any goroutine: it reports instead of failing the test.
func (ls *liveServer) tryDial(cfg tli.ClientConfig) (*tli.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), liveWait)
	defer cancel()
	return tli.Dial(ctx, ls.addr, cfg)
}

func (ls *liveServer) dialWith(t testing.TB, cfg tli.ClientConfig) *tli.Client {
	t.Helper()
	c, err := ls.tryDial(cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (ls *liveServer) dial(t testing.TB) *tli.Client { return ls.dialWith(t, ls.agentConfig()) }

func (ls *liveServer) dialAdmin(t testing.TB) *tli.Client {
	return ls.dialWith(t, tli.ClientConfig{Admin: true, TrustedHost: "smreghost", HandshakeTimeout: liveWait})
}

func (ls *liveServer) rawDial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ls.addr, liveWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitLog waits for an entry of peer ("" for any) whose message starts
// with msg; the server may log after the client has seen the effect.
func (ls *liveServer) waitLog(t testing.TB, peer, msg string) liveEntry {
	t.Helper()
	var got []liveEntry
	testsupport.WaitFor(t, liveWait, fmt.Sprintf("log %q of peer %q", msg, peer), func() bool {
		got = ls.log.find(t, peer, msg)
		return len(got) > 0
	})
	return got[0]
}

func liveDo(c *tli.Client, req *tlipb.Request) (*tlipb.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), liveWait)
	defer cancel()
	return c.Do(ctx, req)
}

// livePing is the cheapest request that reaches the store: "/" is in the
// seed's unprotected realm.
func livePing() *tlipb.Request {
	return &tlipb.Request{Body: &tlipb.Request_IsProtected{IsProtected: &tlipb.IsProtectedRequest{AgentName: "wa1", Resource: "/", Action: "GET"}}}
}

func livePingErr(c *tli.Client) error {
	resp, err := liveDo(c, livePing())
	if err != nil {
		return err
	}
	if resp.Result != tlipb.Result_NO {
		return fmt.Errorf("IsProtected / = %v %q, want NO", resp.Result, resp.Message)
	}
	return nil
}

func mustPing(t testing.TB, c *tli.Client, who string) {
	t.Helper()
	if err := livePingErr(c); err != nil {
		t.Fatalf("%s: %v", who, err)
	}
}

// waitClosed reads until the server ends the connection. Data that comes
// first (a handshake error frame on shutdown, say) is not the point here.
func waitClosed(t testing.TB, c net.Conn, who string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(liveWait))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if tli.IsTimeout(err) {
			t.Fatalf("%s: the server did not close the connection within %s", who, liveWait)
		}
		return
	}
}

// readHandshakeError reads the clear-text error frame the server sends
// before closing a failed handshake.
func readHandshakeError(t testing.TB, c net.Conn) *tlipb.HandshakeError {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(liveWait))
	typ, payload, err := tli.ReadFrame(c, nil)
	if err != nil {
		t.Fatalf("waiting for the handshake error frame: %v", err)
	}
	if typ != tli.FrameHandshakeError {
		t.Fatalf("got frame type %d, want a HandshakeError (%d)", typ, tli.FrameHandshakeError)
	}
	he := &tlipb.HandshakeError{}
	if err := proto.Unmarshal(payload, he); err != nil {
		t.Fatalf("handshake error frame: %v", err)
	}
	return he
}

func liveFrame(t testing.TB, typ byte, payload []byte) []byte {
	t.Helper()
	b, err := tli.AppendFrame(nil, typ, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func liveHello(t testing.TB, h *tlipb.ClientHello) []byte {
	t.Helper()
	b, err := proto.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return liveFrame(t, tli.FrameClientHello, b)
}

// liveHeader is a frame header alone, announcing n bytes.
func liveHeader(n uint32, typ byte) []byte {
	return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), typ}
}

// tapConn keeps a copy of every Write and lets a test change or drop one
// on its way out. tli writes each handshake frame and each request with a
// single Write, so write i is frame i: 0 ClientHello, 1 ClientConfirm,
// then the requests.
type tapConn struct {
	net.Conn
	edit func(i int, p []byte) []byte // nil result: the write is swallowed

	mu   sync.Mutex
	sent [][]byte
}

func (c *tapConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	i := len(c.sent)
	c.sent = append(c.sent, bytes.Clone(p))
	c.mu.Unlock()
	out := p
	if c.edit != nil {
		out = c.edit(i, bytes.Clone(p))
	}
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *tapConn) write(i int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent[i]
}

// handshakeVia runs the real client handshake over a tapped socket, so that
// a test can break one step of an otherwise correct agent.
func (ls *liveServer) handshakeVia(t testing.TB, cfg tli.ClientConfig, edit func(int, []byte) []byte) (*tli.Client, *tapConn, error) {
	t.Helper()
	tap := &tapConn{Conn: ls.rawDial(t), edit: edit}
	var rec *trace.Recorder // nil: records nothing
	ctx, cancel := context.WithTimeout(context.Background(), liveWait)
	defer cancel()
	c, err := tli.ClientHandshake(ctx, rec.Client(tap, ""), cfg)
	return c, tap, err
}

// assertHandshakeLogged checks the two lines the vendor's server writes for
// a failed handshake, in order, for this peer only.
func (ls *liveServer) assertHandshakeLogged(t *testing.T, peer string, code int, why string) {
	t.Helper()
	failed := "Failed handshake with " + peer
	ls.waitLog(t, peer, failed)
	var lines []liveEntry
	for _, e := range ls.log.entries(t) {
		if e.str("peer") == peer {
			lines = append(lines, e)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("want 2 log lines for %s, got %v", peer, lines)
	}
	he, fh := lines[0], lines[1]
	if want := "Handshake error: " + liveVendorText[code]; he.str("message") != want || he.num("code") != code || he.str("level") != "warn" {
		t.Errorf("first line %v, want a warning %q with code %d", he, want, code)
	}
	if got := he.str("detail") + " | " + he.str("cause"); !strings.Contains(got, why) {
		t.Errorf("detail | cause = %q, want it to say %q", got, why)
	}
	if fh.str("message") != failed || fh.str("level") != "warn" {
		t.Errorf("second line %v, want a warning %q", fh, failed)
	}
}

func TestHandshakeBadInput(t *testing.T) {
	nonce := bytes.Repeat([]byte{7}, 16)
	// raw sends data (if any) and waits for the server's answer.
	raw := func(data func(t *testing.T) []byte) func(*testing.T, *liveServer) (string, int) {
		return func(t *testing.T, ls *liveServer) (string, int) {
			c := ls.rawDial(t)
			if data != nil {
				if _, err := c.Write(data(t)); err != nil {
					t.Fatal(err)
				}
			}
			he := readHandshakeError(t, c)
			if he.Message != liveVendorText[int(he.Code)] {
				t.Errorf("error frame says %q for code %d", he.Message, he.Code)
			}
			waitClosed(t, c, "bad client")
			return c.LocalAddr().String(), int(he.Code)
		}
	}
	// refused is an agent whose hello the server turns down: it sees the
	// error in place of the ServerHello.
	refused := func(cfg func(*liveServer) tli.ClientConfig) func(*testing.T, *liveServer) (string, int) {
		return func(t *testing.T, ls *liveServer) (string, int) {
			_, tap, err := ls.handshakeVia(t, cfg(ls), nil)
			var he *tli.HandshakeError
			if !errors.As(err, &he) {
				t.Fatalf("handshake: %v, want a HandshakeError", err)
			}
			if he.Message != liveVendorText[he.Code] {
				t.Errorf("client got %q for code %d", he.Message, he.Code)
			}
			waitClosed(t, tap.Conn, "refused agent")
			return tap.Conn.LocalAddr().String(), he.Code
		}
	}
	// confirmBroken is a correct agent whose ClientConfirm is edited. The
	// client does not wait for an answer to its confirm, so its handshake
	// "succeeds"; the server's verdict is on the socket.
	confirmBroken := func(edit func([]byte) []byte) func(*testing.T, *liveServer) (string, int) {
		return func(t *testing.T, ls *liveServer) (string, int) {
			_, tap, err := ls.handshakeVia(t, ls.agentConfig(), func(i int, p []byte) []byte {
				if i == 1 {
					return edit(p)
				}
				return p
			})
			if err != nil {
				t.Fatalf("client side of the handshake: %v", err)
			}
			he := readHandshakeError(t, tap.Conn)
			waitClosed(t, tap.Conn, "agent with a broken confirm")
			return tap.Conn.LocalAddr().String(), int(he.Code)
		}
	}

	tests := []struct {
		name   string
		code   int
		why    string // in the logged detail or cause
		client func(*testing.T, *liveServer) (peer string, code int)
	}{
		{"garbage: unknown frame type", tli.CodeNoClientHello, "first frame is unknown(119)",
			raw(func(t *testing.T) []byte { return liveFrame(t, 0x77, []byte("abc")) })},
		{"garbage: an HTTP request", tli.CodeNoClientHello, "larger than 1 MiB",
			raw(func(*testing.T) []byte { return []byte("GET / HTTP/1.1\r\nHost: smps1.shared.lab\r\n\r\n") })},
		{"garbage: hello that is not protobuf", tli.CodeNoClientHello, "unreadable client hello",
			raw(func(t *testing.T) []byte { return liveFrame(t, tli.FrameClientHello, bytes.Repeat([]byte{0xff}, 8)) })},
		{"hello with a short nonce", tli.CodeNoClientHello, "client nonce too short",
			raw(func(t *testing.T) []byte {
				return liveHello(t, &tlipb.ClientHello{Version: tli.Version, TrustedHost: liveTrustedHost, ClientNonce: nonce[:4]})
			})},
		{"hello with an unknown mode", tli.CodeNoClientHello, "unknown mode 7",
			raw(func(t *testing.T) []byte {
				return liveHello(t, &tlipb.ClientHello{Version: tli.Version, Mode: 7, TrustedHost: liveTrustedHost, ClientNonce: nonce})
			})},
		{"admin hello with a bad key", tli.CodeNoClientHello, "bad admin key",
			raw(func(t *testing.T) []byte {
				return liveHello(t, &tlipb.ClientHello{Version: tli.Version, Mode: tlipb.Mode_MODE_ADMIN, ClientNonce: nonce, EcdhPublic: []byte{1, 2, 3}})
			})},
		// Cut inside the frame: the server waits for the rest until the
		// handshake deadline, then gives up.
		{"truncated frame then silence", tli.CodeNoClientHello, "timeout",
			raw(func(t *testing.T) []byte {
				return liveHello(t, &tlipb.ClientHello{Version: tli.Version, TrustedHost: liveTrustedHost, ClientNonce: nonce})[:10]
			})},
		// The cause names the length, not the deadline: the server refused
		// on the header alone, without reading or allocating the payload.
		{"frame over 1 MiB", tli.CodeNoClientHello, "frame length 1048577: frame larger than 1 MiB",
			raw(func(*testing.T) []byte { return liveHeader(tli.MaxFrame+1, tli.FrameClientHello) })},
		{"connects and sends nothing", tli.CodeNoClientHello, "timeout", raw(nil)},
		{"wrong version", tli.CodeBadVersion, "client version 2",
			raw(func(t *testing.T) []byte {
				return liveHello(t, &tlipb.ClientHello{Version: 2, TrustedHost: liveTrustedHost, ClientNonce: nonce})
			})},
		{"wrong secret", tli.CodeSecretIncorrect, `wrong shared secret for trusted host "trust_wa1"`,
			refused(func(*liveServer) tli.ClientConfig {
				return tli.ClientConfig{TrustedHost: liveTrustedHost, Secret: []byte("not the secret smreghost wrote"), HandshakeTimeout: liveWait}
			})},
		{"unknown trusted host", tli.CodeSecretIncorrect, `unknown trusted host "trust_nobody"`,
			refused(func(ls *liveServer) tli.ClientConfig {
				return tli.ClientConfig{TrustedHost: "trust_nobody", Secret: ls.secret, HandshakeTimeout: liveWait}
			})},
		{"hello then no confirm", tli.CodeNoClientAck, "timeout",
			confirmBroken(func([]byte) []byte { return nil })},
		{"request in place of the confirm", tli.CodeNoClientAck, "expected ClientConfirm, got Request",
			confirmBroken(func(p []byte) []byte { p[4] = tli.FrameRequest; return p })},
		{"confirm that does not decrypt", tli.CodeBadEncryption, "client confirm does not open",
			confirmBroken(func(p []byte) []byte { p[len(p)-1] ^= 1; return p })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ls := runLiveServer(t, func(c *Config) { c.HandshakeTimeout = 300 * time.Millisecond })
			before := ls.dial(t)
			mustPing(t, before, "agent connected before")

			peer, code := tc.client(t, ls)
			if code != tc.code {
				t.Errorf("bad client got code %d, want %d", code, tc.code)
			}
			ls.assertHandshakeLogged(t, peer, tc.code, tc.why)
			if n := ls.srv.Stats().HandshakeFails.Load(); n != 1 {
				t.Errorf("Stats().HandshakeFails = %d, want 1", n)
			}

			mustPing(t, before, "agent connected before the bad client")
			mustPing(t, ls.dial(t), "agent connected after the bad client")
		})
	}
}

// needDescriptors skips when the process cannot open n more files. It
// probes rather than reading the limit: that works on every platform and
// counts the descriptors already open.
func needDescriptors(t *testing.T, n int) {
	t.Helper()
	files := make([]*os.File, 0, n)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for range n {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Skipf("needs %d free file descriptors, could open %d (%v); raise ulimit -n", n, len(files), err)
		}
		files = append(files, f)
	}
}

func TestConnectionLimit(t *testing.T) {
	const limit, total = 256, 300
	const rejectedMsg = "Connection request rejected. Connection limit of 256 exceeded"
	// Both ends of every connection live in this process.
	needDescriptors(t, 2*total+64)
	ls := runLiveServer(t, func(c *Config) { c.MaxConns = limit })

	clients := make([]*tli.Client, total)
	errs := make([]error, total)
	var wg sync.WaitGroup
	for i := range total {
		wg.Go(func() { clients[i], errs[i] = ls.tryDial(ls.agentConfig()) })
	}
	wg.Wait()
	var good []*tli.Client
	for i, c := range clients {
		if errs[i] != nil {
			// The server closes a connection over the limit at accept,
			// before any handshake: the agent sees the socket close
			// where the ServerHello should be, not a handshake error.
			var he *tli.HandshakeError
			if errors.As(errs[i], &he) {
				t.Errorf("agent %d: %v, want the connection closed", i, errs[i])
			}
			continue
		}
		t.Cleanup(func() { c.Close() })
		good = append(good, c)
	}
	if len(good) != limit {
		t.Fatalf("%d agents connected, want %d", len(good), limit)
	}

	// Every agent that got in can use its connection, all at once.
	for i, c := range good {
		wg.Go(func() {
			if err := livePingErr(c); err != nil {
				t.Errorf("agent %d within the limit: %v", i, err)
			}
		})
	}
	wg.Wait()

	if n := len(ls.log.find(t, "", rejectedMsg)); n != total-limit {
		t.Errorf("%d log lines %q, want %d", n, rejectedMsg, total-limit)
	}
	st := ls.srv.Stats()
	if r, a := st.Rejected.Load(), st.Accepted.Load(); r != total-limit || a != limit {
		t.Errorf("Stats: Rejected %d, Accepted %d; want %d, %d", r, a, total-limit, limit)
	}
	if n := ls.srv.Conns(); n != limit {
		t.Errorf("Conns() = %d, want %d", n, limit)
	}

	// Slots come back as agents leave.
	for _, c := range good[:10] {
		c.Close()
	}
	testsupport.WaitFor(t, liveWait, "the server to see 10 agents leave", func() bool { return ls.srv.Conns() == limit-10 })
	for i := range 10 {
		mustPing(t, ls.dial(t), fmt.Sprintf("new agent %d after 10 left", i))
	}
	if _, err := ls.tryDial(ls.agentConfig()); err == nil {
		t.Error("an agent over the limit connected after the slots were taken again")
	}
	if r := st.Rejected.Load(); r != total-limit+1 {
		t.Errorf("Stats().Rejected = %d, want %d", r, total-limit+1)
	}
	for i, c := range good[10:] {
		if err := livePingErr(c); err != nil {
			t.Fatalf("agent %d that stayed: %v", i+10, err)
		}
	}
}

func TestIdleTimeout(t *testing.T) {
	ls := runLiveServer(t, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	idle, busy := ls.dial(t), ls.dial(t)
	mustPing(t, idle, "idle agent")

	// Three idle timeouts: the busy agent's requests must each restart it.
	for end := time.Now().Add(650 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		mustPing(t, busy, "busy agent")
	}

	waitClosed(t, idle.Conn(), "idle agent")
	peer := idle.Conn().LocalAddr().String()
	e := ls.waitLog(t, peer, "Closing idle connection")
	if e.str("message") != "Closing idle connection after 200ms" {
		t.Errorf("log: %v", e)
	}
	if n := len(ls.log.find(t, busy.Conn().LocalAddr().String(), "Closing")); n != 0 {
		t.Errorf("the busy agent's connection was closed: %v", ls.log.find(t, "", "Closing"))
	}
	if n := ls.srv.Stats().IdleClosed.Load(); n != 1 {
		t.Errorf("Stats().IdleClosed = %d, want 1", n)
	}
	if err := livePingErr(idle); err == nil {
		t.Error("a request on the closed idle connection succeeded")
	}
}

func TestMaxLifetime(t *testing.T) {
	ls := runLiveServer(t, func(c *Config) { c.MaxLifetime = 300 * time.Millisecond })
	c := ls.dial(t)
	// A busy connection is never idle, yet it ends at its lifetime.
	testsupport.WaitFor(t, liveWait, "the connection to end", func() bool { return livePingErr(c) != nil })
	e := ls.waitLog(t, c.Conn().LocalAddr().String(), "Closing connection: lifetime")
	if e.str("message") != "Closing connection: lifetime of 300ms reached" {
		t.Errorf("log: %v", e)
	}
	if n := ls.srv.Stats().IdleClosed.Load(); n != 0 {
		t.Errorf("Stats().IdleClosed = %d, want 0: the lifetime is not idleness", n)
	}
}

func TestBadFrameAfterHandshake(t *testing.T) {
	tests := []struct {
		name string
		why  string // in the logged error
		// bad gives the bytes to send; tap holds what the agent sent so far.
		bad func(t *testing.T, tap *tapConn) []byte
	}{
		{"garbage: unknown frame type", "got a unknown(119) frame instead of a request",
			func(t *testing.T, _ *tapConn) []byte { return liveFrame(t, 0x77, []byte("abc")) }},
		{"garbage: an HTTP request", "frame larger than 1 MiB",
			func(*testing.T, *tapConn) []byte { return []byte("GET / HTTP/1.1\r\n\r\n") }},
		{"handshake frame again", "got a ClientHello frame instead of a request",
			func(_ *testing.T, tap *tapConn) []byte { return tap.write(0) }},
		{"request that does not decrypt", "frame failed authentication",
			func(t *testing.T, _ *tapConn) []byte {
				return liveFrame(t, tli.FrameRequest, bytes.Repeat([]byte{0x5a}, 48))
			}},
		// A frame the server opened once: the nonce counter has moved on.
		{"replayed request", "frame failed authentication",
			func(_ *testing.T, tap *tapConn) []byte { return tap.write(2) }},
		{"request over 1 MiB", "frame length 1048577: frame larger than 1 MiB",
			func(*testing.T, *tapConn) []byte { return liveHeader(tli.MaxFrame+1, tli.FrameRequest) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ls := runLiveServer(t, nil)
			other := ls.dial(t)
			victim, tap, err := ls.handshakeVia(t, ls.agentConfig(), nil)
			if err != nil {
				t.Fatal(err)
			}
			mustPing(t, victim, "agent before its bad frame")
			mustPing(t, other, "other agent")

			if _, err := tap.Conn.Write(tc.bad(t, tap)); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, tap.Conn, "agent that sent a bad frame")
			e := ls.waitLog(t, tap.Conn.LocalAddr().String(), "Closing connection after a bad request")
			if !strings.Contains(e.str("error"), tc.why) || e.str("level") != "warn" {
				t.Errorf("log %v, want a warning whose error says %q", e, tc.why)
			}

			mustPing(t, other, "other agent after the bad frame")
			mustPing(t, ls.dial(t), "new agent after the bad frame")
			if n := ls.srv.Conns(); n != 2 {
				t.Errorf("Conns() = %d, want 2", n)
			}
		})
	}
}

func TestShutdownClosesEveryConnection(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	// Default timeouts (10 s handshake, 10 min idle): only the cancel can
	// end these connections within the test.
	ls := runLiveServer(t, nil)
	var conns []net.Conn
	for range 3 {
		c := ls.dial(t)
		mustPing(t, c, "agent")
		conns = append(conns, c.Conn())
	}
	admin := ls.dialAdmin(t)
	// Any answer (this one is a refusal) shows the session is past its
	// handshake, in the request loop like the agents.
	if _, err := liveDo(admin, &tlipb.Request{Body: &tlipb.Request_QueueManagement{QueueManagement: &tlipb.QueueManagementRequest{}}}); err != nil {
		t.Fatalf("admin session: %v", err)
	}
	conns = append(conns, admin.Conn())
	silent := ls.rawDial(t) // waiting in the handshake
	half := ls.rawDial(t)   // inside its first frame
	if _, err := half.Write(liveHeader(100, tli.FrameClientHello)); err != nil {
		t.Fatal(err)
	}
	conns = append(conns, silent, half)
	testsupport.WaitFor(t, liveWait, "6 connections", func() bool { return ls.srv.Conns() == len(conns) })

	if err := ls.stop(); err != nil {
		t.Fatalf("Serve after the cancel: %v, want nil", err)
	}
	for i, c := range conns {
		waitClosed(t, c, fmt.Sprintf("connection %d", i))
	}
	if n := ls.srv.Conns(); n != 0 {
		t.Errorf("Conns() = %d after Serve returned", n)
	}
	// A shutdown is not the clients' fault.
	if hs := ls.log.find(t, "", "Handshake error"); len(hs) != 0 || ls.srv.Stats().HandshakeFails.Load() != 0 {
		t.Errorf("shutdown logged handshake failures: %v", hs)
	}
	if c, err := net.DialTimeout("tcp", ls.addr, liveWait); err == nil {
		c.Close()
		t.Error("the listener still accepts after Serve returned")
	}
	goleak.VerifyNone(t, leaks)
}

func TestServeReturnsAcceptError(t *testing.T) {
	ls := runLiveServer(t, nil)
	ls.serveErrOK = true
	c := ls.dial(t)
	mustPing(t, c, "agent")

	// The listener dies under the server (not a cancel): Serve must say
	// so at once, not when the last agent goes idle 10 minutes later.
	ls.ln.Close()
	select {
	case <-ls.done:
	case <-time.After(liveWait):
		t.Fatalf("Serve has not returned %s after its listener failed", liveWait)
	}
	if ls.serveErr == nil || !errors.Is(ls.serveErr, net.ErrClosed) {
		t.Errorf("Serve = %v, want the accept error", ls.serveErr)
	}
	waitClosed(t, c.Conn(), "agent of a server whose listener failed")
}
