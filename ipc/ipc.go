// Package ipc joins an HLA (the web server worker) and its LLAWP (the
// low-level agent worker process) with hashicorp/go-plugin over gRPC, in the
// shape of go-plugin's examples/grpc: an interface (LLAWP), a GRPCPlugin with
// server and client adapters, a handshake with a magic cookie, a plugin map.
//
// The owner side (Launch) starts the LLAWP binary as a plugin; the Apache
// model's children join the same LLAWP with Attach. The plugin side (Serve)
// runs in the LLAWP. go-plugin's traps, and what this package does about
// them:
//
//   - stdout belongs to the handshake: the LLAWP must never print to it, and
//     the owner sends what go-plugin relays of it to io.Discard.
//   - AllowedProtocols defaults to net/rpc: Launch allows gRPC only.
//   - the GRPCBroker serves one client: LLAWP -> HLA events travel on the
//     server stream of Watch, which any number of workers can hold.
//   - the plugin is not killed when its host dies: Launch sets Pdeathsig and
//     tells the LLAWP its owner's pid so that it can watch for itself.
//   - a go-plugin client's Kill, and even its Close, stops the plugin for
//     every client: Attach does not build a go-plugin client at all.
package ipc

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/agentlab/agentlab/proto/tlipb"
)

// PluginName is the LLAWP's entry in the plugin map.
const PluginName = "llawp"

// Handshake is shared by the HLA and the LLAWP. The cookie is not security:
// it lets the LLAWP tell that it was started by an owner and not by hand.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "AGENTLAB_LLAWP_PLUGIN",
	MagicCookieValue: "5b1e0d2c-llawp-9f3a",
}

// EnvOwnerPID carries the owner's pid to the LLAWP. Watching getppid alone
// misses an owner that died before the LLAWP's first look.
const EnvOwnerPID = "AGENTLAB_LLAWP_OWNER_PID"

// ErrUnknownWorker answers a call naming a worker that is not registered
// (never was, or unregistered, or the LLAWP restarted since).
var ErrUnknownWorker = errors.New("unknown worker")

// EventName is the vendor's name of a management code, "" when unknown.
// The codes are tlipb.ManagementCode's.
func EventName(code uint32) string {
	if code > 1<<31-1 {
		return ""
	}
	return tlipb.ManagementCode_name[int32(code)]
}

// WorkerID names a registered worker for as long as the LLAWP runs.
type WorkerID uint64

// Worker is an HLA process.
type Worker struct {
	PID  int
	Name string // w3wp.exe, httpd
	Role string // hla
}

// LogRecord is one record of a worker's logger, bound for WA.log.
type LogRecord struct {
	Time    time.Time
	Level   string // zerolog level name
	PID     int
	TID     int
	Proc    string
	Role    string
	Message string
	// Fields is a JSON object of the record's other fields, or empty.
	Fields json.RawMessage
	// Worker is 0 for a record written before the worker registered.
	Worker WorkerID
}

// LogSummary is the LLAWP's count of one Log stream.
type LogSummary struct {
	Received uint64
	Dropped  uint64 // received but not written
}

// ManagementEvent is one management command relayed by the LLAWP.
type ManagementEvent struct {
	Seq  uint64
	Code uint32
	Name string
	Arg  string
	Time time.Time
	// Missed counts events this watcher lost before this one.
	Missed uint64
}

// The LLAWP's phases, as Status reports them: a worker waits for the
// LLAWP to leave PhaseStarting before it serves (AgentWaitTime).
const (
	PhaseStarting = "starting" // bootstrap and HCO under way
	PhaseReady    = "ready"    // pooled, polling
	PhaseFailed   = "failed"   // startup failed; the LLAWP is on its way out
)

// Status is the LLAWP's health and counters.
type Status struct {
	PID             int
	Started         time.Time
	Uptime          time.Duration
	Phase           string // PhaseStarting, PhaseReady, PhaseFailed
	AgentName       string
	TrustedHost     string
	BootstrapServer string
	HCOServers      []string
	Polls           uint64
	PollsFailed     uint64
	LastPoll        time.Time
	LastPollError   string
	CommandsRelayed uint64
	Workers         []WorkerStatus
	// ACO is the agent configuration object the LLAWP fetched; nil until
	// it is ready. Apache children with --aco-from-llawp take it from here.
	ACO *tlipb.AgentConfig
	// MetricsAddr is where the LLAWP serves its pool's /metrics
	// (LLAWPFlags.Metrics), host:port; "" without, or until it is ready.
	MetricsAddr string
}

// WorkerStatus is one registered worker as the LLAWP sees it.
type WorkerStatus struct {
	ID WorkerID
	Worker
	Registered    time.Time
	LogRecords    uint64
	Watchers      int
	EventsDropped uint64
	// Servers is the worker's last Report: its sockets per Policy Server,
	// in HCO order; Reported is when it came (zero: never).
	Servers  []ServerSockets
	Reported time.Time
}

// ServerSockets is one worker's sockets to one Policy Server.
type ServerSockets struct {
	Addr     string `json:"addr"`
	State    string `json:"state"`
	Open     int    `json:"open"`
	Busy     int    `json:"busy"`
	Opened   int64  `json:"opened"`
	Requests int64  `json:"requests"`
}

// LLAWP is the service an HLA uses. The same interface is what the LLAWP
// implements: the gRPC adapters translate one into the other.
type LLAWP interface {
	Register(ctx context.Context, w Worker) (WorkerID, error)
	Unregister(ctx context.Context, id WorkerID) error
	// Log opens a stream of records; CloseAndSummary ends it.
	Log(ctx context.Context) (LogSender, error)
	// Watch returns the worker's events. The channel is closed when the
	// worker unregisters, ctx ends or the LLAWP goes away; the caller must
	// cancel ctx when it stops reading.
	Watch(ctx context.Context, id WorkerID) (<-chan ManagementEvent, error)
	Status(ctx context.Context) (Status, error)
	// Report replaces what Status shows of the worker's sockets.
	Report(ctx context.Context, id WorkerID, servers []ServerSockets) error
}

// LogSender is one open Log stream.
type LogSender interface {
	Send(LogRecord) error
	CloseAndSummary() (LogSummary, error)
}
