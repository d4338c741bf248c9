package report

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/agentlab/narrative"
	"github.com/agentlab/agentlab/procmon"
	"github.com/agentlab/agentlab/trace"
)

// Limits of the sequence diagram. A run with thousands of page loads would
// draw a page nobody scrolls; past these the diagram draws a marker or
// stops, and says so under its title.
const (
	// diagPerConn is how many requests of one phase a connection draws
	// (with their responses); one "… and K more" row stands for the rest.
	diagPerConn = 8
	// diagMaxProcs bounds the process lanes: a recycling storm starts a
	// new httpd child every few requests.
	diagMaxProcs = 16
	// diagMaxRows bounds the rows, whatever else happened.
	diagMaxRows = 1500
	// diagGap is the pause between two rows that earns a "later" row: the
	// same second that tells steps apart in the narrative.
	diagGap = narrative.GroupWindow
	// diagHeadEvery repeats the lane names down a long diagram.
	diagHeadEvery = 30
)

// Diagram geometry, in pixels.
const (
	diagTimeW   = 104 // the clock column
	diagHeadH   = 50  // the lane header boxes
	diagRowH    = 22
	diagProcGap = 160 // between two process lanes
	diagMidGap  = 330 // between the last process lane and the first server lane
	diagSrvGap  = 190 // between two server lanes
	diagMargin  = 110 // right of the last lane: half a header box and some air
	diagHead    = 9   // arrowhead length
)

// Kinds of diagram rows; an arrow's data-kind.
const (
	KindConnect       = "connect"
	KindConnectFailed = "connect-failed"
	KindHandshake     = "handshake"
	KindRequest       = "request"
	KindResponse      = "response"
	KindReset         = "reset"
	KindDisconnect    = "disconnect"
	// KindState is a pool's change of mind about a server (OpServerState):
	// it failed, came back, or took over the new requests.
	KindState = "state"
	// KindMore stands for the requests of one connection and phase past
	// diagPerConn; its data-requests and data-responses say how many.
	KindMore = "more"
)

// DiagramKind is the kind of arrow an event is drawn as, or "" for events
// the diagram leaves to the table (sends, receives, the server's accepts).
func DiagramKind(e trace.Event) string {
	switch e.Op {
	case trace.OpConnect:
		if e.Conn == "" {
			return KindConnectFailed
		}
		return KindConnect
	case trace.OpHandshake:
		return KindHandshake
	case trace.OpRequest:
		return KindRequest
	case trace.OpResponse:
		return KindResponse
	case trace.OpReset:
		return KindReset
	case trace.OpDisconnect:
		return KindDisconnect
	case trace.OpServerState:
		return KindState
	}
	return ""
}

// diagFromServer tells an arrow's direction: what the server sent (its
// hello, a refusal, a response) or did (closed, reset) points back at the
// process.
func diagFromServer(e trace.Event) bool {
	switch e.Op {
	case trace.OpResponse:
		return true
	case trace.OpHandshake:
		return e.Handshake == trace.HandshakeServerHello || e.Handshake == trace.HandshakeError
	case trace.OpReset, trace.OpDisconnect:
		return e.Peer
	}
	return false
}

type diagram struct {
	// ID prefixes the page's anchors (steps, rows), unique per side.
	ID     string
	Lanes  []diagLane
	Rows   []diagRow
	Width  int
	Height int
	// Notes say what the diagram left out, and why.
	Notes []string
	// Phases are the phases drawn, in the order of the legend.
	Phases []string
}

type diagLane struct {
	X      int
	Label  string // "w3wp.exe (6226)", "smps1.shared.lab"
	Sub    string // a second line: connections, ports
	Server bool
	// AliveFrom and AliveTo are the first and last rows of a process's
	// events: its lifeline is drawn solid there, dashed outside.
	AliveFrom, AliveTo int
	key                string
	conns, fails       int
	ports              []string
}

type diagRow struct {
	Y     int
	Kind  string // an arrow kind, or "gap" or "lanes"
	Phase string
	Time  string
	From  int // lane x
	To    int
	Label string
	Port  string // the process's local port, to follow a connection
	Title string // the event as the table shows it, for a tooltip
	Proc  string
	PID   int
	Conn  string
	// A "more" row's counts.
	Requests, Responses int
	// Steps are the numbers of the steps whose first drawn event this is.
	Steps []int

	t    time.Time
	lane int // the process's lane, for its lifeline
	// A "more" row's calls by name, in the order first seen, and the time
	// of the last event it stands for.
	kinds map[string]int
	order []string
	last  time.Time
}

// PhaseClass is the CSS class that colours a phase; unknown phases share one.
func (r diagRow) PhaseClass() string { return phaseClass(r.Phase) }

// DataPhase is the row's data-phase: its phase as recorded, or "none".
func (r diagRow) DataPhase() string {
	if r.Phase == "" {
		return "none"
	}
	return r.Phase
}

func phaseClass(p string) string {
	switch p {
	case trace.PhaseBootstrap, trace.PhaseHCO, trace.PhaseRequests, trace.PhaseManagement, trace.PhaseAdmin:
		return "p-" + p
	}
	return "p-other"
}

// Arrow geometry, for the template.
func (r diagRow) dir() int {
	if r.To < r.From {
		return -1
	}
	return 1
}

// LineTo is where the shaft stops, under the arrowhead.
func (r diagRow) LineTo() int { return r.To - r.dir()*(diagHead-1) }

// HeadPoints is the arrowhead, a triangle pointing at r.To.
func (r diagRow) HeadPoints() string {
	d := r.dir()
	b := r.To - d*diagHead
	return fmt.Sprintf("%d,%d %d,%d %d,%d", r.To, r.Y, b, r.Y-4, b, r.Y+4)
}

// LabelX starts the label just right of the arrow's left end (the
// process's lane): every arrow runs between a process and a server.
func (r diagRow) LabelX() int { return min(r.From, r.To) + 8 }

func (r diagRow) LabelY() int { return r.Y - 5 }

// markSteps puts each step's number on the first row the step tells, so
// that a reader goes from a sentence to its arrows and back.
func (d *diagram) markSteps(steps []narrative.Step) {
	for _, st := range steps {
		for i := range d.Rows {
			r := &d.Rows[i]
			if r.Kind == "gap" || r.Kind == "lanes" || r.PID != st.PID || r.Proc != st.Proc ||
				r.t.Before(st.First) || r.t.After(st.Last) {
				continue
			}
			if len(st.Conns) > 0 && !slices.Contains(st.Conns, r.Conn) {
				continue
			}
			r.Steps = append(r.Steps, st.N)
			break
		}
	}
}

// diagBadge is a step's number in the diagram, between the clock and the
// first lane; a link to the step's sentence.
type diagBadge struct {
	N, X, W int
}

// Badges are the row's step badges, side by side: a digit is about 7 px.
func (r diagRow) Badges() []diagBadge {
	var out []diagBadge
	x := diagTimeW + 2
	for _, n := range r.Steps {
		w := 10 + 7*len(strconv.Itoa(n))
		out = append(out, diagBadge{N: n, X: x, W: w})
		x += w + 3
	}
	return out
}

// Center is the middle of the diagram's width.
func (d *diagram) Center() int { return d.Width / 2 }

// layoutDiagram lays out the sequence diagram of evs: the events of the
// processes on host (keep narrows them further, nil keeps all) with the
// servers, as the narrative selects them. One lane per process, then one
// per server; one row per drawn event, time going down.
func layoutDiagram(evs []trace.Event, host string, servers []string, keep procmon.Select) *diagram {
	b := newDiagBuilder()
	for _, e := range diagEvents(evs, host, servers, keep) {
		b.add(e)
	}
	b.labelMore()
	d := &diagram{}
	lx := b.placeLanes(d, servers)
	b.placeRows(d, lx)
	d.Phases = legendPhases(d.Rows)
	d.Notes = b.notes()
	return d
}

// diagEvents are the events the diagram draws, in time order.
func diagEvents(evs []trace.Event, host string, servers []string, keep procmon.Select) []trace.Event {
	var sel []trace.Event
	for _, e := range evs {
		if DiagramKind(e) == "" || keep != nil && !keep(e) {
			continue
		}
		if narrative.Selected(&e, host, servers) {
			sel = append(sel, e)
		}
	}
	slices.SortStableFunc(sel, func(a, b trace.Event) int { return a.T.Compare(b.T) })
	return sel
}

// diagBuilder collects the lanes and rows of a diagram, one event at a
// time (add), before they are placed.
type diagBuilder struct {
	procIdx, srvIdx map[string]int
	procs, srvs     []*diagLane
	// skipped are the processes past diagMaxProcs, with their events.
	skipped   []*diagSkipped
	skippedBy map[string]*diagSkipped
	// One request in flight per socket: a response answers the oldest
	// request still waiting, and is drawn if that request was.
	pending  map[string][]diagWaiting
	drawnPer map[string]int      // requests drawn per connection and phase
	moreOf   map[string]*diagRow // the "more" row of a connection and phase
	more     []*diagRow
	rows     []*diagRow
	// stoppedAt is when the rows ran out (diagMaxRows), and leftOut how
	// many events came after.
	stoppedAt time.Time
	leftOut   int
}

type diagSkipped struct {
	who    string
	events int
}

type diagWaiting struct {
	drawn bool
	more  *diagRow
}

func newDiagBuilder() *diagBuilder {
	return &diagBuilder{procIdx: map[string]int{}, srvIdx: map[string]int{}, skippedBy: map[string]*diagSkipped{},
		pending: map[string][]diagWaiting{}, drawnPer: map[string]int{}, moreOf: map[string]*diagRow{}}
}

// add draws e: its process's and server's lanes, counted, and its row,
// unless the process has no lane or the rows ran out.
func (b *diagBuilder) add(e trace.Event) {
	pi, ok := b.procLane(e)
	if !ok {
		return
	}
	si := b.serverLane(e, pi)
	if !b.stoppedAt.IsZero() || len(b.rows) == diagMaxRows {
		if b.stoppedAt.IsZero() {
			b.stoppedAt = e.T
		}
		b.leftOut++
		return
	}
	row := b.row(e, pi)
	if row == nil {
		return
	}
	if diagFromServer(e) {
		row.From, row.To = -1-si, pi // resolved to x by placeRows
	} else {
		row.From, row.To = pi, -1-si
	}
	b.rows = append(b.rows, row)
}

// procLane is the lane of e's process, new if need be; false past
// diagMaxProcs, where the process's events are only counted.
func (b *diagBuilder) procLane(e trace.Event) (int, bool) {
	pk := e.Proc + "\x00" + strconv.Itoa(e.PID)
	if pi, ok := b.procIdx[pk]; ok {
		return pi, true
	}
	if s := b.skippedBy[pk]; s != nil {
		s.events++
		return 0, false
	}
	if len(b.procs) == diagMaxProcs {
		s := &diagSkipped{who: fmt.Sprintf("%s (%d)", e.Proc, e.PID), events: 1}
		b.skippedBy[pk] = s
		b.skipped = append(b.skipped, s)
		return 0, false
	}
	pi := len(b.procs)
	b.procIdx[pk] = pi
	b.procs = append(b.procs, &diagLane{Label: fmt.Sprintf("%s (%d)", e.Proc, e.PID), key: pk, AliveFrom: -1})
	return pi, true
}

// serverLane is the lane of e's server, new if need be; it counts e's
// connect or failed connect on it and on process lane pi, and the
// server's ports.
func (b *diagBuilder) serverLane(e trace.Event, pi int) int {
	sk := diagServer(e)
	si, ok := b.srvIdx[sk]
	if !ok {
		si = len(b.srvs)
		b.srvIdx[sk] = si
		b.srvs = append(b.srvs, &diagLane{Label: sk, key: sk, Server: true, AliveFrom: -1})
	}
	switch DiagramKind(e) {
	case KindConnect:
		b.procs[pi].conns++
		b.srvs[si].conns++
	case KindConnectFailed:
		b.procs[pi].fails++
		b.srvs[si].fails++
	}
	if _, port, err := net.SplitHostPort(e.Remote); err == nil && !slices.Contains(b.srvs[si].ports, port) {
		b.srvs[si].ports = append(b.srvs[si].ports, port)
	}
	return si
}

// row is e's row on process lane pi, labelled; nil when e is drawn in
// another row (a request past diagPerConn, its response).
func (b *diagBuilder) row(e trace.Event, pi int) *diagRow {
	kind := DiagramKind(e)
	row := &diagRow{Kind: kind, Phase: e.Phase, t: e.T, Proc: e.Proc, PID: e.PID, Conn: e.Conn,
		Port: narrative.Port(e.Local), lane: pi, Title: diagTitle(e)}
	if e.Local == "" {
		row.Port = ""
	}
	switch kind {
	case KindRequest:
		return b.request(e, row)
	case KindResponse:
		q := b.pending[e.Conn]
		if len(q) > 0 {
			w := q[0]
			b.pending[e.Conn] = q[1:]
			if !w.drawn && w.more != nil {
				w.more.Responses++
				w.more.last = e.T
				return nil
			}
		}
		// The call's name and its answer: the request's arguments are
		// on its own arrow, a row or a few above.
		row.Label = narrative.Call(&e) + ": " + e.Answer()
	case KindConnect:
		row.Label = e.Op
	case KindConnectFailed:
		row.Label = e.Op + " " + e.Note
	case KindState:
		row.Label = stateLabel(e)
	case KindReset, KindDisconnect:
		row.Label = e.Op
		if e.Note != "" {
			row.Label += " (" + e.Note + ")"
		}
	default:
		row.Label = e.Note
	}
	return row
}

// request is a request's row: its own up to diagPerConn per connection
// and phase, then one "more" row that counts the rest (nil for those
// after its first).
func (b *diagBuilder) request(e trace.Event, row *diagRow) *diagRow {
	ck := e.Conn + "\x00" + e.Phase
	if b.drawnPer[ck] < diagPerConn {
		b.drawnPer[ck]++
		b.pending[e.Conn] = append(b.pending[e.Conn], diagWaiting{drawn: true})
		row.Label = e.Note
		return row
	}
	m := b.moreOf[ck]
	if m == nil {
		m = &diagRow{Kind: KindMore, Phase: e.Phase, t: e.T, Proc: e.Proc, PID: e.PID, Conn: e.Conn,
			Port: row.Port, lane: row.lane, kinds: map[string]int{}}
		b.moreOf[ck] = m
		b.more = append(b.more, m)
		row = m
	} else {
		row = nil
	}
	m.Requests++
	m.last = e.T
	k := narrative.Call(&e)
	if m.kinds[k] == 0 {
		m.order = append(m.order, k)
	}
	m.kinds[k]++
	b.pending[e.Conn] = append(b.pending[e.Conn], diagWaiting{more: m})
	return row
}

// stateLabel is a pool's change of mind: the lane says which server; the
// change is the news. The reason can be a whole error chain: the arrow's
// title (hover) keeps it all, the label what fits a lane or two.
func stateLabel(e trace.Event) string {
	label := e.Note
	if st := e.State; st != nil {
		label = st.To
		if st.From != "" {
			label = st.From + " → " + st.To
		}
		label += ": " + st.Why
	}
	if r := []rune(label); len(r) > 64 {
		label = string(r[:63]) + "…"
	}
	return label
}

// labelMore says what each "more" row stands for.
func (b *diagBuilder) labelMore() {
	for _, m := range b.more {
		parts := make([]string, len(m.order))
		for i, k := range m.order {
			parts[i] = fmt.Sprintf("%d %s", m.kinds[k], k)
		}
		noun := "requests"
		if m.Requests == 1 {
			noun = "request"
		}
		m.Label = fmt.Sprintf("… and %d more %s (%s) from %s to %s", m.Requests, noun, narrative.List(parts),
			m.t.Local().Format(narrative.TimeLayout), m.last.Local().Format(narrative.TimeLayout))
		if m.Responses != m.Requests {
			m.Label += fmt.Sprintf(", %d answered", m.Responses)
		}
		m.Title = fmt.Sprintf("%s: %d requests and %d responses on connection %s are not drawn", m.Label, m.Requests, m.Responses, m.Conn)
	}
}

// placeLanes puts the process lanes, then the server lanes in the order
// the caller named the servers (then any other), across d, and returns
// the x of a lane as rows name it (a process's index, or -1-index for a
// server).
func (b *diagBuilder) placeLanes(d *diagram, servers []string) func(int) int {
	srvs := slices.Clone(b.srvs)
	slices.SortStableFunc(srvs, func(a, b *diagLane) int {
		ia, ib := diagOrder(servers, a.key), diagOrder(servers, b.key)
		return ia - ib
	})
	srvX := map[int]int{}
	x := diagTimeW + diagMargin - 20
	for i, p := range b.procs {
		if i > 0 {
			x += diagProcGap
		}
		p.X = x
		p.Sub = p.count()
	}
	for i, s := range srvs {
		if i == 0 {
			x += diagMidGap
		} else {
			x += diagSrvGap
		}
		s.X = x
		srvX[b.srvIdx[s.key]] = x
		ports := "port " + strings.Join(s.ports, ", ")
		if len(s.ports) > 1 {
			ports = "ports " + strings.Join(s.ports, ", ")
		}
		s.Sub = ports + " · " + s.count()
		if len(s.ports) == 0 {
			s.Sub = s.count()
		}
	}
	d.Width = x + diagMargin
	for _, p := range b.procs {
		d.Lanes = append(d.Lanes, *p)
	}
	for _, s := range srvs {
		d.Lanes = append(d.Lanes, *s)
	}
	return func(v int) int {
		if v < 0 {
			return srvX[-1-v]
		}
		return b.procs[v].X
	}
}

// placeRows puts the rows down d, with a "later" row where time jumps and
// the lane names again every so often, and marks where each process's
// lifeline is solid.
func (b *diagBuilder) placeRows(d *diagram, lx func(int) int) {
	y := diagHeadH + diagRowH
	var prev time.Time
	for i, r := range b.rows {
		if i > 0 && i%diagHeadEvery == 0 {
			d.Rows = append(d.Rows, diagRow{Kind: "lanes", Y: y})
			y += diagRowH
		}
		if !prev.IsZero() && r.t.Sub(prev) >= diagGap {
			d.Rows = append(d.Rows, diagRow{Kind: "gap", Y: y, Label: diagLater(r.t.Sub(prev))})
			y += diagRowH
		}
		prev = r.t
		if r.Kind == KindMore && r.last.After(prev) {
			prev = r.last
		}
		r.Y = y
		r.Time = r.t.Local().Format(narrative.TimeLayout)
		r.From, r.To = lx(r.From), lx(r.To)
		p := &d.Lanes[r.lane]
		if p.AliveFrom < 0 {
			p.AliveFrom = y
		}
		p.AliveTo = y
		d.Rows = append(d.Rows, *r)
		y += diagRowH
	}
	d.Height = y
}

// legendPhases are the phases rows draw: the known ones in their order,
// then any other in the order drawn.
func legendPhases(rows []diagRow) []string {
	phases := map[string]bool{}
	for _, r := range rows {
		if r.Kind != "gap" && r.Kind != "lanes" {
			phases[r.Phase] = true
		}
	}
	var out []string
	for _, p := range []string{trace.PhaseBootstrap, trace.PhaseHCO, trace.PhaseRequests, trace.PhaseManagement, trace.PhaseAdmin} {
		if phases[p] {
			out = append(out, p)
			delete(phases, p)
		}
	}
	for _, r := range rows {
		if phases[r.Phase] && r.Kind != "gap" && r.Kind != "lanes" {
			out = append(out, r.Phase)
			delete(phases, r.Phase)
		}
	}
	return out
}

// notes say what the diagram left out, and why.
func (b *diagBuilder) notes() []string {
	var notes []string
	if len(b.more) > 0 {
		reqs, conns := 0, map[string]bool{}
		for _, m := range b.more {
			reqs += m.Requests
			conns[m.Conn] = true
		}
		verb := "are"
		if reqs == 1 {
			verb = "is"
		}
		notes = append(notes, fmt.Sprintf("Each connection draws its first %d requests of a phase and their responses; "+
			"%s, on %s, %s summed up in %s (“… and K more”).",
			diagPerConn, narrative.Count(reqs, "more request", "more requests"), narrative.Count(len(conns), "connection", "connections"),
			verb, narrative.Count(len(b.more), "row", "rows")))
	}
	if len(b.skipped) > 0 {
		var who []string
		n := 0
		for _, s := range b.skipped {
			who = append(who, s.who)
			n += s.events
		}
		if len(who) > 6 {
			who = append(who[:5], fmt.Sprintf("%d others", len(who)-5))
		}
		notes = append(notes, fmt.Sprintf("Only the first %d processes have a lane: %s, %s, are not drawn (%d events; they are in the steps and in trace.jsonl).",
			diagMaxProcs, narrative.Count(len(b.skipped), "more process", "more processes"), narrative.List(who), n))
	}
	if !b.stoppedAt.IsZero() {
		notes = append(notes, fmt.Sprintf("The diagram stops after %d rows, at %s: %d later events are not drawn.",
			diagMaxRows, b.stoppedAt.Local().Format(narrative.TimeLayout), b.leftOut))
	}
	return notes
}

// count is a lane's connections, and its failed connects if any.
func (l *diagLane) count() string {
	s := narrative.Count(l.conns, "connection", "connections")
	if l.fails > 0 {
		s += ", " + narrative.Count(l.fails, "failed", "failed")
	}
	return s
}

// diagServer names a server's lane: its host name, or its address when
// the lab's hosts map had no name for it.
func diagServer(e trace.Event) string {
	if e.RemoteHost != "" {
		return e.RemoteHost
	}
	if h, _, err := net.SplitHostPort(e.Remote); err == nil {
		return h
	}
	if e.Remote != "" {
		return e.Remote
	}
	return "an unnamed server"
}

func diagOrder(servers []string, s string) int {
	for i, w := range servers {
		if strings.EqualFold(w, s) {
			return i
		}
	}
	return len(servers)
}

// diagTitle is an event as trace.jsonl records it (a reset is TCP Reset,
// and handshake messages and requests are events too), in the table's
// order, with its note.
func diagTitle(e trace.Event) string {
	path := trace.Endpoint(e.LocalHost, e.Local) + " -> " + trace.Endpoint(e.RemoteHost, e.Remote)
	s := strings.Join([]string{e.T.Local().Format(procmon.TimeOfDayLayout), e.Proc, strconv.Itoa(e.PID), e.Op, path,
		"Length: " + strconv.Itoa(e.Len)}, "  ")
	if e.Note != "" {
		s += "  " + e.Note
	}
	return s
}

func diagLater(d time.Duration) string {
	switch {
	case d >= time.Minute:
		return fmt.Sprintf("%s later", d.Round(time.Second))
	default:
		return fmt.Sprintf("%.1f s later", d.Seconds())
	}
}
