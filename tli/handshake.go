package tli

import (
	"bufio"
	"context"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/trace"
)

// Version is the protocol version a ClientHello carries.
const Version = 1

// DefaultHandshakeTimeout bounds the whole handshake on both sides: a client
// that connects and says nothing must not hold a server slot for long.
const DefaultHandshakeTimeout = 10 * time.Second

// The vendor's handshake error codes.
const (
	CodeNoClientHello     = 3152
	CodeBadVersion        = 3153
	CodeSecretIncorrect   = 3154
	CodeServerHelloFailed = 3155
	CodeNoClientAck       = 3156
	CodeBadEncryption     = 3157
)

// CodeText is the vendor's wording for a handshake error code.
func CodeText(code int) string {
	switch code {
	case CodeNoClientHello:
		return "No client hello"
	case CodeBadVersion:
		return "Bad version"
	case CodeSecretIncorrect:
		return "Shared secret incorrect for this client"
	case CodeServerHelloFailed:
		return "Failed to send server hello"
	case CodeNoClientAck:
		return "No client ack"
	case CodeBadEncryption:
		return "Bad encryption"
	}
	return fmt.Sprintf("handshake error %d", code)
}

// ErrClosedBeforeHello is wrapped by a client's handshake error when the
// server ends the connection after the ClientHello without a word. A Policy
// Server does that when it is at its connection limit (it accepts, logs
// "Connection request rejected. Connection limit of N exceeded", and
// closes) or when it gives up on the client before its hello; a refusal it
// explains comes as a HandshakeError instead.
var ErrClosedBeforeHello = errors.New("the server closed the connection before its hello: " +
	"it is usually at its connection limit or refused this client; " +
	`see that Policy Server's log for "Connection limit of N exceeded" or a handshake error`)

// closedBeforeHello tells a read that found the connection ended (closed or
// reset) from one that timed out or was cancelled.
func closedBeforeHello(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// HandshakeError is a failed handshake: on the server, why it refused the
// client; on the client, what the server answered.
type HandshakeError struct {
	Code    int
	Message string // the vendor's text
	Detail  string // why, for the log (never sent to the peer)
	Peer    string // host:port of the other side
	Err     error
}

func (e *HandshakeError) Error() string {
	s := fmt.Sprintf("handshake with %s failed: %d %s", e.Peer, e.Code, e.Message)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// session is what both sides hold after a handshake.
type session struct {
	conn *trace.Conn
	// br is held only while a frame is being read or the peer has sent
	// bytes ahead of it: an idle session gives it back to readerPool, so
	// that a Policy Server holding thousands of idle agent connections
	// does not hold a read buffer for each (issue 12).
	br   *bufio.Reader
	keys sessionKeys
	rbuf []byte
	wbuf []byte
	peer string
	// raw waits for the peer's next byte without a buffer (see
	// waitReadable); nil when the socket is not a system one.
	raw      syscall.RawConn
	readable func(fd uintptr) bool // isReadable, bound once per session
	pfd      [1]unix.PollFd
	woken    bool // isReadable's second call in one wait
}

// readBufSize is a pooled reader's size: a typical frame, header and
// all, comes in one read, as one Receive in the trace.
const readBufSize = 4096

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}

func openSession(tc *trace.Conn) *session {
	s := &session{conn: tc, peer: peerName(tc)}
	if tc == nil {
		return s
	}
	// The fault layer and the recorder wrap the socket; they offer the
	// one under them as crypto/tls does, with NetConn.
	var c net.Conn = tc.Conn
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			s.raw = raw
			s.readable = s.isReadable
		}
	}
	return s
}

// reader is the session's buffered reader, taken from the pool when the
// session holds none.
func (s *session) reader() *bufio.Reader {
	if s.br == nil {
		s.br = readerPool.Get().(*bufio.Reader)
		s.br.Reset(s.conn)
	}
	return s.br
}

// release gives the reader back to the pool, unless it holds bytes the
// peer sent ahead: those belong to the session's next frame.
func (s *session) release() {
	if s.br == nil || s.br.Buffered() > 0 {
		return
	}
	s.br.Reset(nil)
	readerPool.Put(s.br)
	s.br = nil
}

// waitReadable waits, holding no buffer, until the peer has sent
// something, closed or reset the connection, or the read deadline has
// passed. The read that follows, through the traced connection, then
// finds its bytes at once, so that the trace still shows one Receive per
// frame. Without a system socket it returns at once, and the read waits
// with a buffer, as it did before.
func (s *session) waitReadable() error {
	if s.br != nil || s.raw == nil {
		return nil
	}
	s.woken = false
	if err := s.raw.Read(s.readable); err != nil {
		return &FrameError{Err: err}
	}
	return nil
}

// isReadable is waitReadable's test: false (wait for the poller) while the
// socket has nothing to read; true once it has bytes, its end, or an
// error. poll(2) only looks: a peek with recv would take a pending reset
// from the socket, and the read that follows, the one the trace records,
// would see a plain end of stream instead. Once the poller has woken the
// wait, it is trusted without a second poll(2), so that an idle wait costs
// the syscalls a plain read's did (one that finds nothing, one that reads);
// a rare spurious wake-up only means that the read waits with a buffer.
func (s *session) isReadable(fd uintptr) bool {
	if s.woken {
		return true
	}
	s.pfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	n, err := unix.Poll(s.pfd[:], 0)
	// An error (EINTR) lets the read go ahead and wait with a buffer: a
	// false here could wait for an edge the poller has already given.
	if err != nil || n > 0 {
		return true
	}
	s.woken = true // by the time isReadable is called again
	return false
}

// A nonce is 16 bytes from this package; a peer's may be longer, up to
// maxNonce.
const (
	minNonce = 16
	maxNonce = 64
)

// MaxTrustedHostLen bounds a trusted host name in a ClientHello (a host
// name's own limit).
const MaxTrustedHostLen = 255

func newNonce() []byte {
	b := make([]byte, minNonce)
	rand.Read(b)
	return b
}

func versionBytes(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return b[:]
}

func clientProof(secret []byte, h *tlipb.ClientHello) []byte {
	return mac(secret, labelClientProof, versionBytes(h.Version), []byte(h.TrustedHost), h.ClientNonce)
}

func serverProof(secret []byte, h *tlipb.ClientHello, s *tlipb.ServerHello) []byte {
	return mac(secret, labelServerProof, h.ClientNonce, s.ServerNonce, []byte(s.ServerName))
}

func confirmProof(ikm, clientNonce, serverNonce []byte) []byte {
	return mac(ikm, labelConfirm, clientNonce, serverNonce)
}

func peerName(c *trace.Conn) string {
	if c == nil {
		return ""
	}
	return c.RemoteAddr().String()
}

// deadline applies ctx's deadline, capped by d, to the connection.
func deadline(ctx context.Context, c net.Conn, d time.Duration) {
	t := time.Now().Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(t) {
		t = dl
	}
	c.SetDeadline(t)
}

// ctxCause tells whether ctx is why err happened. The socket deadline is
// ctx's deadline, and the socket's timer may fire a little before ctx's
// own: then ctx.Err() is still nil although the request ran out of time.
func ctxCause(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if dl, ok := ctx.Deadline(); ok && IsTimeout(err) && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// watch makes ctx's cancellation interrupt I/O on c, until the returned
// function is called. That function waits for a cancellation already in
// progress: otherwise its SetDeadline could land after the caller has
// cleared the deadline, and the next exchange on c would time out at once.
func watch(ctx context.Context, c net.Conn) (unwatch func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		c.SetDeadline(time.Unix(1, 0))
	})
	return func() {
		if !stop() {
			<-done
		}
	}
}

// ClientConfig is what an agent (or an admin tool) needs to open a session.
type ClientConfig struct {
	TrustedHost string
	Secret      []byte // MODE_AGENT
	Admin       bool   // MODE_ADMIN: keys from X25519, no shared secret
	// HandshakeTimeout caps the handshake; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	Recorder         *trace.Recorder
	// Dialer sets the source address, so that an agent on the lab host
	// wa1.shared.lab connects from that host's loopback address.
	Dialer *net.Dialer
	Phase  string
	// PoolStep is the step of a pool's growth this connection belongs to,
	// for its TCP Connect event; nil for any other connection.
	PoolStep *trace.PoolStep
}

// Dial connects to addr ("host:port", lab names resolved through the
// recorder's hosts map) and runs the handshake.
func Dial(ctx context.Context, addr string, cfg ClientConfig) (*Client, error) {
	tc, err := cfg.Recorder.DialStep(ctx, cfg.Dialer, addr, cfg.Phase, cfg.PoolStep)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	c, err := ClientHandshake(ctx, tc, cfg)
	if err != nil {
		tc.Close()
		return nil, err
	}
	c.addr = addr
	return c, nil
}

// ClientHandshake runs the client side of the handshake on an open connection.
func ClientHandshake(ctx context.Context, tc *trace.Conn, cfg ClientConfig) (*Client, error) {
	to := cfg.HandshakeTimeout
	if to <= 0 {
		to = DefaultHandshakeTimeout
	}
	deadline(ctx, tc, to)
	unwatch := watch(ctx, tc)
	defer func() {
		unwatch()
		tc.SetDeadline(time.Time{})
	}()

	s := openSession(tc)
	fail := func(err error) (*Client, error) {
		if cerr := ctxCause(ctx, err); cerr != nil {
			err = fmt.Errorf("%w (%w)", err, cerr)
		}
		return nil, fmt.Errorf("handshake with %s: %w", s.peer, err)
	}

	hello := &tlipb.ClientHello{Version: Version, TrustedHost: cfg.TrustedHost, ClientNonce: newNonce()}
	var priv *ecdh.PrivateKey
	if cfg.Admin {
		hello.Mode = tlipb.Mode_MODE_ADMIN
		var err error
		if priv, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
			return fail(err)
		}
		hello.EcdhPublic = priv.PublicKey().Bytes()
	} else {
		if len(cfg.Secret) == 0 {
			return fail(errors.New("no shared secret"))
		}
		hello.Proof = clientProof(cfg.Secret, hello)
	}
	hb, _ := proto.Marshal(hello)
	if err := WriteFrame(tc, FrameClientHello, hb); err != nil {
		if closedBeforeHello(err) {
			err = fmt.Errorf("%w: %w", err, ErrClosedBeforeHello)
		}
		return fail(fmt.Errorf("sending client hello: %w", err))
	}
	tc.NoteEvent(handshakeEvent(trace.HandshakeClientHello, HeaderSize+len(hb), "ClientHello trusted host "+cfg.TrustedHost))

	typ, payload, err := ReadFrame(s.reader(), nil)
	if err != nil {
		if closedBeforeHello(err) {
			err = fmt.Errorf("%w: %w", err, ErrClosedBeforeHello)
		}
		return fail(fmt.Errorf("waiting for server hello: %w", err))
	}
	if typ == FrameHandshakeError {
		return nil, handshakeRefused(s.peer, payload, tc)
	}
	if typ != FrameServerHello {
		return fail(fmt.Errorf("server sent %s instead of ServerHello", frameTypeName(typ)))
	}
	sh := &tlipb.ServerHello{}
	if err := proto.Unmarshal(payload, sh); err != nil {
		return fail(fmt.Errorf("bad server hello: %w", err))
	}
	var ikm []byte
	if cfg.Admin {
		pub, err := ecdh.X25519().NewPublicKey(sh.EcdhPublic)
		if err != nil {
			return fail(fmt.Errorf("bad server key: %w", err))
		}
		if ikm, err = priv.ECDH(pub); err != nil {
			return fail(err)
		}
	} else {
		if !hmac.Equal(sh.Proof, serverProof(cfg.Secret, hello, sh)) {
			return fail(errors.New("the server does not know this trusted host's shared secret (bad server proof)"))
		}
		ikm = cfg.Secret
	}
	tc.NoteEvent(handshakeEvent(trace.HandshakeServerHello, HeaderSize+len(payload), "ServerHello from "+sh.ServerName))
	if s.keys, err = deriveKeys(ikm, hello.ClientNonce, sh.ServerNonce); err != nil {
		return fail(err)
	}
	cb, _ := proto.Marshal(&tlipb.ClientConfirm{Proof: confirmProof(ikm, hello.ClientNonce, sh.ServerNonce)})
	frame, err := s.keys.c2s.sealFrame(nil, FrameClientConfirm, cb)
	if err != nil {
		return fail(err)
	}
	if _, err := tc.Write(frame); err != nil {
		return fail(fmt.Errorf("sending client confirm: %w", err))
	}
	tc.NoteEvent(handshakeEvent(trace.HandshakeClientConfirm, len(frame), "ClientConfirm"))
	s.release()
	return &Client{s: s, ServerName: sh.ServerName}, nil
}

// handshakeEvent is the trace's Handshake event for one message of the
// handshake (a trace.Handshake constant), n bytes on the wire; note says
// it to a person.
func handshakeEvent(msg string, n int, note string) trace.Event {
	return trace.Event{Op: trace.OpHandshake, Len: n, Handshake: msg, Note: note}
}

// refusalEvent is the Handshake event of a HandshakeError frame, sent or
// received: the vendor's code and its text.
func refusalEvent(n, code int, message string) trace.Event {
	e := handshakeEvent(trace.HandshakeError, n, fmt.Sprintf("refused: %d %s", code, message))
	e.Code, e.Message = code, message
	return e
}

func handshakeRefused(peer string, payload []byte, tc *trace.Conn) error {
	he := &tlipb.HandshakeError{}
	if err := proto.Unmarshal(payload, he); err != nil {
		return fmt.Errorf("handshake with %s: unreadable handshake error: %w", peer, err)
	}
	tc.NoteEvent(refusalEvent(HeaderSize+len(payload), int(he.Code), he.Message))
	return &HandshakeError{Code: int(he.Code), Message: he.Message, Peer: peer}
}

// ServerConfig is what a Policy Server needs to accept sessions.
type ServerConfig struct {
	Name string // this server's host name, sent in ServerHello
	// Secret gives the shared secret of a trusted host; false if unknown.
	Secret func(trustedHost string) ([]byte, bool)
	// AllowAdmin accepts MODE_ADMIN sessions (registration, management).
	AllowAdmin       bool
	HandshakeTimeout time.Duration
	// Reject is asked once a well-formed ClientHello is read; a non-zero
	// code refuses the handshake with it, whoever the client is. It lets a
	// Policy Server be told to fail handshakes (docs/faults.md) and still
	// answer with the vendor's error frame, as a real refusal does.
	Reject func(trustedHost string) (code int, detail string)
	// KeyLog, when set, receives one line per session with its keys (the
	// format is at KeyLogLabel): a debug aid that lets Wireshark read
	// every request, passwords included. Nil unless asked for.
	KeyLog io.Writer
}

// ServerHandshake runs the server side. On failure it has already sent the
// clear-text error frame; the caller logs the error and closes.
func ServerHandshake(ctx context.Context, tc *trace.Conn, cfg ServerConfig) (*ServerConn, error) {
	to := cfg.HandshakeTimeout
	if to <= 0 {
		to = DefaultHandshakeTimeout
	}
	deadline(ctx, tc, to)
	unwatch := watch(ctx, tc)
	defer func() {
		unwatch()
		tc.SetDeadline(time.Time{})
	}()

	s := openSession(tc)
	refuse := func(code int, detail string, err error) (*ServerConn, error) {
		he := &tlipb.HandshakeError{Code: int32(code), Message: CodeText(code)}
		if ctx.Err() != nil {
			// The server is shutting down: the client did nothing wrong,
			// and an error frame would read as if it had.
			return nil, &HandshakeError{Code: code, Message: he.Message, Detail: "server shutting down", Peer: s.peer, Err: ctx.Err()}
		}
		b, _ := proto.Marshal(he)
		tc.SetWriteDeadline(time.Now().Add(time.Second))
		WriteFrame(tc, FrameHandshakeError, b)
		tc.NoteEvent(refusalEvent(HeaderSize+len(b), code, he.Message))
		return nil, &HandshakeError{Code: code, Message: he.Message, Detail: detail, Peer: s.peer, Err: err}
	}

	typ, payload, err := ReadFrame(s.reader(), nil)
	if err != nil {
		return refuse(CodeNoClientHello, "no valid frame", err)
	}
	if typ != FrameClientHello {
		return refuse(CodeNoClientHello, "first frame is "+frameTypeName(typ), nil)
	}
	hello := &tlipb.ClientHello{}
	if err := proto.Unmarshal(payload, hello); err != nil {
		return refuse(CodeNoClientHello, "unreadable client hello", err)
	}
	if hello.Version != Version {
		return refuse(CodeBadVersion, fmt.Sprintf("client version %d, server speaks %d", hello.Version, Version), nil)
	}
	// Bounds before anything is logged or written: the hello is read
	// before any secret is proven, and its nonce goes to the key log and
	// its name to every log line of the session.
	switch {
	case len(hello.ClientNonce) < minNonce:
		return refuse(CodeNoClientHello, "client nonce too short", nil)
	case len(hello.ClientNonce) > maxNonce:
		return refuse(CodeNoClientHello, fmt.Sprintf("client nonce of %d bytes, at most %d", len(hello.ClientNonce), maxNonce), nil)
	case len(hello.TrustedHost) > MaxTrustedHostLen:
		return refuse(CodeNoClientHello, fmt.Sprintf("trusted host name of %d bytes, at most %d", len(hello.TrustedHost), MaxTrustedHostLen), nil)
	}
	tc.NoteEvent(handshakeEvent(trace.HandshakeClientHello, HeaderSize+len(payload), "ClientHello trusted host "+hello.TrustedHost))
	if cfg.Reject != nil {
		if code, detail := cfg.Reject(hello.TrustedHost); code != 0 {
			return refuse(code, detail, nil)
		}
	}

	sh := &tlipb.ServerHello{Version: Version, ServerNonce: newNonce(), ServerName: cfg.Name}
	var ikm []byte
	switch hello.Mode {
	case tlipb.Mode_MODE_AGENT:
		var secret []byte
		ok := false
		if cfg.Secret != nil {
			secret, ok = cfg.Secret(hello.TrustedHost)
		}
		if !ok {
			return refuse(CodeSecretIncorrect, fmt.Sprintf("unknown trusted host %q", hello.TrustedHost), nil)
		}
		// An empty secret would make the proof a MAC anyone can compute.
		if len(secret) == 0 {
			return refuse(CodeSecretIncorrect, fmt.Sprintf("trusted host %q has no shared secret", hello.TrustedHost), nil)
		}
		if !hmac.Equal(hello.Proof, clientProof(secret, hello)) {
			return refuse(CodeSecretIncorrect, fmt.Sprintf("wrong shared secret for trusted host %q", hello.TrustedHost), nil)
		}
		sh.Proof = serverProof(secret, hello, sh)
		ikm = secret
	case tlipb.Mode_MODE_ADMIN:
		if !cfg.AllowAdmin {
			return refuse(CodeSecretIncorrect, "administration sessions are not accepted here", nil)
		}
		pub, err := ecdh.X25519().NewPublicKey(hello.EcdhPublic)
		if err != nil {
			return refuse(CodeNoClientHello, "bad admin key", err)
		}
		priv, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return refuse(CodeServerHelloFailed, "", err)
		}
		if ikm, err = priv.ECDH(pub); err != nil {
			return refuse(CodeNoClientHello, "bad admin key", err)
		}
		sh.EcdhPublic = priv.PublicKey().Bytes()
	default:
		return refuse(CodeNoClientHello, fmt.Sprintf("unknown mode %d", hello.Mode), nil)
	}
	kb, err := deriveKeyBytes(ikm, hello.ClientNonce, sh.ServerNonce)
	if err == nil {
		s.keys, err = kb.session()
	}
	if err != nil {
		return refuse(CodeServerHelloFailed, "", err)
	}
	// Logged before the ServerHello goes out, so that even a ClientConfirm
	// that fails to open can be read in the capture. A key log the user
	// asked for and cannot get fails the handshake: a capture that silently
	// will not decrypt costs more than a refused connection in a lab.
	if cfg.KeyLog != nil {
		if err := writeKeyLog(cfg.KeyLog, hello.ClientNonce, kb); err != nil {
			return refuse(CodeServerHelloFailed, "writing the key log", err)
		}
	}
	sb, _ := proto.Marshal(sh)
	if err := WriteFrame(tc, FrameServerHello, sb); err != nil {
		return nil, &HandshakeError{Code: CodeServerHelloFailed, Message: CodeText(CodeServerHelloFailed), Peer: s.peer, Err: err}
	}
	tc.NoteEvent(handshakeEvent(trace.HandshakeServerHello, HeaderSize+len(sb), "ServerHello"))

	typ, payload, err = ReadFrame(s.reader(), nil)
	if err != nil {
		return refuse(CodeNoClientAck, "no client confirm", err)
	}
	if typ != FrameClientConfirm {
		return refuse(CodeNoClientAck, "expected ClientConfirm, got "+frameTypeName(typ), nil)
	}
	plain, err := s.keys.c2s.open(typ, payload)
	if err != nil {
		return refuse(CodeBadEncryption, "client confirm does not open with the session key", err)
	}
	cc := &tlipb.ClientConfirm{}
	if err := proto.Unmarshal(plain, cc); err != nil || !hmac.Equal(cc.Proof, confirmProof(ikm, hello.ClientNonce, sh.ServerNonce)) {
		return refuse(CodeBadEncryption, "client confirm proof mismatch", err)
	}
	tc.NoteEvent(handshakeEvent(trace.HandshakeClientConfirm, HeaderSize+len(payload), "ClientConfirm: session established"))
	s.release()
	return &ServerConn{s: s, TrustedHost: hello.TrustedHost, Admin: hello.Mode == tlipb.Mode_MODE_ADMIN}, nil
}

// IsTimeout tells a deadline from other errors (for "client sent nothing").
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// IsClosed tells a peer that went away from a protocol error.
// A reset is a peer going away too: the agent ends every bootstrap
// connection with one.
func IsClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
