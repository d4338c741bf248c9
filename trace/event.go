// Package trace records what real sockets do, one JSON line per event, and
// later merges and renders those records. Nothing in a trace is invented: a
// table, a narrative or a pcapng is derived from these events only.
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
// only saw it (EOF, ECONNRESET). Without one of these notes the event is
// this process's own close. A pcapng tells the two apart by them.
const (
	NoteClosedByPeer = "closed by peer"
	NoteResetByPeer  = "reset by peer"
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
}
