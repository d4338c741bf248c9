package tli

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/trace"
)

// ErrBroken is returned by a Client whose stream can no longer be trusted
// (a timed-out or failed exchange): the agent must reset it and open another.
var ErrBroken = errors.New("connection is broken")

// Client is an agent's session with one Policy Server over one socket.
// One request is in flight at a time, as in the vendor's agent; a pool holds
// several Clients to have several in flight.
type Client struct {
	// ServerName is the host name the server gave in its hello.
	ServerName string

	addr   string
	mu     sync.Mutex // held for a whole exchange
	s      *session
	nextID uint64

	// broken has its own lock so that Err answers at once while an
	// exchange holds mu for up to the request timeout.
	bmu    sync.Mutex
	broken error
}

// Addr is the address the client dialed ("host:port").
func (c *Client) Addr() string { return c.addr }

// Conn is the traced socket under the session.
func (c *Client) Conn() *trace.Conn { return c.s.conn }

// Err is the error that broke the client, or nil while it is usable.
func (c *Client) Err() error {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	return c.broken
}

// Do sends req and waits for its response. ctx bounds the whole exchange
// (the agent's RequestTimeout); if it expires the client is broken, since
// the late response would otherwise answer the next request.
//
// A request that fails before any of it is sent (its context already done,
// or too large to frame) leaves the client usable.
func (c *Client) Do(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error) {
	return c.Resend(ctx, req, 0)
}

// Resend is Do for a request that an earlier socket did not answer within
// RequestTimeout: resend is its try (1 for the first resend), and its
// Request event says so (trace.Event.Resend). 0 is Do.
func (c *Client) Resend(ctx context.Context, req *tlipb.Request, resend int) (*tlipb.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", c.peer(), ErrBroken, err)
	}
	resp, sent, err := c.do(ctx, req, resend)
	if err != nil {
		if sent {
			c.bmu.Lock()
			c.broken = err
			c.bmu.Unlock()
		}
		return nil, err
	}
	return resp, nil
}

func (c *Client) peer() string {
	if c.addr != "" {
		return c.addr
	}
	return c.s.peer
}

// do reports whether the stream may be out of step (sent): from the moment
// a request is sealed, the session's nonce counter has moved on.
func (c *Client) do(ctx context.Context, req *tlipb.Request, resend int) (resp *tlipb.Response, sent bool, err error) {
	s := c.s
	c.nextID++
	req.Id = c.nextID
	plain, err := proto.MarshalOptions{}.MarshalAppend(s.wbuf[:0], req)
	if err != nil {
		return nil, false, fmt.Errorf("%s: encoding %s: %w", c.peer(), Describe(req), err)
	}
	s.wbuf = plain
	if n := len(plain) + s.keys.c2s.aead.Overhead(); n > MaxFrame {
		return nil, false, fmt.Errorf("%s: %s: %w", c.peer(), Describe(req), &FrameError{Len: n, Err: ErrFrameTooLarge})
	}
	if err := ctx.Err(); err != nil {
		return nil, false, fmt.Errorf("%s: %s not sent: %w", c.peer(), Describe(req), err)
	}
	dl, hasDeadline := ctx.Deadline()
	if hasDeadline {
		s.conn.SetDeadline(dl)
	}
	unwatch := watch(ctx, s.conn)
	defer func() {
		unwatch()
		// Only a context that can end has touched the deadline: leaving it
		// alone otherwise saves two timer updates on every request.
		if hasDeadline || ctx.Done() != nil {
			s.conn.SetDeadline(time.Time{})
		}
	}()

	// The frame is sealed into a second buffer: sealing in place over the
	// plaintext would alias it with the header that precedes it.
	frame, err := s.keys.c2s.sealFrame(s.rbuf[:0], FrameRequest, plain)
	if err != nil {
		return nil, true, fmt.Errorf("%s: %s: %w", c.peer(), Describe(req), err)
	}
	if s.conn.Tracing() {
		e := requestEvent(req, len(frame))
		e.Resend = resend
		s.conn.NoteEvent(e)
	}
	if _, err := s.conn.Write(frame); err != nil {
		return nil, true, c.wrapErr(ctx, "sending "+Describe(req), err)
	}
	s.rbuf = frame
	// The reader goes back to the pool once the response is read: an
	// agent's pooled connection waits idle between requests too.
	typ, payload, err := ReadFrame(s.reader(), s.rbuf)
	s.release()
	if err != nil {
		return nil, true, c.wrapErr(ctx, "waiting for the response to "+Describe(req), err)
	}
	if cap(payload) > cap(s.rbuf) {
		s.rbuf = payload[:0]
	}
	if typ == FrameHandshakeError {
		// The server refused our ClientConfirm: its answer comes in place
		// of the first response.
		return nil, true, handshakeRefused(c.peer(), payload, s.conn)
	}
	if typ != FrameResponse {
		return nil, true, fmt.Errorf("%s: got a %s frame instead of a response to %s", c.peer(), frameTypeName(typ), Describe(req))
	}
	frameLen := HeaderSize + len(payload)
	plain, err = s.keys.s2c.open(typ, payload)
	if err != nil {
		return nil, true, fmt.Errorf("%s: response to %s: %w", c.peer(), Describe(req), err)
	}
	resp = &tlipb.Response{}
	if err := proto.Unmarshal(plain, resp); err != nil {
		return nil, true, fmt.Errorf("%s: response to %s: %w", c.peer(), Describe(req), err)
	}
	if resp.Id != req.Id {
		return nil, true, fmt.Errorf("%s: response id %d does not answer request id %d", c.peer(), resp.Id, req.Id)
	}
	if s.conn.Tracing() {
		s.conn.NoteEvent(responseEvent(req, resp, frameLen))
	}
	return resp, true, nil
}

func (c *Client) wrapErr(ctx context.Context, what string, err error) error {
	if cerr := ctxCause(ctx, err); cerr != nil {
		return fmt.Errorf("%s: %s: %w", c.peer(), what, cerr)
	}
	return fmt.Errorf("%s: %s: %w", c.peer(), what, err)
}

// Close ends the session with a FIN.
func (c *Client) Close() error { return c.s.conn.Close() }

// Reset ends the session with an RST, as the agent ends its bootstrap
// connection and any pooled connection that failed.
func (c *Client) Reset() error { return c.s.conn.Reset() }

// ResetTimedOut ends the session with an RST after request (a trace Req
// constant) got no answer within after, the agent's RequestTimeout; the
// trace's TCP Reset says so (trace.Event.Timeout).
func (c *Client) ResetTimedOut(after time.Duration, request string) error {
	return c.s.conn.ResetTimedOut(&trace.RequestTimeout{After: after, Request: request})
}

// ServerConn is the server side of an established session.
type ServerConn struct {
	TrustedHost string
	Admin       bool
	s           *session
}

// Conn is the traced socket under the session.
func (sc *ServerConn) Conn() *trace.Conn { return sc.s.conn }

// ReadRequest waits for the next request. The caller sets read deadlines
// (idle timeout) on Conn().
func (sc *ServerConn) ReadRequest(req *tlipb.Request) error {
	ev, err := sc.ReadRequestEvent(req)
	if err == nil && ev.Op != "" {
		sc.s.conn.NoteEvent(ev)
	}
	return err
}

// ReadRequestEvent is ReadRequest for a server that records the Request
// event itself, once it knows more than the wire says (the Policy
// Server's queue, Event.Queue): it returns the event instead of recording
// it, a zero Event when the connection is not traced. Record it with
// Conn().NoteEvent.
//
// The wait happens here, before readRequest's frame (about 1 KB, with
// the decoding inlined) is on the stack: an idle connection's goroutine
// then uses little enough of its stack for the GC to halve it.
func (sc *ServerConn) ReadRequestEvent(req *tlipb.Request) (trace.Event, error) {
	if err := sc.s.waitReadable(); err != nil {
		return trace.Event{}, err
	}
	return sc.readRequest(req)
}

func (sc *ServerConn) readRequest(req *tlipb.Request) (trace.Event, error) {
	s := sc.s
	typ, payload, err := ReadFrame(s.reader(), s.rbuf)
	s.release()
	if err != nil {
		return trace.Event{}, err
	}
	s.rbuf = payload[:0]
	if typ != FrameRequest {
		return trace.Event{}, fmt.Errorf("from %s: got a %s frame instead of a request", s.peer, frameTypeName(typ))
	}
	n := HeaderSize + len(payload)
	plain, err := s.keys.c2s.open(typ, payload)
	if err != nil {
		return trace.Event{}, fmt.Errorf("from %s: request %w", s.peer, err)
	}
	if err := proto.Unmarshal(plain, req); err != nil {
		return trace.Event{}, fmt.Errorf("from %s: unreadable request: %w", s.peer, err)
	}
	if !s.conn.Tracing() {
		return trace.Event{}, nil
	}
	return requestEvent(req, n), nil
}

// WriteResponse seals and sends resp in one write.
func (sc *ServerConn) WriteResponse(req *tlipb.Request, resp *tlipb.Response) error {
	return sc.WriteResponseQueue(req, resp, nil)
}

// WriteResponseQueue is WriteResponse with the Policy Server's queue
// state on the Response event (Event.Queue; nil for none).
func (sc *ServerConn) WriteResponseQueue(req *tlipb.Request, resp *tlipb.Response, q *trace.QueueState) error {
	s := sc.s
	resp.Id = req.Id
	plain, err := proto.MarshalOptions{}.MarshalAppend(s.wbuf[:0], resp)
	if err != nil {
		return fmt.Errorf("encoding response to %s: %w", Describe(req), err)
	}
	frame, err := s.keys.s2c.sealFrame(s.rbuf[:0], FrameResponse, plain)
	s.wbuf = plain
	if err != nil {
		return fmt.Errorf("response to %s: %w", Describe(req), err)
	}
	s.rbuf = frame[:0]
	if s.conn.Tracing() {
		e := responseEvent(req, resp, len(frame))
		e.Queue = q
		s.conn.NoteEvent(e)
	}
	if _, err := s.conn.Write(frame); err != nil {
		return fmt.Errorf("sending response to %s: %w", s.peer, err)
	}
	return nil
}

// Describe names a request the way a learner reads it in a trace:
// "GetHostConfig hco.smps1", "IsProtected GET /protected/".
func Describe(req *tlipb.Request) string {
	call, subject := describe(req)
	switch call {
	case "":
		return "empty request"
	case trace.ReqLogout:
		return call // it names nothing
	}
	return call + " " + subject
}

// describe is a request's call (a trace.Req constant, "" for no body) and
// what it names after the call, the two fields of its trace events.
//
// Getters throughout: a body set to a nil message (possible when a caller
// builds one by hand) must not panic the trace.
func describe(req *tlipb.Request) (call, subject string) {
	call = Call(req)
	switch b := req.GetBody().(type) {
	case *tlipb.Request_GetHostConfig:
		subject = b.GetHostConfig.GetName()
	case *tlipb.Request_GetAgentConfig:
		subject = b.GetAgentConfig.GetName()
	case *tlipb.Request_SetAgentInfo:
		subject = b.SetAgentInfo.GetAgentName()
	case *tlipb.Request_IsProtected:
		subject = b.IsProtected.GetAction() + " " + b.IsProtected.GetResource()
	case *tlipb.Request_Login:
		subject = b.Login.GetUser() + " realm " + b.Login.GetRealm()
	case *tlipb.Request_Authorize:
		subject = b.Authorize.GetAction() + " " + b.Authorize.GetResource()
	case *tlipb.Request_DoManagement:
		subject = b.DoManagement.GetCommand()
	case *tlipb.Request_RegisterHost:
		subject = b.RegisterHost.GetTrustedHost()
	case *tlipb.Request_QueueManagement:
		subject = b.QueueManagement.GetCommand().GetName()
	}
	return call, subject
}

// Call is a request's call, as trace events and metrics name it (a
// trace.Req constant; "" for a request with no body). It builds nothing:
// the server counts every request by it.
func Call(req *tlipb.Request) string {
	switch req.GetBody().(type) {
	case *tlipb.Request_GetHostConfig:
		return trace.ReqGetHostConfig
	case *tlipb.Request_GetAgentConfig:
		return trace.ReqGetAgentConfig
	case *tlipb.Request_SetAgentInfo:
		return trace.ReqSetAgentInfo
	case *tlipb.Request_IsProtected:
		return trace.ReqIsProtected
	case *tlipb.Request_Login:
		return trace.ReqLogin
	case *tlipb.Request_Authorize:
		return trace.ReqAuthorize
	case *tlipb.Request_Logout:
		return trace.ReqLogout
	case *tlipb.Request_DoManagement:
		return trace.ReqDoManagement
	case *tlipb.Request_RegisterHost:
		return trace.ReqRegisterHost
	case *tlipb.Request_QueueManagement:
		return trace.ReqQueueManagement
	}
	return ""
}

// requestEvent is the trace's Request event for req, n bytes on the wire.
func requestEvent(req *tlipb.Request, n int) trace.Event {
	call, subject := describe(req)
	return trace.Event{Op: trace.OpRequest, Len: n, Note: Describe(req), Request: call, Subject: subject}
}

// responseEvent is the trace's Response event for resp, n bytes on the
// wire: the request it answers, the result and what the response carries
// each in a field, and an ACO's cache sizes, for the renderers; the note
// says it all to a person (DescribeResponse).
func responseEvent(req *tlipb.Request, resp *tlipb.Response, n int) trace.Event {
	e := trace.Event{Op: trace.OpResponse, Len: n, Result: resp.GetResult().String()}
	e.Request, e.Subject = describe(req)
	switch b := resp.GetBody().(type) {
	case *tlipb.Response_HostConfig:
		e.Body = fmt.Sprintf("HCO %s, %d servers", b.HostConfig.GetName(), len(b.HostConfig.GetPolicyServers()))
	case *tlipb.Response_AgentConfig:
		e.Body = "ACO " + b.AgentConfig.GetName()
	case *tlipb.Response_DoManagement:
		e.Body = fmt.Sprintf("%d commands", len(b.DoManagement.GetCommands()))
	}
	if resp.GetResult() != tlipb.Result_SUCCESS && resp.GetResult() != tlipb.Result_YES {
		e.Message = resp.GetMessage()
	}
	e.Note = Describe(req) + ": " + e.Answer()
	if aco := resp.GetAgentConfig(); aco != nil {
		e.AgentCache = &trace.AgentCache{ACO: aco.GetName(), Resources: int(aco.GetMaxResourceCacheSize()), Sessions: int(aco.GetMaxSessionCacheSize())}
	}
	return e
}

// DescribeResponse names a response for the trace: the request it answers
// and its result, "<request>: <RESULT>[ (details)][ - message]".
func DescribeResponse(req *tlipb.Request, resp *tlipb.Response) string {
	return responseEvent(req, resp, 0).Note
}
