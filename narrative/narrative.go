// Package narrative tells a recorded run step by step, in sentences a
// learner holds against the Process Monitor view, in the manner of the
// seed's "Step1 ... Step4": each process's start, its ongoing traffic and
// its pool's growth, the connections that ended or failed, the failovers
// its pool made, the processes that died. Every port, pid, name, count and
// interval in a step comes from the events. It also lends its words (the
// clock, lists and counts) to report.html, so that both read alike.
package narrative

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// Step is one sentence of the narrative a learner reads next to the
// Process Monitor table, in the manner of the seed's "Step1 ... Step4".
type Step struct {
	N     int    // 1-based position in the narrative
	Proc  string // process name, as recorded
	PID   int
	Phase string
	// Text is the sentence without its "Step N: " label, so that a caller
	// may renumber or regroup steps without rewriting them.
	Text string
	// Conns are the ids of the connections the sentence is about, in the
	// order they were opened; a failed connect has none.
	Conns       []string
	First, Last time.Time // the first and last event the sentence describes
}

// TimeLayout is a step's clock. It matches the table's clock (local time) to the millisecond:
// a learner looks a step's time up in the table, whose microseconds begin
// with the same digits since both truncate.
const TimeLayout = "15:04:05.000"

// GroupWindow bounds how far apart connection ends may be and still be
// told as one step ("closes its 2 connections"): further apart they are
// separate happenings, even with no traffic in between.
const GroupWindow = time.Second

// Narrate reads a time-ordered, merged trace and returns the steps a learner
// reads, for the processes on host (the web server host, e.g. wa1.shared.lab)
// talking to servers (the Policy Server hosts). An empty host or an empty
// servers list does not restrict. Every port, pid and name in a step is
// copied from an event, and every count and interval is counted or measured
// from events: a step never says what the trace does not show (a socket is
// said to be opened "when both were busy" only if both had a request waiting
// for its response at that moment).
//
// The steps are of three kinds: each process's start (registration,
// bootstrap, HCO connections); each process's ongoing traffic (requests,
// management polls), summarised per server, and each step of its pool's
// growth; and the connections that ended or failed outside the start, each
// with its time. Whatever their kind, they are numbered in the order they
// began (a step's first event), so that Step 3 never happened before
// Step 2.
func Narrate(evs []trace.Event, host string, servers []string) []Step {
	n := newNarrator(evs, host, servers)
	var steps []Step
	for _, p := range n.procs {
		steps = append(steps, n.perConn(p, trace.PhaseAdmin)...)
		steps = append(steps, n.perConn(p, trace.PhaseBootstrap)...)
		steps = append(steps, n.hco(p)...)
		steps = append(steps, n.activity(p, trace.PhaseRequests)...)
		steps = append(steps, n.activity(p, trace.PhaseManagement)...)
		steps = append(steps, n.incidents(p)...)
		steps = append(steps, n.failovers(p)...)
		steps = append(steps, n.died(p)...)
	}
	// A Policy Server under load (load.go): from the load fields only,
	// with the servers' side of the conversations.
	steps = append(steps, loadSteps(evs, host, servers)...)
	slices.SortStableFunc(steps, narrByFirst)
	for i := range steps {
		steps[i].N = i + 1
	}
	return steps
}

// Write writes one "Step N: ..." line per step.
func Write(w io.Writer, steps []Step) error {
	bw := bufio.NewWriter(w)
	for _, s := range steps {
		if _, err := fmt.Fprintf(bw, "Step %d: %s\n", s.N, s.Text); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func narrByFirst(a, b Step) int { return a.First.Compare(b.First) }

type narrator struct {
	evs   []trace.Event // the kept events, time-ordered
	procs []*narrProc
	// names counts processes per name: a summary names a process by name
	// alone ("w3wp.exe sends ...") unless several share it (httpd children).
	names map[string]int
	// cache is what the first ACO the agents received says about their
	// caches: it tells which of the seed's use cases the run shows.
	cache *trace.AgentCache
	// toldReset and toldUseCase: some things are explained once, where
	// they first come up.
	toldReset, toldUseCase bool
}

type narrProc struct {
	proc string
	pid  int
	// deaths are the indices of its Process Exit, when it died (at most
	// one: a pid dies once).
	deaths []int
	conns  []*narrConn
	byID   map[string]*narrConn
	fails  []*narrFail
	// traffic holds, per server, the indices of the events that are not a
	// connection's end: ends with none of these between them are one step.
	traffic map[string][]int
	// states are the indices of its pool's Server State events.
	states []int
	// ongoing is the index of the process's first event of a phase that
	// goes on (requests, management), or -1: a start-up socket that ends
	// after it ends as an incident, not as part of the start-up.
	ongoing int
}

type narrConn struct {
	id, port, server string
	phase            string          // the phase it was opened in
	step             *trace.PoolStep // the step of the pool's growth that opened it
	accepted         bool            // the server side of a connection: not narrated
	first            int
	reqs             []*narrReq
	answered         int    // how many of reqs, from the front, have a response
	refused          string // handshake refusal, as the agent recorded it
	refusedIdx       int
	end              int // index of its first end, -1 while open
	last             int // index of its last event before the end
}

type narrReq struct {
	idx, resp int // resp is -1 while unanswered
	// kind and subject are the request's call and what it names
	// (Event.Request, Event.Subject); note says it all, as recorded.
	kind, subject, note string
}

// same tells whether two requests ask the same thing.
func (r *narrReq) same(o *narrReq) bool { return r.kind == o.kind && r.subject == o.subject }

type narrFail struct {
	idx            int
	server, reason string
	step           *trace.PoolStep
}

func newNarrator(evs []trace.Event, host string, servers []string) *narrator {
	n := &narrator{names: map[string]int{}}
	for _, e := range evs {
		if Selected(&e, host, servers) || isDeath(&e) {
			n.evs = append(n.evs, e)
		}
	}
	// A merged trace is already in time order; sorting again (stably) costs
	// little and keeps a hand-made or concatenated trace from telling a
	// connection's end before its start.
	slices.SortStableFunc(n.evs, func(a, b trace.Event) int { return a.T.Compare(b.T) })

	type key struct {
		proc string
		pid  int
	}
	byKey := map[key]*narrProc{}
	for i := range n.evs {
		e := &n.evs[i]
		k := key{e.Proc, e.PID}
		p := byKey[k]
		if p == nil {
			p = &narrProc{proc: e.Proc, pid: e.PID, byID: map[string]*narrConn{}, traffic: map[string][]int{}, ongoing: -1}
			byKey[k] = p
			n.procs = append(n.procs, p)
			n.names[e.Proc]++
		}
		if p.ongoing < 0 && (e.Phase == trace.PhaseRequests || e.Phase == trace.PhaseManagement) {
			p.ongoing = i
		}
		if e.AgentCache != nil && n.cache == nil {
			n.cache = e.AgentCache
		}
		if e.Conn == "" {
			if isDeath(e) {
				p.deaths = append(p.deaths, i)
				continue
			}
			if e.Op == trace.OpServerState {
				p.states = append(p.states, i)
				continue
			}
			if e.Op == trace.OpConnect { // a connect with no connection failed
				p.fails = append(p.fails, &narrFail{idx: i, server: narrServer(e), reason: narrReason(e), step: e.PoolStep})
			}
			continue
		}
		c := p.byID[e.Conn]
		if c == nil {
			c = &narrConn{id: e.Conn, port: Port(e.Local), server: narrServer(e), phase: e.Phase,
				accepted: e.Op == trace.OpAccept, first: i, end: -1, step: e.PoolStep}
			p.byID[e.Conn] = c
			p.conns = append(p.conns, c)
		}
		if c.accepted || c.end >= 0 {
			continue
		}
		switch e.Op {
		case trace.OpHandshake:
			if e.Handshake == trace.HandshakeError && c.refused == "" {
				c.refused, c.refusedIdx = fmt.Sprintf("%d %s", e.Code, e.Message), i
			}
		case trace.OpRequest:
			c.reqs = append(c.reqs, &narrReq{idx: i, resp: -1, kind: Call(e), subject: e.Subject, note: e.Note})
		case trace.OpResponse:
			// One request at a time per socket: a response answers the
			// oldest request still waiting.
			if c.answered < len(c.reqs) {
				c.reqs[c.answered].resp = i
				c.answered++
			}
		case trace.OpDisconnect, trace.OpReset:
			c.end = i
			continue
		}
		c.last = i
		p.traffic[c.server] = append(p.traffic[c.server], i)
	}
	return n
}

// isDeath: a Process Exit that nobody asked for (Exit.Death), as the
// supervisor that reaped the process recorded it.
func isDeath(e *trace.Event) bool {
	return e.Op == trace.OpProcessExit && e.Process != nil && e.Process.Exit != nil && e.Process.Exit.Death
}

// died tells a process's death and what its supervisor did about it: a
// new worker's own start-up then follows in its own steps.
func (n *narrator) died(p *narrProc) []Step {
	var out []Step
	for _, i := range p.deaths {
		e := n.ev(i)
		text := fmt.Sprintf("at %s, %s (pid %d) %s", e.T.Local().Format(TimeLayout), p.proc, p.pid, e.Process.Exit.Status())
		if a := e.Process.Exit.Action; a != "" {
			text += ": " + a
		}
		out = append(out, Step{Proc: p.proc, PID: p.pid, Text: text + ".", First: e.T, Last: e.T})
	}
	return out
}

// Selected tells whether e is between host and one of servers, as the
// narrative selects events (and report.html's diagram draws them): an
// empty host or an empty servers list does not restrict.
func Selected(e *trace.Event, host string, servers []string) bool {
	return narrMatch(e.LocalHost, host) && narrMatchAny(e.RemoteHost, servers)
}

func narrMatch(h, want string) bool { return want == "" || strings.EqualFold(h, want) }

func narrMatchAny(h string, want []string) bool {
	if len(want) == 0 {
		return true
	}
	for _, w := range want {
		if strings.EqualFold(h, w) {
			return true
		}
	}
	return false
}

func narrServer(e *trace.Event) string {
	if s := trace.Endpoint(e.RemoteHost, e.Remote); s != "" {
		return s
	}
	return "an unnamed server"
}

// Port is the port of addr, as a step names a connection; "?" when the
// trace does not say.
func Port(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 && i+1 < len(addr) {
		return addr[i+1:]
	}
	if addr == "" {
		return "?"
	}
	return addr
}

// narrReason is why a connect failed, the way a learner says it: a
// "connection refused" (Event.Error), or "failed" when the trace does not
// say.
func narrReason(e *trace.Event) string {
	if e.Error == "" {
		return "failed"
	}
	return e.Error
}

func (n *narrator) ev(i int) *trace.Event { return &n.evs[i] }

func (p *narrProc) who() string { return fmt.Sprintf("%s (pid %d)", p.proc, p.pid) }

// name is who in summaries: the seed says "w3wp.exe sends", but three httpd
// children need their pids to be told apart.
func (n *narrator) name(p *narrProc) string {
	if n.names[p.proc] > 1 {
		return p.who()
	}
	return p.proc
}

// span collects the times of the events a step describes.
type narrSpan struct {
	first, last time.Time
	set         bool
}

func (s *narrSpan) add(t time.Time) {
	if !s.set || t.Before(s.first) {
		s.first = t
	}
	if !s.set || t.After(s.last) {
		s.last = t
	}
	s.set = true
}

func (n *narrator) step(p *narrProc, phase, text string, conns []*narrConn, span narrSpan) Step {
	s := Step{Proc: p.proc, PID: p.pid, Phase: phase, Text: text, First: span.first, Last: span.last}
	for _, c := range conns {
		s.Conns = append(s.Conns, c.id)
	}
	return s
}

// perConn tells the connections of a phase that opens one connection for
// one job and ends it (bootstrap, registration): one step per connection,
// with the failed connects that preceded it.
func (n *narrator) perConn(p *narrProc, phase string) []Step {
	type attempt struct {
		idx  int
		fail *narrFail
		conn *narrConn
	}
	var atts []attempt
	for _, f := range p.fails {
		if n.ev(f.idx).Phase == phase {
			atts = append(atts, attempt{idx: f.idx, fail: f})
		}
	}
	for _, c := range p.conns {
		if !c.accepted && c.phase == phase {
			atts = append(atts, attempt{idx: c.first, conn: c})
		}
	}
	slices.SortStableFunc(atts, func(a, b attempt) int { return a.idx - b.idx })

	var steps []Step
	var pending []*narrFail
	for _, a := range atts {
		if a.fail != nil {
			pending = append(pending, a.fail)
			continue
		}
		steps = append(steps, n.connStep(p, a.conn, pending))
		pending = nil
	}
	if len(pending) > 0 {
		var span narrSpan
		for _, f := range pending {
			span.add(n.ev(f.idx).T)
		}
		text := p.who() + " tries " + narrTries(pending, false) + "."
		steps = append(steps, n.step(p, phase, text, nil, span))
	}
	return steps
}

// narrTries lists failed connects, folding repeats of the same failure:
// "smps3.shared.lab:44443 first: connection refused; then ...".
func narrTries(fs []*narrFail, first bool) string {
	var parts []string
	for i := 0; i < len(fs); {
		j := i + 1
		for j < len(fs) && fs[j].server == fs[i].server && fs[j].reason == fs[i].reason {
			j++
		}
		s := fs[i].server
		if i == 0 && first {
			s += " first"
		}
		s += ": " + fs[i].reason
		if j-i > 1 {
			s += fmt.Sprintf(" (%d times)", j-i)
		}
		if i > 0 {
			s = "then " + s
		}
		parts = append(parts, s)
		i = j
	}
	return strings.Join(parts, "; ")
}

func (n *narrator) connStep(p *narrProc, c *narrConn, pending []*narrFail) Step {
	var span narrSpan
	lead := ""
	if len(pending) > 0 {
		lead = "tries " + narrTries(pending, true) + "; then "
		for _, f := range pending {
			span.add(n.ev(f.idx).T)
		}
	}
	span.add(n.ev(c.first).T)

	var reqs []*narrReq
	for _, r := range c.reqs {
		if n.ev(r.idx).Phase == c.phase {
			reqs = append(reqs, r)
			span.add(n.ev(r.idx).T)
			if r.resp >= 0 {
				span.add(n.ev(r.resp).T)
			}
		}
	}

	head := "connects to " + c.server + " using tcp port " + c.port
	var clauses []string
	if c.refused != "" {
		clauses = append(clauses, "is refused in the handshake ("+c.refused+")")
		span.add(n.ev(c.refusedIdx).T)
	}
	// A registration that did what it was for reads as the seed's reader
	// would say it; anything else is told request by request.
	if len(reqs) == 1 && reqs[0].kind == trace.ReqRegisterHost && n.result(reqs[0]) == "SUCCESS" {
		head = "registers trusted host " + reqs[0].object() + " with " + c.server + " using tcp port " + c.port
	} else {
		clauses = append(clauses, n.reqClauses(reqs)...)
	}
	switch {
	case c.end < 0:
		clauses = append(clauses, "the trace ends with the connection still open")
	case n.ev(c.end).Phase == c.phase:
		end := narrEndVerb(n.ev(c.end), "the connection")
		if narrEndOf(n.ev(c.end)) == narrReset && !n.toldReset {
			// The seed, reading Process Monitor, says "and disconnect":
			// a learner holding this step against it must see why.
			end += " (Process Monitor has no operation for a reset, so it shows a TCP Disconnect)"
			n.toldReset = true
		}
		clauses = append(clauses, end)
		span.add(n.ev(c.end).T)
	}
	text := p.who() + " " + lead + narrClauses(head, clauses...) + "."
	return n.step(p, c.phase, text, []*narrConn{c}, span)
}

// reqClauses tells requests, folding repeats of the same request.
func (n *narrator) reqClauses(reqs []*narrReq) []string {
	var out []string
	for i := 0; i < len(reqs); {
		j := i + 1
		for j < len(reqs) && reqs[j].same(reqs[i]) {
			j++
		}
		if j-i > 1 {
			out = append(out, fmt.Sprintf("sends %s (%d times)", reqs[i].note, j-i))
		} else {
			out = append(out, n.reqClause(reqs[i], ""))
		}
		i = j
	}
	return out
}

// reqClause tells one request and how it was answered; via says over which
// connection, when the sentence is about several.
func (n *narrator) reqClause(r *narrReq, via string) string {
	res := n.result(r)
	obj := r.object()
	var ok, ask string
	switch r.kind {
	case trace.ReqGetHostConfig:
		ok, ask = "downloads HCO "+obj, "asks for HCO "+obj
	case trace.ReqGetAgentConfig:
		ok, ask = "downloads ACO "+obj, "asks for ACO "+obj
	case trace.ReqRegisterHost:
		ok, ask = "registers trusted host "+obj, "asks to register trusted host "+obj
	default:
		ok, ask = "sends "+r.note, "sends "+r.note
		// For other calls NO and CHALLENGE are answers, not failures.
		if res == "YES" || res == "NO" || res == "CHALLENGE" {
			res = "SUCCESS"
		}
	}
	switch {
	case r.resp < 0:
		return ask + via + " with no response recorded"
	case res == "SUCCESS":
		return ok + via
	}
	s := ask + via + " but gets " + res
	if msg := n.message(r); msg != "" {
		s += " (" + msg + ")"
	}
	return s
}

// result is the Agent API result of the request's response (YES,
// SUCCESS, ...), "" while unanswered.
func (n *narrator) result(r *narrReq) string {
	if r.resp < 0 {
		return ""
	}
	if res := n.ev(r.resp).Result; res != "" {
		return res
	}
	return "an empty response"
}

// message is the server's message on the request's response, if any.
func (n *narrator) message(r *narrReq) string {
	if r.resp < 0 {
		return ""
	}
	return n.ev(r.resp).Message
}

// Call is the call of a request or response ("IsProtected"); a
// request with no call still counts, as an unnamed one.
func Call(e *trace.Event) string {
	if e.Request == "" {
		return "unnamed"
	}
	return e.Request
}

// object is what the request names after its call: the HCO, ACO or
// trusted host.
func (r *narrReq) object() string {
	if r.subject == "" {
		return "(unnamed)"
	}
	return r.subject
}

// narrEnd names how a connection ended: by this process or by the server,
// with a FIN or an RST. A reset that could not be made was a FIN on the
// wire, and the recorder says so in the note.
type narrEnd int

const (
	narrClose narrEnd = iota
	narrReset
	narrPeerClose
	narrPeerReset
	narrFailed // a connect that failed, told with the ends in incidents
)

func narrEndOf(e *trace.Event) narrEnd {
	switch {
	case e.Op == trace.OpReset && e.Peer:
		return narrPeerReset
	case e.Op == trace.OpReset:
		return narrReset
	case e.Peer:
		return narrPeerClose
	}
	return narrClose
}

func narrEndVerb(e *trace.Event, what string) string {
	switch narrEndOf(e) {
	case narrReset:
		return "resets " + what
	case narrPeerClose:
		return "the server closes " + what
	case narrPeerReset:
		return "the server resets " + what
	}
	return "closes " + what
}

// narrClauses joins a sentence's clauses: "a, b and c"; after a head that
// has a comma of its own ("ports a and b"), "a, and b", so the last "and"
// reads as the sentence's.
func narrClauses(head string, rest ...string) string {
	switch len(rest) {
	case 0:
		return head
	case 1:
		if strings.Contains(head, ",") {
			return head + ", and " + rest[0]
		}
		return head + " and " + rest[0]
	}
	return head + ", " + strings.Join(rest[:len(rest)-1], ", ") + " and " + rest[len(rest)-1]
}

// List joins items as a sentence does: "a, b and c".
func List(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}

func narrPorts(cs []*narrConn) string {
	ps := make([]string, len(cs))
	for i, c := range cs {
		ps[i] = c.port
	}
	if len(ps) == 1 {
		return "port " + ps[0]
	}
	return "ports " + List(ps)
}

// Count says n things: "1 connection", "2 connections".
func Count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// hco tells the connections opened to the servers the HCO lists: one step
// per server, as the seed's Step2 does.
func (n *narrator) hco(p *narrProc) []Step {
	type group struct {
		server string
		first  int
		conns  []*narrConn
		fails  []*narrFail
	}
	var groups []*group
	get := func(server string, idx int) *group {
		for _, g := range groups {
			if g.server == server {
				g.first = min(g.first, idx)
				return g
			}
		}
		g := &group{server: server, first: idx}
		groups = append(groups, g)
		return g
	}
	for _, c := range p.conns {
		if !c.accepted && c.phase == trace.PhaseHCO {
			g := get(c.server, c.first)
			g.conns = append(g.conns, c)
		}
	}
	for _, f := range p.fails {
		if n.ev(f.idx).Phase == trace.PhaseHCO {
			g := get(f.server, f.idx)
			g.fails = append(g.fails, f)
		}
	}
	slices.SortStableFunc(groups, func(a, b *group) int { return a.first - b.first })

	var steps []Step
	for _, g := range groups {
		steps = append(steps, n.hcoStep(p, g.server, g.conns, g.fails))
	}
	return steps
}

func (n *narrator) hcoStep(p *narrProc, server string, conns []*narrConn, fails []*narrFail) Step {
	var span narrSpan
	for _, f := range fails {
		span.add(n.ev(f.idx).T)
	}
	if len(conns) == 0 {
		return n.step(p, trace.PhaseHCO, p.who()+" tries "+narrTries(fails, false)+".", nil, span)
	}
	var before, after []*narrFail
	for _, f := range fails {
		if f.idx < conns[0].first {
			before = append(before, f)
		} else {
			after = append(after, f)
		}
	}
	lead := ""
	if len(before) > 0 {
		lead = "tries " + narrTries(before, true) + "; then "
	}

	k := len(conns)
	var head string
	if k == 1 {
		head = "connects to " + server + " using tcp port " + conns[0].port
	} else {
		head = fmt.Sprintf("connects to %s by creating %d connections, %s", server, k, narrPorts(conns))
	}
	for _, c := range conns {
		span.add(n.ev(c.first).T)
	}

	// The ACO comes first, as the seed tells it; SetAgentInfo and the rest
	// follow in the order they were sent.
	type sent struct {
		r *narrReq
		c *narrConn
	}
	var aco *sent
	var others []sent
	for _, c := range conns {
		for _, r := range c.reqs {
			if n.ev(r.idx).Phase != trace.PhaseHCO {
				continue
			}
			span.add(n.ev(r.idx).T)
			if r.resp >= 0 {
				span.add(n.ev(r.resp).T)
			}
			if aco == nil && r.kind == trace.ReqGetAgentConfig {
				aco = &sent{r, c}
				continue
			}
			others = append(others, sent{r, c})
		}
	}
	slices.SortStableFunc(others, func(a, b sent) int { return a.r.idx - b.r.idx })

	var clauses []string
	if aco != nil {
		via := ""
		if k > 1 {
			if aco.c == conns[0] {
				via = " over the first (port " + aco.c.port + ")"
			} else {
				via = " over port " + aco.c.port
			}
		}
		clauses = append(clauses, n.reqClause(aco.r, via))
	}
	var rs []*narrReq
	for _, o := range others {
		rs = append(rs, o.r)
	}
	clauses = append(clauses, n.reqClauses(rs)...)
	if len(after) > 0 {
		clauses = append(clauses, fmt.Sprintf("fails to connect %s: %s", narrTimes(len(after), "once more", "more times"), narrReasons(after)))
		for _, f := range after {
			span.add(n.ev(f.idx).T)
		}
	}

	// Ends told here are those within the HCO phase (a probe that only
	// fetches the ACO); a pooled socket that ends later is an incident.
	var kinds []narrEnd
	ended := map[narrEnd][]*narrConn{}
	for _, c := range conns {
		if n.claimed(p, c) {
			kd := narrEndOf(n.ev(c.end))
			if _, seen := ended[kd]; !seen {
				kinds = append(kinds, kd)
			}
			ended[kd] = append(ended[kd], c)
			span.add(n.ev(c.end).T)
		}
	}
	for _, kd := range kinds {
		what := "the connection"
		if k > 1 {
			what = narrPorts(ended[kd])
		}
		clauses = append(clauses, narrEndVerb(n.ev(ended[kd][0].end), what))
	}

	text := p.who() + " " + lead + narrClauses(head, clauses...) + "."
	return n.step(p, trace.PhaseHCO, text, conns, span)
}

func narrTimes(n int, once, many string) string {
	if n == 1 {
		return once
	}
	return fmt.Sprintf("%d %s", n, many)
}

func narrReasons(fs []*narrFail) string {
	var rs []string
	for _, f := range fs {
		if !slices.Contains(rs, f.reason) {
			rs = append(rs, f.reason)
		}
	}
	return strings.Join(rs, "; ")
}

// activity summarises the traffic of a phase that goes on (requests,
// management): per server, what was sent over which sockets, and the sockets
// opened meanwhile.
func (n *narrator) activity(p *narrProc, phase string) []Step {
	type bucket struct {
		server string
		first  int
		reqs   []*narrReq
		used   []*narrConn // opened before the phase, carrying its requests
		grown  []*narrConn // opened during the phase
		hadHCO bool
	}
	var buckets []*bucket
	get := func(server string, idx int) *bucket {
		for _, b := range buckets {
			if b.server == server {
				b.first = min(b.first, idx)
				return b
			}
		}
		b := &bucket{server: server, first: idx}
		buckets = append(buckets, b)
		return b
	}
	for _, c := range p.conns {
		if c.accepted {
			continue
		}
		// A socket the trace puts in a step of the pool's growth is told
		// with its step (poolSteps); the others by what the trace shows.
		if c.phase == phase && c.step == nil {
			b := get(c.server, c.first)
			b.grown = append(b.grown, c)
		}
		carried := false
		for _, r := range c.reqs {
			if n.ev(r.idx).Phase == phase {
				b := get(c.server, r.idx)
				b.reqs = append(b.reqs, r)
				if c.phase != phase && !carried {
					b.used = append(b.used, c)
					carried = true
				}
			}
		}
	}
	for _, b := range buckets {
		for _, c := range p.conns {
			if !c.accepted && c.server == b.server && c.phase == trace.PhaseHCO {
				b.hadHCO = true
			}
		}
		slices.SortStableFunc(b.reqs, func(x, y *narrReq) int { return x.idx - y.idx })
	}
	slices.SortStableFunc(buckets, func(a, b *bucket) int { return a.first - b.first })

	var steps []Step
	for _, b := range buckets {
		var span narrSpan
		for _, r := range b.reqs {
			span.add(n.ev(r.idx).T)
			if r.resp >= 0 {
				span.add(n.ev(r.resp).T)
			}
		}
		for _, c := range b.grown {
			span.add(n.ev(c.first).T)
		}
		more := len(b.used) > 0 || b.hadHCO
		grown := n.growth(p, b.server, b.grown, more)

		var text string
		switch {
		case len(b.reqs) == 0:
			// Sockets opened in this phase that carried none of its
			// requests (a health poll's, or the LLAWP's, whose traffic
			// is management): the opening is the news.
			text = n.name(p) + " opened " + grown + " to " + b.server
			grown = ""
		case phase == trace.PhaseManagement:
			text = n.name(p) + " sends " + n.polls(b.reqs, b.server)
		default:
			text = n.name(p) + " sends " + narrKinds(b.reqs) + " to " + b.server
		}
		if len(b.used) > 0 {
			text += " over " + narrPorts(b.used)
		}
		unanswered := 0
		for _, r := range b.reqs {
			if r.resp < 0 {
				unanswered++
			}
		}
		if unanswered > 0 {
			text += fmt.Sprintf("; %d got no recorded response", unanswered)
		}
		if grown != "" {
			text += "; it opened " + grown
		}
		if k := n.stepsTo(p, phase, b.server); k > 0 {
			text += fmt.Sprintf("; its pool grows in %s, each told at its time", Count(k, "step", "steps"))
		}
		text += "."
		if phase == trace.PhaseRequests {
			text += n.useCase(b.reqs)
		}
		conns := append(append([]*narrConn(nil), b.used...), b.grown...)
		slices.SortStableFunc(conns, func(x, y *narrConn) int { return x.first - y.first })
		steps = append(steps, n.step(p, phase, text, conns, span))
	}
	return append(steps, n.poolSteps(p, phase)...)
}

// useCase tells, once, which of the seed's two use cases the requests
// show, from what the agents' ACO says about the cache: (a) the web server
// starts and a page is loaded, the agent cache answering every later load
// of it; (b) with the agent cache off, every refresh asks the Policy
// Server IsProtected. It is told with the first requests that include an
// IsProtected.
func (n *narrator) useCase(reqs []*narrReq) string {
	if n.toldUseCase || n.cache == nil {
		return ""
	}
	asked := 0
	for _, r := range reqs {
		if r.kind == trace.ReqIsProtected {
			asked++
		}
	}
	if asked == 0 {
		return ""
	}
	n.toldUseCase = true
	c := n.cache
	if !c.On() {
		return fmt.Sprintf(" Use case (b): the agent cache is off (ACO %s: MaxResourceCacheSize %d), so every page load asks the Policy Server IsProtected: %s.",
			c.ACO, c.Resources, Count(asked, "IsProtected", "IsProtected"))
	}
	return fmt.Sprintf(" Use case (a): the agent cache is on (ACO %s: MaxResourceCacheSize %d), so only the first load of a resource asks the Policy Server IsProtected, later loads are answered from the cache: %s in all.",
		c.ACO, c.Resources, Count(asked, "IsProtected", "IsProtected"))
}

// stepsTo counts the steps of the pool's growth to server in phase.
func (n *narrator) stepsTo(p *narrProc, phase, server string) int {
	seen := map[int]bool{}
	for _, c := range p.conns {
		if !c.accepted && c.step != nil && c.phase == phase && c.server == server {
			seen[c.step.N] = true
		}
	}
	for _, f := range p.fails {
		if f.step != nil && f.server == server && n.ev(f.idx).Phase == phase {
			seen[f.step.N] = true
		}
	}
	return len(seen)
}

// poolSteps tells the steps of the pool's growth that the trace records
// (PoolStep), one step each, with its time and the sockets it took the
// pool from and to: the seed's "whenever Web Agent creates new additional
// connections to the Policy Server, it will create x number of connections
// defined in the NewSocketStep ... up to MaxSocketsPerPort".
func (n *narrator) poolSteps(p *narrProc, phase string) []Step {
	type group struct {
		server string
		step   *trace.PoolStep
		first  int
		conns  []*narrConn
		fails  []*narrFail
	}
	var groups []*group
	get := func(server string, st *trace.PoolStep, idx int) *group {
		for _, g := range groups {
			if g.server == server && g.step.N == st.N {
				g.first = min(g.first, idx)
				return g
			}
		}
		g := &group{server: server, step: st, first: idx}
		groups = append(groups, g)
		return g
	}
	for _, c := range p.conns {
		if !c.accepted && c.step != nil && c.phase == phase {
			g := get(c.server, c.step, c.first)
			g.conns = append(g.conns, c)
		}
	}
	for _, f := range p.fails {
		if f.step != nil && n.ev(f.idx).Phase == phase {
			g := get(f.server, f.step, f.idx)
			g.fails = append(g.fails, f)
		}
	}
	slices.SortStableFunc(groups, func(a, b *group) int {
		if a.server == b.server {
			return a.step.N - b.step.N
		}
		return a.first - b.first
	})

	var steps []Step
	for _, g := range groups {
		// The step begins when the pool took it; a trace without that
		// time has its first connect.
		var span narrSpan
		if !g.step.At.IsZero() {
			span.add(g.step.At)
		}
		for _, c := range g.conns {
			span.add(n.ev(c.first).T)
		}
		for _, f := range g.fails {
			span.add(n.ev(f.idx).T)
		}
		st := g.step
		why := fmt.Sprintf("by NewSocketStep (%d)", st.NewSocketStep)
		if st.To-st.From < st.NewSocketStep && st.To >= st.MaxSocketsPerPort {
			why = fmt.Sprintf("to MaxSocketsPerPort (%d)", st.MaxSocketsPerPort)
		}
		text := fmt.Sprintf("at %s, %s's pool to %s grows from %d to %s %s",
			span.first.Local().Format(TimeLayout), n.name(p), g.server, st.From, Count(st.To, "socket", "sockets"), why)
		if len(g.conns) > 0 {
			// Seen from when the pool took the step, if the trace says.
			at := g.conns[0].first
			if !g.step.At.IsZero() {
				at = sort.Search(len(n.evs), func(i int) bool { return n.evs[i].T.After(g.step.At) })
			}
			if open, busy := n.busyAt(p, g.server, at); busy {
				// The pool counts the sockets of its last step that have
				// not connected yet (st.From); the trace shows only those
				// that had.
				text += busyPhrase(open, st.From-open)
			}
			text += ": " + narrPorts(g.conns)
		}
		if len(g.fails) > 0 {
			sep := "; "
			if len(g.conns) == 0 {
				sep = ", but "
			}
			text += sep + Count(len(g.fails), "connect fails", "connects fail") + " (" + narrReasons(g.fails) + ")"
		}
		steps = append(steps, n.step(p, phase, text+".", g.conns, span))
	}
	return steps
}

// narrKinds counts requests per call: "10 IsProtected, 4 Login and 10
// Authorize requests".
func narrKinds(reqs []*narrReq) string {
	var kinds []string
	count := map[string]int{}
	for _, r := range reqs {
		k := r.kind
		if count[k] == 0 {
			kinds = append(kinds, k)
		}
		count[k]++
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%d %s", count[k], k)
	}
	noun := " requests"
	if len(reqs) == 1 {
		noun = " request"
	}
	return List(parts) + noun
}

// polls tells periodic calls with their period: the median gap, so that
// one late poll (a busy server, a paused process) does not skew it.
func (n *narrator) polls(reqs []*narrReq, server string) string {
	var kinds []string
	times := map[string][]time.Time{}
	for _, r := range reqs {
		k := r.kind
		if _, seen := times[k]; !seen {
			kinds = append(kinds, k)
		}
		times[k] = append(times[k], n.ev(r.idx).T)
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		ts := times[k]
		if len(ts) == 1 {
			parts[i] = k + " once"
			continue
		}
		gaps := make([]time.Duration, len(ts)-1)
		for j := 1; j < len(ts); j++ {
			gaps[j-1] = ts[j].Sub(ts[j-1])
		}
		slices.Sort(gaps)
		med := gaps[len(gaps)/2]
		if len(gaps)%2 == 0 {
			a, b := gaps[len(gaps)/2-1], gaps[len(gaps)/2]
			med = a + (b-a)/2
		}
		parts[i] = fmt.Sprintf("%s every %.1f s (%d polls)", k, med.Seconds(), len(ts))
	}
	if len(parts) == 1 {
		k, freq, _ := strings.Cut(parts[0], " ")
		return k + " to " + server + " " + freq
	}
	return List(parts) + " to " + server
}

// growth tells the sockets opened while traffic went on, in the steps the
// agent took: a socket belongs to the step before it until that step's
// sockets carry a request. A step is put down to NewSocketStep only when the
// trace shows every open socket to that server waiting for a response.
func (n *narrator) growth(p *narrProc, server string, grown []*narrConn, more bool) string {
	if len(grown) == 0 {
		return ""
	}
	var bursts [][]*narrConn
	for _, c := range grown {
		if k := len(bursts); k > 0 && !n.carriedBefore(bursts[k-1], c.first) {
			bursts[k-1] = append(bursts[k-1], c)
			continue
		}
		bursts = append(bursts, []*narrConn{c})
	}
	var parts []string
	named := false
	for i, b := range bursts {
		var s string
		switch {
		case i > 0:
			s = strconv.Itoa(len(b)) + " more"
		case more:
			s = Count(len(b), "more socket", "more sockets")
		default:
			s = Count(len(b), "socket", "sockets")
		}
		s += " (" + narrPorts(b) + ")"
		if open, busy := n.busy(p, server, b); busy {
			s += busyPhrase(open, 0)
			// Named once, on the first step it explains: later steps
			// follow the same rule, and a refill after a reset does not.
			if !named {
				s += " (NewSocketStep)"
				named = true
			}
		}
		parts = append(parts, s)
	}
	return List(parts)
}

func (n *narrator) carriedBefore(cs []*narrConn, idx int) bool {
	for _, c := range cs {
		for _, r := range c.reqs {
			if r.idx < idx {
				return true
			}
		}
	}
	return false
}

// busy reports how many sockets to server were open when the burst began and
// whether each had a request waiting for its response.
func (n *narrator) busy(p *narrProc, server string, burst []*narrConn) (int, bool) {
	return n.busyAt(p, server, burst[0].first)
}

// busyAt reports how many sockets to server were open before event at and
// whether each had a request waiting for its response.
func (n *narrator) busyAt(p *narrProc, server string, at int) (int, bool) {
	open := 0
	for _, c := range p.conns {
		if c.accepted || c.server != server || c.first >= at || (c.end >= 0 && c.end < at) {
			continue
		}
		open++
		waiting := false
		for _, r := range c.reqs {
			if r.idx < at && (r.resp < 0 || r.resp > at) {
				waiting = true
			}
		}
		if !waiting {
			return open, false
		}
	}
	return open, open > 0
}

// claimed tells whether a connection's end is told in its start step: an
// HCO socket that is never used closes with its process, and that close
// belongs to the end of the run, not to the start-up.
func (n *narrator) claimed(p *narrProc, c *narrConn) bool {
	if c.end < 0 || n.ev(c.end).Phase != c.phase {
		return false
	}
	switch c.phase {
	case trace.PhaseBootstrap, trace.PhaseAdmin:
		return true
	case trace.PhaseHCO:
		// A probe closes right after its ACO; a pooled socket that sat
		// idle until its process stopped closed with the run, not with
		// the start-up.
		if p.ongoing >= 0 && c.end > p.ongoing {
			return false
		}
		return n.ev(c.end).T.Sub(n.ev(c.last).T) <= GroupWindow
	}
	return false
}

// incidents tells, with their times, the connections that ended outside the
// start (a pooled socket reset after an error, a server that went away, a
// process closing its pool) and the connects that failed meanwhile.
func (n *narrator) incidents(p *narrProc) []Step {
	type item struct {
		idx    int
		kind   narrEnd
		server string
		conn   *narrConn
		fail   *narrFail
	}
	var items []item
	for _, c := range p.conns {
		if !c.accepted && c.end >= 0 && !n.claimed(p, c) {
			items = append(items, item{idx: c.end, kind: narrEndOf(n.ev(c.end)), server: c.server, conn: c})
		}
	}
	for _, f := range p.fails {
		switch n.ev(f.idx).Phase {
		case trace.PhaseBootstrap, trace.PhaseAdmin, trace.PhaseHCO:
			continue
		}
		if f.step != nil {
			continue // told with its step of the pool's growth
		}
		items = append(items, item{idx: f.idx, kind: narrFailed, server: f.server, fail: f})
	}
	slices.SortStableFunc(items, func(a, b item) int { return a.idx - b.idx })

	var groups [][]item
	for _, it := range items {
		if k := len(groups); k > 0 {
			g := groups[k-1]
			prev := g[len(g)-1]
			e := n.ev(it.idx)
			// Failed connects to a server that stays down (a health poll
			// knocking every few seconds) are one story however long it
			// lasts; ends of connections are grouped only when close.
			near := e.T.Sub(n.ev(g[0].idx).T) <= GroupWindow || it.kind == narrFailed
			if it.kind == prev.kind && it.server == prev.server && near && !p.trafficBetween(it.server, prev.idx, it.idx) {
				groups[k-1] = append(g, it)
				continue
			}
		}
		groups = append(groups, []item{it})
	}

	var steps []Step
	for _, g := range groups {
		var span narrSpan
		var conns []*narrConn
		var fails []*narrFail
		var waiting []string
		for _, it := range g {
			span.add(n.ev(it.idx).T)
			if it.conn != nil {
				conns = append(conns, it.conn)
				for _, r := range it.conn.reqs {
					if r.resp < 0 {
						waiting = append(waiting, r.note)
					}
				}
			} else {
				fails = append(fails, it.fail)
			}
		}
		first := n.ev(g[0].idx)
		at := "at " + first.T.Local().Format(TimeLayout) + ", "
		server := g[0].server
		var text string
		switch kind := g[0].kind; kind {
		case narrFailed:
			text = at + p.who() + " fails to connect to " + server
			if len(fails) > 1 {
				text += fmt.Sprintf(" %d times", len(fails))
			}
			if span.last.Sub(span.first) > GroupWindow {
				text += " until " + span.last.Local().Format(TimeLayout)
			}
			text += ": " + narrReasons(fails)
		case narrClose, narrReset:
			verb := "closes"
			if kind == narrReset {
				verb = "resets"
			}
			what := "its connection"
			if len(conns) > 1 {
				what = fmt.Sprintf("its %d connections", len(conns))
			}
			text = at + p.who() + " " + verb + " " + what + " to " + server + " (" + narrPorts(conns) + ")"
		default:
			verb := "closed"
			if kind == narrPeerReset {
				verb = "reset"
			}
			if len(conns) == 1 {
				text = at + "the connection of " + p.who() + " to " + server + " on " + narrPorts(conns) + " is " + verb + " by the server"
			} else {
				text = fmt.Sprintf("%sthe %d connections of %s to %s on %s are %s by the server", at, len(conns), p.who(), server, narrPorts(conns), verb)
			}
		}
		if len(waiting) > 0 {
			text += ", with " + List(waiting) + " unanswered"
		}
		steps = append(steps, n.step(p, first.Phase, text+".", conns, span))
	}
	return steps
}

// trafficBetween tells whether this process sent or received anything on a
// connection to server between two events.
func (p *narrProc) trafficBetween(server string, from, to int) bool {
	idx := p.traffic[server]
	i := sort.SearchInts(idx, from+1)
	return i < len(idx) && idx[i] < to
}

// busyPhrase says why a pool opened sockets: every one of its open
// sockets had a request waiting, and connecting more were still on their
// way (those the pool counts but the trace has not yet seen connect).
func busyPhrase(open, connecting int) string {
	open1, open2, openN := "its only socket was", "both were", "all %d were"
	if connecting > 0 {
		open1, open2, openN = "its only open socket was", "both open sockets were", "all %d open sockets were"
	}
	var s string
	switch open {
	case 1:
		s = " when " + open1 + " busy"
	case 2:
		s = " when " + open2 + " busy"
	default:
		s = " when " + fmt.Sprintf(openN, open) + " busy"
	}
	if connecting > 0 {
		s += fmt.Sprintf(" and %s still connecting", Count(connecting, "more was", "more were"))
	}
	return s
}
