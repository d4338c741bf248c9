// Package trace records what real sockets do, one JSON line per event, and
// merges the records of a run's processes; it is what every process links.
// Nothing in a trace is invented: the renderers (procmon, narrative,
// report, pcapng, chart) derive their outputs from these events only, and
// read the events' fields, never their notes.
package trace

import "time"

// Operations, named as Process Monitor names its network events, plus the
// protocol-level events that only the process itself can see.
const (
	OpConnect    = "TCP Connect"
	OpAccept     = "TCP Accept"
	OpSend       = "TCP Send"
	OpReceive    = "TCP Receive"
	OpDisconnect = "TCP Disconnect"
	OpReset      = "TCP Reset"
	OpHandshake  = "Handshake"
	OpRequest    = "Request"
	OpResponse   = "Response"
	// OpServerState is an agent's pool changing its view of a Policy
	// Server (pool.State: Active, Inactive, Disabled, Failed). It is on
	// no connection (conn is empty): remote and remote_host name the
	// server, and the note reads "<host:port> <from> -> <to>: <why>",
	// or "<host:port> <state>: <why>" for the state it starts in.
	OpServerState = "Server State"
	// OpProcessCreate and OpProcessExit are Process Monitor's process
	// events, recorded by the supervisor that started or reaped the
	// process (Event.Process names it). A Process Create is the parent's
	// row; a Process Exit is the child's (its proc, pid and role).
	OpProcessCreate = "Process Create"
	OpProcessExit   = "Process Exit"
)

// Notes of a TCP Disconnect or TCP Reset that the peer made: this process
// only saw it (EOF, ECONNRESET). Event.Peer says so to a program; the
// note says it to a person.
const (
	NoteClosedByPeer = "closed by peer"
	NoteResetByPeer  = "reset by peer"
)

// Requests, as Event.Request names them: TLI's calls (proto/tli.proto).
const (
	ReqGetHostConfig   = "GetHostConfig"
	ReqGetAgentConfig  = "GetAgentConfig"
	ReqSetAgentInfo    = "SetAgentInfo"
	ReqIsProtected     = "IsProtected"
	ReqLogin           = "Login"
	ReqAuthorize       = "Authorize"
	ReqLogout          = "Logout"
	ReqDoManagement    = "DoManagement"
	ReqRegisterHost    = "RegisterHost"
	ReqQueueManagement = "QueueManagement"
)

// Handshake messages, as Event.Handshake names them (DESIGN.md, "Wire
// protocol"): HandshakeError is the server's refusal, with Event.Code.
const (
	HandshakeClientHello   = "ClientHello"
	HandshakeServerHello   = "ServerHello"
	HandshakeClientConfirm = "ClientConfirm"
	HandshakeError         = "HandshakeError"
)

// States of a Policy Server in an agent's pool, as ServerState names them
// (pool.State's names, the vendor's).
const (
	StateActive   = "Active"
	StateInactive = "Inactive"
	StateDisabled = "Disabled"
	StateFailed   = "Failed"
)

// Phases of an agent's life, used to colour and group events.
const (
	PhaseBootstrap  = "bootstrap"
	PhaseHCO        = "hco"
	PhaseRequests   = "requests"
	PhaseManagement = "management"
	PhaseAdmin      = "admin"
)

// Event is one line of a per-process trace file (DESIGN.md, "Logs and traces").
type Event struct {
	T          time.Time `json:"t"`
	Proc       string    `json:"proc"`
	PID        int       `json:"pid"`
	Role       string    `json:"role,omitempty"`
	Op         string    `json:"op"`
	Conn       string    `json:"conn,omitempty"`
	Local      string    `json:"local,omitempty"`
	Remote     string    `json:"remote,omitempty"`
	LocalHost  string    `json:"local_host,omitempty"`
	RemoteHost string    `json:"remote_host,omitempty"`
	Len        int       `json:"len"`
	Phase      string    `json:"phase,omitempty"`
	Note       string    `json:"note,omitempty"`
	// Data holds the bytes of a send or receive when the recorder was asked
	// to keep payloads (the lab does, for its pcapng); base64 in JSON.
	Data []byte `json:"data,omitempty"`
	// Process is the subject of a Process Create or Process Exit.
	Process *Process `json:"process,omitempty"`
	// TCP is what the system said of the connection as it opened, on TCP
	// Connect and TCP Accept (TCP_INFO on Linux); nil where it says
	// nothing (not TCP, another system, a trace recorded before).
	TCP *TCPInfo `json:"tcp,omitempty"`
	// Errno names the error a failed TCP Connect (no conn) ended with, as
	// the system names it: ECONNREFUSED, ETIMEDOUT (also for the
	// process's own deadline), ECANCELED (it gave up), or "" when the
	// error was no system error.
	Errno string `json:"errno,omitempty"`
	// PoolStep is set on the TCP Connect (a failed one too) of a socket an
	// agent's pool opened to grow: the step it belongs to. Steps overlap
	// when requests keep coming, so their times alone cannot tell which
	// socket came with which.
	PoolStep *PoolStep `json:"pool_step,omitempty"`
	// AgentCache is set on the Response that carries an agent
	// configuration object: what it says about the agent's caches.
	AgentCache *AgentCache `json:"agent_cache,omitempty"`

	// The fields below say as data what Note says to a person, so that no
	// reader takes a note apart: Note stays the same text.

	// Request is the call of a Request or Response event (a Req
	// constant, or "" for a request with no body), and Subject what the
	// request names after it: a request's note is "<Request> <Subject>"
	// ("GetHostConfig hco.smps1", "IsProtected GET /protected/").
	Request string `json:"request,omitempty"`
	Subject string `json:"subject,omitempty"`
	// Result is a Response's Agent API result (YES, NO, CHALLENGE,
	// SUCCESS, FAILURE, ...); Body what the response carries, as its note
	// says it in parentheses ("HCO hco.smps1, 2 servers", "ACO aco1",
	// "0 commands"); Message the server's message when the result is
	// neither SUCCESS nor YES. Answer puts them together as the note does.
	Result string `json:"result,omitempty"`
	Body   string `json:"body,omitempty"`
	// Message is also a refused handshake's error text.
	Message string `json:"message,omitempty"`
	// Handshake names the message of a Handshake event (a Handshake
	// constant): both ends record it, one sending, the other receiving.
	Handshake string `json:"handshake,omitempty"`
	// Code is the vendor's error code (3152-3157) of a HandshakeError.
	Code int `json:"code,omitempty"`
	// Error is why a TCP Connect failed (no conn), as a person says it:
	// the system's error without the system call's name ("connection
	// refused", "i/o timeout"). The note reads "failed: " and the whole
	// error text.
	Error string `json:"error,omitempty"`
	// Peer marks a TCP Disconnect or TCP Reset that the peer made: this
	// process saw EOF or ECONNRESET (the note is NoteClosedByPeer or
	// NoteResetByPeer). Without it the close is this process's own.
	Peer bool `json:"by_peer,omitempty"`
	// State is the change a Server State event tells.
	State *ServerState `json:"state,omitempty"`

	// The fields below tell a Policy Server under load (load.go).

	// Limit is set on a Policy Server's events for a connection it would
	// not take: its connection limit and the vendor's log message.
	Limit *ConnLimit `json:"limit,omitempty"`
	// Queue is the Policy Server's request queue and worker threads as a
	// request joined the queue (its Request event) or was answered (its
	// Response event).
	Queue *QueueState `json:"queue,omitempty"`
	// Timeout is set on an agent's close of a socket whose request got no
	// answer within RequestTimeout.
	Timeout *RequestTimeout `json:"timeout,omitempty"`
	// Resend is set on an agent's Request that sends again, on another
	// connection, a request that timed out: its try (1 for the first
	// resend).
	Resend int `json:"resend,omitempty"`
}

// ServerState is an agent's pool changing its view of one Policy Server:
// the note reads "<Server> <From> -> <To>: <Why>", or "<Server> <To>:
// <Why>" for the state a server starts in (From is then "").
type ServerState struct {
	// Server is the server's address as the HCO names it (host:port).
	Server string `json:"server"`
	From   string `json:"from,omitempty"`
	To     string `json:"to"`
	Why    string `json:"why,omitempty"`
	// Err is, for a server that is down when the pool starts, the error
	// that has it down (Why says "down at start: " and Err).
	Err string `json:"err,omitempty"`
}

// Down tells a state in which the server does not answer: Failed or
// Disabled.
func Down(state string) bool { return state == StateFailed || state == StateDisabled }

// Answer is a Response as its note says it after the request: "<Result>[
// (<Body>)][ - <Message>]".
func (e *Event) Answer() string {
	s := e.Result
	if e.Body != "" {
		s += " (" + e.Body + ")"
	}
	if e.Message != "" {
		s += " - " + e.Message
	}
	return s
}

// TCPInfo is what the handshake agreed on, as the system reported it
// right after: the fields Process Monitor shows in a TCP Connect's Detail.
type TCPInfo struct {
	// MSS is the segment size this end sends with.
	MSS int `json:"mss"`
	// SACK, Timestamps and WindowScaling are the TCP options both ends
	// agreed to use.
	SACK          bool `json:"sack,omitempty"`
	Timestamps    bool `json:"timestamps,omitempty"`
	WindowScaling bool `json:"window_scaling,omitempty"`
	// RcvWindow is the receive window this end advertised; 0 when the
	// system does not say (Linux before 6.2).
	RcvWindow int `json:"rcv_window,omitempty"`
	// RcvWindowScale and SndWindowScale are the window scale shifts of
	// this end's receive window and of the peer's (0 without scaling).
	RcvWindowScale int `json:"rcv_window_scale,omitempty"`
	SndWindowScale int `json:"snd_window_scale,omitempty"`
}

// PoolStep is one step of an agent's pool of sockets to one Policy Server:
// when more requests wait than sockets are free or being opened, the pool
// opens NewSocketStep more at once (fewer near MaxSocketsPerPort).
type PoolStep struct {
	// N numbers the steps of one process's pool to one server, from 1, in
	// the order the pool took them.
	N int `json:"n"`
	// At is when the pool took the step. Its sockets connect a little
	// later, and when steps follow each other closely, in any order.
	At time.Time `json:"at"`
	// From and To count the pool's sockets to the server, open or being
	// opened, before and after the step: it opens To - From sockets.
	From int `json:"from"`
	To   int `json:"to"`
	// NewSocketStep and MaxSocketsPerPort are the HCO's: a step smaller
	// than NewSocketStep is the last one, up to MaxSocketsPerPort.
	NewSocketStep     int `json:"new_socket_step"`
	MaxSocketsPerPort int `json:"max_sockets_per_port"`
}

// AgentCache is what an agent configuration object says about the
// agent's caches: MaxResourceCacheSize and MaxSessionCacheSize, where 0
// turns that cache off (DOMAIN.md section 2), so that every page load asks
// the Policy Server IsProtected.
type AgentCache struct {
	ACO       string `json:"aco"`
	Resources int    `json:"max_resource_cache_size"`
	Sessions  int    `json:"max_session_cache_size"`
}

// On tells whether the agent caches resources: with the resource cache
// off, every page load sends IsProtected.
func (c AgentCache) On() bool { return c.Resources > 0 }
