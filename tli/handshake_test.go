package tli

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/trace"
)

func TestHandshakeAndRequests(t *testing.T) {
	ts := startServer(t, serverConfig(), echo)
	rec, tb := recorder("w3wp.exe")
	cfg := clientConfig()
	cfg.Recorder = rec
	cfg.Phase = trace.PhaseRequests
	c := dial(t, ts.addr, cfg)
	r := ts.result(t)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.sc.TrustedHost != trustedHost || r.sc.Admin {
		t.Errorf("server session: trusted host %q admin %v", r.sc.TrustedHost, r.sc.Admin)
	}
	if c.ServerName != "smps1.shared.lab" || c.Addr() != ts.addr || c.Err() != nil {
		t.Errorf("client: server %q addr %q err %v", c.ServerName, c.Addr(), c.Err())
	}
	if c.Conn().RemoteAddr().String() != ts.addr || r.sc.Conn().LocalAddr().String() != ts.addr {
		t.Error("Conn() is not the session's socket")
	}

	const secretPath = "/protected/very-secret-resource.html"
	for i := range 5 {
		req := isProtected(fmt.Sprintf("%s?%d", secretPath, i))
		resp, err := c.Do(context.Background(), req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if resp.Id != req.Id || resp.Id != uint64(i+1) || resp.Result != tlipb.Result_YES || resp.Message != Describe(req) {
			t.Fatalf("request %d: response %v", i, resp)
		}
	}

	// The ClientHello goes in clear and names the trusted host, as in the
	// vendor's capture; nothing after it shows the request.
	var sends []trace.Event
	for _, e := range tb.events(t) {
		if e.Op == trace.OpSend {
			sends = append(sends, e)
		}
	}
	if len(sends) < 6 {
		t.Fatalf("%d sends recorded", len(sends))
	}
	if !bytes.Contains(sends[0].Data, []byte(trustedHost)) || sends[0].Data[HeaderSize-1] != FrameClientHello {
		t.Errorf("the ClientHello does not show %q in clear: %q", trustedHost, sends[0].Data)
	}
	for _, e := range sends {
		if bytes.Contains(e.Data, []byte("very-secret")) {
			t.Errorf("a request went in clear: %q", e.Data)
		}
	}
	var notes []string
	for _, e := range tb.events(t) {
		if e.Op == trace.OpHandshake || e.Op == trace.OpRequest || e.Op == trace.OpResponse {
			notes = append(notes, e.Op+": "+e.Note)
			if e.Op == trace.OpHandshake && !strings.HasPrefix(e.Note, e.Handshake) {
				t.Errorf("handshake event %q names message %q", e.Note, e.Handshake)
			}
			if e.Phase != trace.PhaseRequests {
				t.Errorf("%s in phase %q", e.Op, e.Phase)
			}
		}
	}
	want := []string{
		"Handshake: ClientHello trusted host trust_wa1",
		"Handshake: ServerHello from smps1.shared.lab",
		"Handshake: ClientConfirm",
		"Request: IsProtected GET " + secretPath + "?0",
		"Response: IsProtected GET " + secretPath + "?0: YES",
	}
	if len(notes) < len(want) || strings.Join(notes[:len(want)], "\n") != strings.Join(want, "\n") {
		t.Errorf("client notes:\n%s\nwant first:\n%s", strings.Join(notes, "\n"), strings.Join(want, "\n"))
	}
	var sawConfirm bool
	for _, e := range ts.trace.events(t) {
		sawConfirm = sawConfirm || e.Note == "ClientConfirm: session established" && e.Handshake == trace.HandshakeClientConfirm
	}
	if !sawConfirm {
		t.Error("the server's trace does not show the session established")
	}
}

func TestHandshakeRefusals(t *testing.T) {
	const timeout = 200 * time.Millisecond
	wrongKeyConfirm := func(t *testing.T, c net.Conn, ikm []byte, proof func(k []byte, sh *tlipb.ServerHello) []byte, plain []byte) {
		h := newHello()
		c.Write(helloFrame(t, h, secret))
		sh := serverHello(t, c)
		keys, err := deriveKeys(ikm, h.ClientNonce, sh.ServerNonce)
		if err != nil {
			t.Fatal(err)
		}
		if plain == nil {
			plain, _ = proto.Marshal(&tlipb.ClientConfirm{Proof: proof(ikm, sh)})
		}
		f, err := keys.c2s.sealFrame(nil, FrameClientConfirm, plain)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(f)
	}
	tests := []struct {
		name       string
		allowAdmin bool
		attack     func(t *testing.T, c *net.TCPConn)
		code       int
		atDeadline bool // the server gives up when the handshake time is over
	}{
		{name: "garbage", code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write([]byte("GET / HTTP/1.1\r\nHost: smps1.shared.lab\r\n\r\n"))
		}},
		{name: "frame of an unknown type", code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(mustFrame(77, []byte("abc")))
		}},
		{name: "server frame from a client", code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(mustFrame(FrameServerHello, nil))
		}},
		{name: "hello that is not a protobuf", code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(mustFrame(FrameClientHello, []byte{0xff, 0xff, 0xff, 0xff}))
		}},
		{name: "truncated frame then silence", code: CodeNoClientHello, atDeadline: true, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(helloFrame(t, newHello(), secret)[:20])
		}},
		{name: "truncated header then silence", code: CodeNoClientHello, atDeadline: true, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write([]byte{0, 0})
		}},
		{name: "truncated frame then FIN", code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(helloFrame(t, newHello(), secret)[:20])
			c.CloseWrite()
		}},
		{name: "length over 1 MiB", code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(header(MaxFrame+1, FrameClientHello))
		}},
		{name: "connects and sends nothing", code: CodeNoClientHello, atDeadline: true, attack: func(t *testing.T, c *net.TCPConn) {}},
		{name: "wrong version", code: CodeBadVersion, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			h.Version = Version + 1
			c.Write(helloFrame(t, h, secret))
		}},
		{name: "no version", code: CodeBadVersion, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			h.Version = 0
			c.Write(helloFrame(t, h, secret))
		}},
		{name: "wrong secret", code: CodeSecretIncorrect, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(helloFrame(t, newHello(), []byte("not the shared secret")))
		}},
		{name: "unknown trusted host", code: CodeSecretIncorrect, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			h.TrustedHost = "trust_wa9"
			c.Write(helloFrame(t, h, secret))
		}},
		{name: "no proof", code: CodeSecretIncorrect, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(helloFrame(t, newHello(), nil))
		}},
		{name: "proof for another trusted host", code: CodeSecretIncorrect, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			h.TrustedHost = "trust_wa2"
			h.Proof = clientProof(secret, h)
			h.TrustedHost = trustedHost
			c.Write(helloFrame(t, h, nil))
		}},
		{name: "short nonce", code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			h.ClientNonce = h.ClientNonce[:15]
			c.Write(helloFrame(t, h, secret))
		}},
		{name: "nonce of 64 KiB (it would go to the key log)", allowAdmin: true, code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			priv, _ := ecdh.X25519().GenerateKey(rand.Reader)
			h := newHello()
			h.Mode, h.EcdhPublic = tlipb.Mode_MODE_ADMIN, priv.PublicKey().Bytes()
			h.ClientNonce = make([]byte, 64<<10)
			c.Write(helloFrame(t, h, nil))
		}},
		{name: "nonce one byte too long", code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			h.ClientNonce = make([]byte, maxNonce+1)
			c.Write(helloFrame(t, h, secret))
		}},
		{name: "trusted host name too long", code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			h.TrustedHost = strings.Repeat("h", MaxTrustedHostLen+1)
			c.Write(helloFrame(t, h, secret))
		}},
		{name: "unknown mode", code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			h.Mode = 9
			c.Write(helloFrame(t, h, secret))
		}},
		{name: "admin mode not allowed", code: CodeSecretIncorrect, attack: func(t *testing.T, c *net.TCPConn) {
			priv, _ := ecdh.X25519().GenerateKey(rand.Reader)
			h := newHello()
			h.Mode, h.EcdhPublic = tlipb.Mode_MODE_ADMIN, priv.PublicKey().Bytes()
			c.Write(helloFrame(t, h, nil))
		}},
		{name: "admin mode with a bad key", allowAdmin: true, code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			h.Mode, h.EcdhPublic = tlipb.Mode_MODE_ADMIN, []byte("short")
			c.Write(helloFrame(t, h, nil))
		}},
		{name: "admin mode with a low-order key", allowAdmin: true, code: CodeNoClientHello, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			h.Mode, h.EcdhPublic = tlipb.Mode_MODE_ADMIN, make([]byte, 32)
			c.Write(helloFrame(t, h, nil))
		}},
		{name: "hello then no confirm", code: CodeNoClientAck, atDeadline: true, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(helloFrame(t, newHello(), secret))
			serverHello(t, c)
		}},
		{name: "hello then FIN", code: CodeNoClientAck, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(helloFrame(t, newHello(), secret))
			serverHello(t, c)
			c.CloseWrite()
		}},
		{name: "hello then a request", code: CodeNoClientAck, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(helloFrame(t, newHello(), secret))
			serverHello(t, c)
			c.Write(mustFrame(FrameRequest, make([]byte, 40)))
		}},
		{name: "hello then a huge confirm", code: CodeNoClientAck, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(helloFrame(t, newHello(), secret))
			serverHello(t, c)
			c.Write(header(MaxFrame+1, FrameClientConfirm))
		}},
		{name: "garbage in a ClientConfirm frame", code: CodeBadEncryption, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(helloFrame(t, newHello(), secret))
			serverHello(t, c)
			junk := make([]byte, 40)
			rand.Read(junk)
			c.Write(mustFrame(FrameClientConfirm, junk))
		}},
		{name: "empty ClientConfirm frame", code: CodeBadEncryption, attack: func(t *testing.T, c *net.TCPConn) {
			c.Write(helloFrame(t, newHello(), secret))
			serverHello(t, c)
			c.Write(mustFrame(FrameClientConfirm, nil))
		}},
		{name: "confirm sealed with the wrong key", code: CodeBadEncryption, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			c.Write(helloFrame(t, h, secret))
			sh := serverHello(t, c)
			key := make([]byte, 32)
			rand.Read(key)
			block, _ := aes.NewCipher(key)
			gcm, _ := cipher.NewGCM(block)
			plain, _ := proto.Marshal(&tlipb.ClientConfirm{Proof: confirmProof(secret, h.ClientNonce, sh.ServerNonce)})
			c.Write(mustFrame(FrameClientConfirm, gcm.Seal(nil, make([]byte, 12), plain, []byte{FrameClientConfirm})))
		}},
		{name: "confirm sealed with keys from another secret", code: CodeBadEncryption, attack: func(t *testing.T, c *net.TCPConn) {
			wrongKeyConfirm(t, c, []byte("another secret"), func(k []byte, sh *tlipb.ServerHello) []byte { return []byte("x") }, nil)
		}},
		{name: "confirm with the right key and a wrong proof", code: CodeBadEncryption, attack: func(t *testing.T, c *net.TCPConn) {
			wrongKeyConfirm(t, c, secret, func(k []byte, sh *tlipb.ServerHello) []byte { return make([]byte, 32) }, nil)
		}},
		{name: "confirm with the right key and no protobuf", code: CodeBadEncryption, attack: func(t *testing.T, c *net.TCPConn) {
			wrongKeyConfirm(t, c, secret, nil, []byte{0xff, 0xff})
		}},
		{name: "confirm proof made for another session", code: CodeBadEncryption, attack: func(t *testing.T, c *net.TCPConn) {
			h := newHello()
			wrongKeyConfirm(t, c, secret, func(k []byte, sh *tlipb.ServerHello) []byte {
				return confirmProof(k, h.ClientNonce, bytes.Repeat([]byte{1}, 16))
			}, nil)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := serverConfig()
			cfg.HandshakeTimeout = timeout
			cfg.AllowAdmin = tc.allowAdmin
			ts := startServer(t, cfg, echo)
			c := rawDial(t, ts.addr)
			start := time.Now()
			tc.attack(t, c)

			if got := clientSeesRefusal(t, c); got != tc.code {
				t.Errorf("the client got code %d, want %d", got, tc.code)
			}
			he, r := ts.refusal(t)
			if he.Code != tc.code || he.Message != CodeText(tc.code) {
				t.Errorf("server refused with %d %q, want %d: %v", he.Code, he.Message, tc.code, he)
			}
			if he.Peer != c.LocalAddr().String() {
				t.Errorf("peer %q, want the client's %s", he.Peer, c.LocalAddr())
			}
			if tc.atDeadline {
				if r.elapsed < timeout-20*time.Millisecond || !IsTimeout(he.Err) {
					t.Errorf("refused after %v (%v); want the %v deadline", r.elapsed, he.Err, timeout)
				}
			} else if time.Since(start) > timeout/2 && r.elapsed >= timeout {
				t.Errorf("refused after %v: the server waited for the deadline", r.elapsed)
			}
			// The server's own trace shows the refusal.
			var noted bool
			for _, e := range ts.trace.events(t) {
				noted = noted || (e.Op == trace.OpHandshake && strings.HasPrefix(e.Note, fmt.Sprintf("refused: %d ", tc.code)) &&
					e.Handshake == trace.HandshakeError && e.Code == tc.code && e.Message == CodeText(tc.code))
			}
			if !noted {
				t.Error("the server's trace has no refusal note")
			}
		})
	}
}

func TestDialRefused(t *testing.T) {
	tests := []struct {
		name   string
		server func(*ServerConfig)
		client func(*ClientConfig)
		code   int
	}{
		{"wrong secret", nil, func(c *ClientConfig) { c.Secret = []byte("guess") }, CodeSecretIncorrect},
		{"unknown trusted host", nil, func(c *ClientConfig) { c.TrustedHost = "trust_wa9" }, CodeSecretIncorrect},
		{"server knows another secret", func(s *ServerConfig) {
			s.Secret = func(string) ([]byte, bool) { return []byte("rotated"), true }
		}, nil, CodeSecretIncorrect},
		{"server with no secret lookup", func(s *ServerConfig) { s.Secret = nil }, nil, CodeSecretIncorrect},
		{"server with an empty secret", func(s *ServerConfig) {
			s.Secret = func(string) ([]byte, bool) { return nil, true }
		}, nil, CodeSecretIncorrect},
		{"admin not allowed", nil, func(c *ClientConfig) { c.Admin, c.Secret = true, nil }, CodeSecretIncorrect},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			scfg, ccfg := serverConfig(), clientConfig()
			if tc.server != nil {
				tc.server(&scfg)
			}
			if tc.client != nil {
				tc.client(&ccfg)
			}
			ts := startServer(t, scfg, echo)
			rec, tb := recorder("w3wp.exe")
			ccfg.Recorder = rec
			c, err := Dial(context.Background(), ts.addr, ccfg)
			if err == nil {
				c.Close()
				t.Fatal("the handshake succeeded")
			}
			var he *HandshakeError
			if !errors.As(err, &he) || he.Code != tc.code || he.Peer != ts.addr {
				t.Fatalf("client error %v, want a HandshakeError %d from %s", err, tc.code, ts.addr)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(tc.code)) || !strings.Contains(err.Error(), CodeText(tc.code)) {
				t.Errorf("error text %q", err)
			}
			if sh, _ := ts.refusal(t); sh.Code != tc.code || sh.Detail == "" {
				t.Errorf("server: %v", sh)
			}
			// The client closed its socket.
			evs := tb.events(t)
			if last := evs[len(evs)-1]; last.Op != trace.OpDisconnect {
				t.Errorf("last client event %s %q, want a disconnect", last.Op, last.Note)
			}
		})
	}
}

func TestAdminSession(t *testing.T) {
	cfg := serverConfig()
	cfg.AllowAdmin = true
	cfg.Secret = nil // an admin session needs no trusted host
	ts := startServer(t, cfg, echo)
	c := dial(t, ts.addr, ClientConfig{Admin: true, TrustedHost: "smreghost"})
	r := ts.result(t)
	if r.err != nil || !r.sc.Admin {
		t.Fatalf("server: %v, admin %v", r.err, r.sc != nil && r.sc.Admin)
	}
	req := &tlipb.Request{Body: &tlipb.Request_RegisterHost{RegisterHost: &tlipb.RegisterHostRequest{TrustedHost: "trust_wa2"}}}
	resp, err := c.Do(context.Background(), req)
	if err != nil || resp.Message != "RegisterHost trust_wa2" {
		t.Fatalf("%v, %v", resp, err)
	}
}

func TestClientNeedsSecret(t *testing.T) {
	ts := startServer(t, serverConfig(), echo)
	_, err := Dial(context.Background(), ts.addr, ClientConfig{TrustedHost: trustedHost})
	if err == nil || !strings.Contains(err.Error(), "no shared secret") {
		t.Fatalf("%v", err)
	}
	// The client sent nothing and closed.
	if he, _ := ts.refusal(t); he.Code != CodeNoClientHello || !IsClosed(he.Err) {
		t.Errorf("server: %v", he)
	}
}

func TestDialNoServer(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	rec, tb := recorder("LLAWP.exe")
	cfg := clientConfig()
	cfg.Recorder = rec
	if _, err := Dial(context.Background(), addr, cfg); err == nil || !strings.Contains(err.Error(), "connect to "+addr) {
		t.Fatalf("%v", err)
	}
	if evs := tb.events(t); len(evs) != 1 || !strings.HasPrefix(evs[0].Note, "failed: ") {
		t.Errorf("trace %+v", evs)
	}
}

// rawServer accepts one connection and runs script on it.
func rawServer(t *testing.T, script func(c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		script(c)
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return l.Addr().String()
}

func readHello(c net.Conn) (*tlipb.ClientHello, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, p, err := ReadFrame(c, nil)
	if err != nil {
		return nil, err
	}
	if typ != FrameClientHello {
		return nil, fmt.Errorf("got %s", frameTypeName(typ))
	}
	h := &tlipb.ClientHello{}
	return h, proto.Unmarshal(p, h)
}

// waitClose waits until the client is gone, so the server's last frame is
// read before the script closes.
func waitClose(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, c)
}

func TestClientChecksServer(t *testing.T) {
	tests := []struct {
		name    string
		respond func(c net.Conn, h *tlipb.ClientHello)
		want    string
	}{
		{"impostor without the secret", func(c net.Conn, h *tlipb.ClientHello) {
			sh := &tlipb.ServerHello{Version: Version, ServerNonce: newNonce(), ServerName: "impostor"}
			sh.Proof = serverProof([]byte("a guess"), h, sh)
			b, _ := proto.Marshal(sh)
			WriteFrame(c, FrameServerHello, b)
		}, "bad server proof"},
		{"replayed server proof", func(c net.Conn, h *tlipb.ClientHello) {
			old := &tlipb.ClientHello{ClientNonce: bytes.Repeat([]byte{3}, 16)}
			sh := &tlipb.ServerHello{Version: Version, ServerNonce: newNonce(), ServerName: "impostor"}
			sh.Proof = serverProof(secret, old, sh)
			b, _ := proto.Marshal(sh)
			WriteFrame(c, FrameServerHello, b)
		}, "bad server proof"},
		{"wrong frame", func(c net.Conn, h *tlipb.ClientHello) {
			WriteFrame(c, FrameResponse, []byte("x"))
		}, "Response instead of ServerHello"},
		{"unreadable hello", func(c net.Conn, h *tlipb.ClientHello) {
			WriteFrame(c, FrameServerHello, []byte{0xff})
		}, "bad server hello"},
		{"unreadable refusal", func(c net.Conn, h *tlipb.ClientHello) {
			WriteFrame(c, FrameHandshakeError, []byte{0xff})
		}, "unreadable handshake error"},
		{"closes at once", func(c net.Conn, h *tlipb.ClientHello) { c.Close() }, "waiting for server hello: EOF: " + ErrClosedBeforeHello.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawServer(t, func(c net.Conn) {
				h, err := readHello(c)
				if err != nil {
					return
				}
				tc.respond(c, h)
				waitClose(c)
			})
			_, err := Dial(context.Background(), addr, clientConfig())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
		})
	}
}

// A server that ends the connection without a word (as a Policy Server at
// its connection limit does) gives an error the caller can test, which
// says where to look; a timeout or a refusal with a code does not.
func TestClientClosedBeforeHello(t *testing.T) {
	reset := func(c net.Conn) {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	tests := []struct {
		name   string
		script func(c net.Conn)
		closed bool
	}{
		{"closes before the hello arrives", func(c net.Conn) { c.Close() }, true},
		{"closes after the hello", func(c net.Conn) { readHello(c); c.Close() }, true},
		{"resets after the hello", func(c net.Conn) { readHello(c); reset(c) }, true},
		{"refuses with a code", func(c net.Conn) {
			readHello(c)
			b, _ := proto.Marshal(&tlipb.HandshakeError{Code: CodeSecretIncorrect, Message: CodeText(CodeSecretIncorrect)})
			WriteFrame(c, FrameHandshakeError, b)
			waitClose(c)
		}, false},
		{"says nothing", func(c net.Conn) { waitClose(c) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := rawServer(t, tt.script)
			cfg := clientConfig()
			cfg.HandshakeTimeout = 300 * time.Millisecond
			_, err := Dial(context.Background(), addr, cfg)
			if err == nil {
				t.Fatal("the handshake succeeded")
			}
			if errors.Is(err, ErrClosedBeforeHello) != tt.closed {
				t.Fatalf("errors.Is(%q, ErrClosedBeforeHello) = %v, want %v", err, !tt.closed, tt.closed)
			}
			if tt.closed && !strings.Contains(err.Error(), "Connection limit of N exceeded") {
				t.Errorf("%q does not say what to look for in the server's log", err)
			}
		})
	}
}

func TestClientHandshakeTimeout(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) { waitClose(c) })
	cfg := clientConfig()
	cfg.HandshakeTimeout = 150 * time.Millisecond
	start := time.Now()
	_, err := Dial(context.Background(), addr, cfg)
	if err == nil || !IsTimeout(err) {
		t.Fatalf("%v, want a timeout", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
		t.Errorf("gave up after %v", d)
	}

	// The context's deadline, when sooner, bounds the handshake too, and
	// the error says so.
	addr = rawServer(t, func(c net.Conn) { waitClose(c) })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, addr, clientConfig()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want the context's deadline", err)
	}
}

func TestClientHandshakeCancelled(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) { waitClose(c) })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := Dial(ctx, addr, clientConfig())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want the context's error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cancel took %v", d)
	}
}

func TestServerHandshakeCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	a, b := net.Pipe()
	defer b.Close()
	go waitClose(b)
	start := time.Now()
	var rec *trace.Recorder
	tc := rec.Server(a, "")
	defer tc.Close()
	// The client says nothing: only the cancellation ends the handshake
	// before its 5 s timeout.
	_, err := ServerHandshake(ctx, tc, serverConfig())
	var he *HandshakeError
	if !errors.As(err, &he) || he.Code != CodeNoClientHello {
		t.Fatalf("%v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cancel took %v", d)
	}
}

func TestServerRefusesConfirmClientSeesCode(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		h, err := readHello(c)
		if err != nil {
			return
		}
		sh := &tlipb.ServerHello{Version: Version, ServerNonce: newNonce(), ServerName: "smps1"}
		sh.Proof = serverProof(secret, h, sh)
		b, _ := proto.Marshal(sh)
		WriteFrame(c, FrameServerHello, b)
		ReadFrame(c, nil) // the confirm, refused whatever it says
		b, _ = proto.Marshal(&tlipb.HandshakeError{Code: CodeBadEncryption, Message: CodeText(CodeBadEncryption)})
		WriteFrame(c, FrameHandshakeError, b)
		waitClose(c)
	})
	c := dial(t, addr, clientConfig())
	_, err := c.Do(context.Background(), isProtected("/"))
	var he *HandshakeError
	if !errors.As(err, &he) || he.Code != CodeBadEncryption {
		t.Fatalf("%v, want the server's 3157", err)
	}
	if c.Err() == nil {
		t.Error("the client is still usable")
	}
}

func TestCodeText(t *testing.T) {
	for code, want := range map[int]string{
		3152: "No client hello", 3153: "Bad version", 3154: "Shared secret incorrect for this client",
		3155: "Failed to send server hello", 3156: "No client ack", 3157: "Bad encryption", 42: "handshake error 42",
	} {
		if got := CodeText(code); got != want {
			t.Errorf("CodeText(%d) = %q, want %q", code, got, want)
		}
	}
	e := &HandshakeError{Code: 3154, Message: CodeText(3154), Detail: "unknown trusted host", Peer: "127.0.0.1:5", Err: errors.New("cause")}
	if got := e.Error(); got != `handshake with 127.0.0.1:5 failed: 3154 Shared secret incorrect for this client (unknown trusted host): cause` {
		t.Errorf("Error() = %q", got)
	}
	if !errors.Is(e, e.Err) {
		t.Error("HandshakeError does not unwrap")
	}
}
