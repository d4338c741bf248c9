// Package tracetest builds traces by hand for the renderers' tests: events
// as tli, pool and trace.Conn record them, each with the note a person
// reads and the typed fields the renderers read, and Lab, which writes the
// events of a lab's processes and of the Policy Servers they talk to.
package tracetest

import (
	"fmt"
	"strings"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// The events below are as the producers record them: a fixture's
// arguments are in the producers' words, and it fills the note and the
// fields from them.

// Request is a Request event; request is as tli describes it, the call
// then what it names: "IsProtected GET /".
func Request(request string) trace.Event {
	call, subject, _ := strings.Cut(request, " ")
	return trace.Event{Op: trace.OpRequest, Note: request, Request: call, Subject: subject}
}

// Response is the Response to request; answer is what tli writes after
// the request: "<RESULT>[ (<body>)][ - <message>]".
func Response(request, answer string) trace.Event {
	e := Request(request)
	e.Op, e.Note = trace.OpResponse, request+": "+answer
	rest, msg, _ := strings.Cut(answer, " - ")
	res, body, _ := strings.Cut(rest, " (")
	e.Result, e.Body, e.Message = res, strings.TrimSuffix(body, ")"), msg
	return e
}

// Handshake is a handshake message (a Handshake constant) and its note.
func Handshake(msg, note string) trace.Event {
	return trace.Event{Op: trace.OpHandshake, Handshake: msg, Note: note}
}

// Refused is a HandshakeError, sent or received.
func Refused(code int, message string) trace.Event {
	return trace.Event{Op: trace.OpHandshake, Handshake: trace.HandshakeError, Code: code, Message: message, Note: fmt.Sprintf("refused: %d %s", code, message)}
}

// Failed is a TCP Connect that failed with errText, as the system says
// it ("connect: connection refused").
func Failed(errText string) trace.Event {
	return trace.Event{Op: trace.OpConnect, Note: "failed: " + errText, Error: strings.TrimPrefix(errText, "connect: ")}
}

// PeerClose is the peer's close, seen by this end: a FIN (TCP Disconnect) or
// an RST (TCP Reset).
func PeerClose(op string) trace.Event {
	note := trace.NoteClosedByPeer
	if op == trace.OpReset {
		note = trace.NoteResetByPeer
	}
	return trace.Event{Op: op, Note: note, Peer: true}
}

// State is a pool's Server State event for server (host:port): from ""
// is the state it starts in; err the error that has it down at start.
func State(server, from, to, why, err string) trace.Event {
	if err != "" {
		why = "down at start: " + err
	}
	note := fmt.Sprintf("%s %s -> %s: %s", server, from, to, why)
	if from == "" {
		note = fmt.Sprintf("%s %s: %s", server, to, why)
	}
	return trace.Event{Op: trace.OpServerState, Note: note, State: &trace.ServerState{Server: server, From: from, To: to, Why: why, Err: err}}
}

// Servers are the Policy Servers of a Lab's traces.
var Servers = []string{"smps1.shared.lab", "smps2.shared.lab", "smps3.shared.lab"}

// IPs are the addresses of a Lab's hosts.
var IPs = map[string]string{
	"wa1.shared.lab":   "127.0.0.11",
	"wa2.shared.lab":   "127.0.0.12",
	"smps1.shared.lab": "127.0.0.21",
	"smps2.shared.lab": "127.0.0.22",
	"smps3.shared.lab": "127.0.0.23",
}

// Ends are the two ends of connection n of w3wp.exe (pid 100) on
// wa1.shared.lab to smps (pid 200) on smps1.shared.lab, from client port
// port: events with their process and connection fields, for a test to
// fill in the rest.
func Ends(n, port int) (client, server trace.Event) {
	client = trace.Event{Proc: "w3wp.exe", PID: 100, Conn: fmt.Sprintf("100-%d", n),
		Local: fmt.Sprintf("127.0.0.11:%d", port), Remote: "127.0.0.21:44443",
		LocalHost: "wa1.shared.lab", RemoteHost: "smps1.shared.lab"}
	server = trace.Event{Proc: "smps", PID: 200, Conn: fmt.Sprintf("200-%d", n),
		Local: "127.0.0.21:44443", Remote: fmt.Sprintf("127.0.0.11:%d", port),
		LocalHost: "smps1.shared.lab", RemoteHost: "wa1.shared.lab"}
	return client, server
}

// Lab writes a trace as the recorders of a lab would: each client
// connection also shows up on the Policy Server's side (TCP Accept ...),
// which the narrative must leave out. Each event comes a millisecond after
// the last.
type Lab struct {
	// T is the time of the last event.
	T time.Time
	// Events are the trace so far.
	Events []trace.Event
	// Host is the local host of the connections opened next.
	Host string
	// Step goes on the next TCP Connect, as the pool's growth records it.
	Step *trace.PoolStep
	seq  map[int]int
}

// Start is when a Lab's trace starts. Local time, so that the clock in
// incident steps reads the same in every time zone.
var Start = time.Date(2017, 4, 18, 23, 23, 35, 0, time.Local)

// NewLab starts a trace on wa1.shared.lab.
func NewLab() *Lab {
	return &Lab{T: Start.Add(-time.Millisecond), seq: map[int]int{}, Host: "wa1.shared.lab"}
}

// Conn is one connection of a Lab, seen from the process that opened it.
type Conn struct {
	proc, role string
	pid        int
	id         string
	local      string
	server     string
	remote     string
	// Phase labels its next events.
	Phase        string
	srvID, srvPh string
}

// ID is the connection's id in the events.
func (c *Conn) ID() string { return c.id }

// Tick moves the clock to the next event's time.
func (l *Lab) Tick() time.Time {
	l.T = l.T.Add(time.Millisecond)
	return l.T
}

// Jump makes the next event happen at hh:mm:ss on the lab's day.
func (l *Lab) Jump(clock string) {
	d, err := time.Parse("15:04:05", clock)
	if err != nil {
		panic(err)
	}
	l.T = time.Date(2017, 4, 18, d.Hour(), d.Minute(), d.Second(), 0, time.Local).Add(-time.Millisecond)
}

// Wait lets d pass.
func (l *Lab) Wait(d time.Duration) { l.T = l.T.Add(d) }

func roleOf(proc string) string {
	switch proc {
	case "LLAWP.exe", "LLAWP":
		return "llawp"
	case "smreghost":
		return "smreghost"
	}
	return "hla"
}

// Emit records op on c, n bytes, with a note and no typed field.
func (l *Lab) Emit(c *Conn, op string, n int, note string) {
	l.Record(c, trace.Event{Op: op, Note: note}, n)
}

// Record puts e (its op, note and typed fields) on connection c, n bytes.
func (l *Lab) Record(c *Conn, e trace.Event, n int) {
	t := l.Tick()
	op := e.Op
	e.T, e.Proc, e.PID, e.Role, e.Conn = t, c.proc, c.pid, c.role, c.id
	e.Local, e.Remote, e.LocalHost, e.RemoteHost, e.Len, e.Phase = c.local, c.remote, l.Host, c.server, n, c.Phase
	l.Events = append(l.Events, e)
	if op == trace.OpConnect && l.Step != nil {
		l.Events[len(l.Events)-1].PoolStep, l.Step = l.Step, nil
	}
	// The server's record of the same socket operation.
	sop := map[string]string{trace.OpConnect: trace.OpAccept, trace.OpSend: trace.OpReceive, trace.OpReceive: trace.OpSend}[op]
	if sop != "" {
		l.Events = append(l.Events, trace.Event{T: t, Proc: "smps", PID: 9000 + int(c.server[4]), Role: "policyserver", Op: sop, Conn: c.srvID,
			Local: c.remote, Remote: c.local, LocalHost: c.server, RemoteHost: l.Host, Len: n, Phase: c.srvPh})
	}
}

// Open records a TCP connect and nothing more.
func (l *Lab) Open(proc string, pid, port int, server, phase string) *Conn {
	l.seq[pid]++
	c := &Conn{proc: proc, role: roleOf(proc), pid: pid, id: fmt.Sprintf("%d-%d", pid, l.seq[pid]),
		local: fmt.Sprintf("%s:%d", IPs[l.Host], port), server: server, remote: IPs[server] + ":44443",
		Phase: phase, srvID: fmt.Sprintf("s-%d-%d", pid, l.seq[pid]), srvPh: trace.PhaseRequests}
	l.Emit(c, trace.OpConnect, 0, "")
	return c
}

// connect opens a connection and completes the handshake, as tli.Dial
// records it.
func (l *Lab) Connect(proc string, pid, port int, server, phase string) *Conn {
	c := l.Open(proc, pid, port, server, phase)
	l.Emit(c, trace.OpSend, 70, "")
	l.Record(c, Handshake(trace.HandshakeClientHello, "ClientHello trusted host trust_wa1"), 70)
	l.Emit(c, trace.OpReceive, 77, "")
	l.Record(c, Handshake(trace.HandshakeServerHello, "ServerHello from "+server), 77)
	l.Emit(c, trace.OpSend, 55, "")
	l.Record(c, Handshake(trace.HandshakeClientConfirm, "ClientConfirm"), 55)
	return c
}

// Fail records a TCP Connect that failed with reason, as the system
// says it ("connect: connection refused").
func (l *Lab) Fail(proc string, pid int, server, phase, reason string) {
	e := Failed(reason)
	e.T, e.Proc, e.PID, e.Role = l.Tick(), proc, pid, roleOf(proc)
	e.Remote, e.LocalHost, e.RemoteHost, e.Phase, e.PoolStep = IPs[server]+":44443", l.Host, server, phase, l.Step
	l.Events = append(l.Events, e)
	l.Step = nil
}

// Grow opens a socket for a step of the pool's growth.
func (l *Lab) Grow(proc string, pid, port int, server string, st trace.PoolStep) *Conn {
	l.Step = &st
	return l.Connect(proc, pid, port, server, trace.PhaseRequests)
}

// Send records a request, in tli's words ("IsProtected GET /").
func (l *Lab) Send(c *Conn, request string) {
	l.Record(c, Request(request), 40)
	l.Emit(c, trace.OpSend, 40, "")
}

// Answer records the response to request; result is what tli writes
// after the request ("SUCCESS (ACO aco.wa1)", "FAILURE - unknown agent").
func (l *Lab) Answer(c *Conn, request, result string) {
	l.Emit(c, trace.OpReceive, 60, "")
	l.Record(c, Response(request, result), 60)
}

// Do is Send and Answer.
func (l *Lab) Do(c *Conn, note, result string) {
	l.Send(c, note)
	l.Answer(c, note, result)
}

// Reset, Close and Peer end c: with an RST, with a FIN, or as the peer's
// FIN (TCP Disconnect) or RST (TCP Reset) that c's process saw.
func (l *Lab) Reset(c *Conn)           { l.Emit(c, trace.OpReset, 0, "") }
func (l *Lab) Close(c *Conn)           { l.Emit(c, trace.OpDisconnect, 0, "") }
func (l *Lab) Peer(c *Conn, op string) { l.Record(c, PeerClose(op), 0) }

// Bootstrap is the seed's Part1: one connection to the SmHost.conf server,
// the HCO, then an RST.
func (l *Lab) Bootstrap(proc string, pid, port int, server string) {
	c := l.Connect(proc, pid, port, server, trace.PhaseBootstrap)
	l.Do(c, "GetHostConfig hco.smps1", "SUCCESS (HCO hco.smps1, 1 servers)")
	l.Reset(c)
}

// HCOConns is the seed's Part2: MinSocketsPerPort connections to an HCO
// server, the ACO over the first.
func (l *Lab) HCOConns(proc string, pid int, server string, aco bool, ports ...int) []*Conn {
	var cs []*Conn
	for _, p := range ports {
		cs = append(cs, l.Connect(proc, pid, p, server, trace.PhaseHCO))
	}
	if aco {
		l.Do(cs[0], "GetAgentConfig aco.wa1", "SUCCESS (ACO aco.wa1)")
	}
	return cs
}

// SetPhase labels the next events of cs.
func SetPhase(phase string, cs ...*Conn) {
	for _, c := range cs {
		c.Phase = phase
	}
}

// IIS is the seed's capture: w3wp.exe then LLAWP.exe each bootstrap and
// open their HCO connections, then w3wp.exe asks about page loads while
// LLAWP.exe polls.
func IIS() []trace.Event {
	l := NewLab()
	l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
	w := l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
	l.Bootstrap("LLAWP.exe", 4250, 50137, "smps2.shared.lab")
	ll := l.HCOConns("LLAWP.exe", 4250, "smps1.shared.lab", true, 50138, 50139)
	l.Do(ll[0], "SetAgentInfo wa1", "SUCCESS")
	SetPhase(trace.PhaseRequests, w...)
	SetPhase(trace.PhaseManagement, ll...)

	gaps := []time.Duration{0, 5 * time.Second, 5200 * time.Millisecond, 4900 * time.Millisecond}
	page := 0
	for _, g := range gaps {
		l.Wait(g)
		l.Do(ll[0], "DoManagement GET_AGENT_COMMANDS", "SUCCESS (0 commands)")
		// Page loads between polls: 3, 3, 2, 2.
		for n := 0; n < 3 && page < 10; n++ {
			c := w[page%2]
			l.Do(c, "IsProtected GET /protected/", "YES")
			if page < 4 {
				l.Do(c, "Login user1 realm realm.protected", "YES")
			}
			l.Do(c, "Authorize GET /protected/", "YES")
			page++
			if page == 6 || page == 8 {
				break
			}
		}
	}
	return l.Events
}
