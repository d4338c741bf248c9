package narrative

// A Policy Server under load (DOMAIN.md section 9, issue 12): its request
// queue grows behind busy worker threads, the agents give up on requests
// after RequestTimeout and send them again on new connections, the
// connections climb until the server refuses new ones at its limit, and
// page loads fail. Told from the events' load fields only (Queue, Limit,
// Timeout, Resend): a trace without them has none of these steps.

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// RolePolicyServer is the role smps records its trace with: the
// servers' side of the story.
const RolePolicyServer = trace.RolePolicyServer

// LoadWindow bounds a load step: timeouts, refusals and failures go on
// for as long as the server is slow, and a step tells at most this much
// of them, so that a learner sees them go on (or stop) in time.
const LoadWindow = 5 * time.Second

// load gathers the events of the story: the agents' side as Narrate
// selects it, and the Policy Servers' side of the same conversations
// (their local host one of servers, their peer host).
type load struct {
	evs []trace.Event
	// agentOf names the agent process that opened a connection, by its
	// local address, so that a server's refusal names whom it refused.
	agentOf map[string]string
	names   map[string]int
}

// loadSteps tells the story, or nothing when no event has a load field.
func loadSteps(all []trace.Event, host string, servers []string) []Step {
	ld := &load{agentOf: map[string]string{}, names: map[string]int{}}
	story := false
	seen := map[string]map[int]bool{}
	for _, e := range all {
		agent := Selected(&e, host, servers)
		server := narrMatchAny(e.LocalHost, servers) && narrMatch(e.RemoteHost, host) && e.Role == RolePolicyServer
		if !agent && !server {
			continue
		}
		if e.Limit != nil || e.Queue != nil || e.Timeout != nil || e.Resend > 0 {
			story = true
		}
		ld.evs = append(ld.evs, e)
		if agent && e.Role != RolePolicyServer {
			if seen[e.Proc] == nil {
				seen[e.Proc] = map[int]bool{}
			}
			if !seen[e.Proc][e.PID] {
				seen[e.Proc][e.PID] = true
				ld.names[e.Proc]++
			}
		}
	}
	if !story {
		return nil
	}
	slices.SortStableFunc(ld.evs, func(a, b trace.Event) int { return a.T.Compare(b.T) })
	for i := range ld.evs {
		e := &ld.evs[i]
		if e.Op == trace.OpConnect && e.Conn != "" && e.Role != RolePolicyServer {
			ld.agentOf[e.Local] = ld.who(e)
		}
	}
	var steps []Step
	steps = append(steps, ld.queues()...)
	steps = append(steps, ld.connections()...)
	steps = append(steps, ld.timeouts()...)
	steps = append(steps, ld.refusals()...)
	steps = append(steps, ld.failures()...)
	return steps
}

// who names an agent process as the summaries do: by name, unless several
// share it (httpd children).
func (ld *load) who(e *trace.Event) string {
	if ld.names[e.Proc] > 1 {
		return fmt.Sprintf("%s (pid %d)", e.Proc, e.PID)
	}
	return e.Proc
}

func at(t time.Time) string { return "at " + t.Local().Format(TimeLayout) }

// when is a step's time: "at T", or "from T1 to T2" for a second or more.
func when(span narrSpan) string {
	if span.last.Sub(span.first) >= time.Second {
		return "from " + span.first.Local().Format(TimeLayout) + " to " + span.last.Local().Format(TimeLayout)
	}
	return at(span.first)
}

// windows splits time-ordered event indices into runs of at most
// LoadWindow from their first, keyed apart by key.
func (ld *load) windows(idx []int, key func(*trace.Event) string) [][]int {
	var out [][]int
	open := map[string]int{} // key -> index in out
	for _, i := range idx {
		e := &ld.evs[i]
		k := key(e)
		if j, ok := open[k]; ok && e.T.Sub(ld.evs[out[j][0]].T) <= LoadWindow {
			out[j] = append(out[j], i)
			continue
		}
		open[k] = len(out)
		out = append(out, []int{i})
	}
	return out
}

// perSecond lists, second by second from start, the largest of the values
// seen in each second (the last known one for a second with none).
func perSecond(start time.Time, ts []time.Time, vs []int, end time.Time) []int {
	n := int(end.Sub(start)/time.Second) + 1
	out := make([]int, n)
	have := make([]bool, n)
	for i, t := range ts {
		s := int(t.Sub(start) / time.Second)
		if s < 0 || s >= n {
			continue
		}
		if !have[s] || vs[i] > out[s] {
			out[s], have[s] = vs[i], true
		}
	}
	for s := 1; s < n; s++ {
		if !have[s] {
			out[s] = out[s-1]
		}
	}
	return out
}

func ints(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ", ")
}

// queues tells, per Policy Server, each time its request queue held
// requests for a second or more: the depth second by second, its worker
// threads all busy, how long requests waited and what held the workers.
// A queue that empties within the second it formed is everyday business.
func (ld *load) queues() []Step {
	type server struct {
		proc string
		pid  int
		idx  []int
	}
	var order []string
	byHost := map[string]*server{}
	for i := range ld.evs {
		e := &ld.evs[i]
		if e.Queue == nil || e.Role != RolePolicyServer {
			continue
		}
		s := byHost[e.LocalHost]
		if s == nil {
			s = &server{proc: e.Proc, pid: e.PID}
			byHost[e.LocalHost] = s
			order = append(order, e.LocalHost)
		}
		s.idx = append(s.idx, i)
	}
	var steps []Step
	for _, host := range order {
		s := byHost[host]
		for k := 0; k < len(s.idx); {
			if ld.evs[s.idx[k]].Queue.Depth == 0 {
				k++
				continue
			}
			// An episode: from the first queued request to the queue
			// empty again (or the trace's end).
			j := k
			for j < len(s.idx) && ld.evs[s.idx[j]].Queue.Depth > 0 {
				j++
			}
			ep := s.idx[k:j]
			first := &ld.evs[ep[0]]
			end := ld.evs[ep[len(ep)-1]].T
			drained := j < len(s.idx)
			if drained {
				end = ld.evs[s.idx[j]].T
			}
			k = j
			if end.Sub(first.T) < time.Second {
				continue
			}
			var ts []time.Time
			var depths []int
			peak, peakAt, bound, threads := 0, first.T, 0, 0
			var waited time.Duration
			var dir []time.Duration
			// The answer that emptied the queue tells its wait too.
			stats := ep
			if drained {
				stats = append(slices.Clone(ep), s.idx[j])
			}
			for _, i := range stats {
				e := &ld.evs[i]
				q := e.Queue
				if q.Depth == 0 {
					waited = max(waited, q.Waited)
					if q.Directory > 0 {
						dir = append(dir, q.Directory)
					}
					continue
				}
				ts, depths = append(ts, e.T), append(depths, q.Depth)
				if q.Depth > peak {
					peak, peakAt = q.Depth, e.T
				}
				bound, threads = max(bound, q.Bound), max(threads, q.Threads)
				if e.Op == trace.OpResponse {
					waited = max(waited, q.Waited)
					if q.Directory > 0 {
						dir = append(dir, q.Directory)
					}
				}
			}
			text := fmt.Sprintf("%s, %s's worker threads are all busy (%d of %d) and its request queue grows", at(first.T), host, first.Queue.Busy, first.Queue.Threads)
			text += ": depth " + ints(perSecond(first.T.Truncate(time.Second), ts, depths, end)) + " second by second"
			peakText := strconv.Itoa(peak)
			if bound > 0 {
				peakText += fmt.Sprintf(" of its bound %d", bound)
			}
			text += fmt.Sprintf(" (peak %s %s)", peakText, at(peakAt))
			if waited > 0 {
				text += fmt.Sprintf("; requests wait up to %s in the queue", round(waited))
			}
			if len(dir) > 0 {
				slices.Sort(dir)
				text += fmt.Sprintf(", and the user directory holds a worker %s per request (median)", round(dir[len(dir)/2]))
			}
			if drained {
				text += "; the queue is empty again " + at(end)
			} else {
				text += fmt.Sprintf("; it is still %d deep when the trace ends", ld.evs[ep[len(ep)-1]].Queue.Depth)
			}
			steps = append(steps, Step{Proc: s.proc, PID: s.pid, Phase: first.Phase, Text: text + ".", First: first.T, Last: end})
		}
	}
	return steps
}

func round(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// connections tells, per Policy Server that queued or refused, how many
// connections it had open second by second from the story's start to
// their peak: what the agents' resends build up.
func (ld *load) connections() []Step {
	var steps []Step
	type server struct {
		proc        string
		pid         int
		start       time.Time
		ts          []time.Time
		open        []int
		n, peak     int
		peakAt      time.Time
		started, hi bool
	}
	// Each server's story starts at its first sign of load (a refusal, a
	// request that queued), from the count open then.
	var order []string
	by := map[string]*server{}
	startAt := map[string]int{}
	for i := range ld.evs {
		e := &ld.evs[i]
		if e.Role != RolePolicyServer {
			continue
		}
		if by[e.LocalHost] == nil {
			by[e.LocalHost] = &server{proc: e.Proc, pid: e.PID}
			order = append(order, e.LocalHost)
		}
		if _, ok := startAt[e.LocalHost]; !ok && (e.Limit != nil || e.Queue != nil && e.Queue.Depth > 0) {
			startAt[e.LocalHost] = i
		}
	}
	begin := func(s *server, st int) {
		s.started, s.start, s.peak, s.peakAt = true, ld.evs[st].T, s.n, ld.evs[st].T
		s.ts, s.open = append(s.ts, ld.evs[st].T), append(s.open, s.n)
	}
	trace.ServerConns(ld.evs, func(i int, host string, _, after int) {
		s := by[host]
		st, ok := startAt[host]
		if !ok || i < st {
			s.n = after
			return
		}
		if !s.started {
			begin(s, st)
		}
		s.n = after
		s.ts, s.open = append(s.ts, ld.evs[i].T), append(s.open, s.n)
		if s.n > s.peak {
			s.peak, s.peakAt = s.n, ld.evs[i].T
		}
	})
	for host, st := range startAt {
		if s := by[host]; !s.started {
			begin(s, st)
		}
	}
	for _, host := range order {
		s := by[host]
		if !s.started || len(s.ts) == 0 {
			continue
		}
		series := perSecond(s.start.Truncate(time.Second), s.ts, s.open, s.peakAt)
		if len(series) < 2 || series[len(series)-1] <= series[0] {
			continue // nothing climbed
		}
		text := fmt.Sprintf("%s, the connections open to %s climb: %s second by second, to a peak of %d %s",
			at(s.start), host, ints(series), s.peak, at(s.peakAt))
		steps = append(steps, Step{Proc: s.proc, PID: s.pid, Phase: trace.PhaseRequests, Text: text + ".", First: s.start, Last: s.peakAt})
	}
	return steps
}

// timeouts tells the agents giving up on requests after RequestTimeout
// (closing the socket) and sending them again on other connections.
func (ld *load) timeouts() []Step {
	var idx []int
	for i := range ld.evs {
		e := &ld.evs[i]
		if e.Role != RolePolicyServer && (e.Timeout != nil || e.Resend > 0 && e.Op == trace.OpRequest) {
			idx = append(idx, i)
		}
	}
	var steps []Step
	for _, w := range ld.windows(idx, func(*trace.Event) string { return "" }) {
		var span narrSpan
		gaveUp, resent := map[string]int{}, map[string]int{}
		var procs []string
		var calls []*narrReq
		var after time.Duration
		ports := map[string]bool{}
		var resendPorts []string
		timeouts, resends := 0, 0
		for _, i := range w {
			e := &ld.evs[i]
			span.add(e.T)
			who := ld.who(e)
			if !slices.Contains(procs, who) {
				procs = append(procs, who)
			}
			if e.Timeout != nil {
				timeouts++
				gaveUp[who]++
				after = max(after, e.Timeout.After)
				calls = append(calls, &narrReq{kind: e.Timeout.Request})
				continue
			}
			resends++
			resent[who]++
			if p := Port(e.Local); !ports[p] {
				ports[p] = true
				resendPorts = append(resendPorts, p)
			}
		}
		// One process or several: "w3wp.exe gives up ...; it sends",
		// "the agents give up ...; they send".
		subject, giveUp, closes, sends, pronoun := "the agents", "give up", "close", "send", "they"
		if len(procs) == 1 {
			subject, giveUp, closes, sends, pronoun = procs[0], "gives up", "closes", "sends", "it"
		}
		var clauses []string
		if timeouts > 0 {
			sockets := "their sockets"
			if timeouts == 1 {
				sockets = "its socket"
			}
			c := fmt.Sprintf("%s %s on %s after RequestTimeout (%s) and %s %s", subject, giveUp, narrKinds(calls), after, closes, sockets)
			if len(procs) > 1 {
				c += " (" + perProc(procs, gaveUp) + ")"
			}
			clauses = append(clauses, c)
		}
		if resends > 0 {
			c := fmt.Sprintf("%s %s again on ", sends, Count(resends, "request", "requests"))
			if len(resendPorts) == 1 {
				c += "another connection (port " + resendPorts[0] + ")"
			} else {
				c += fmt.Sprintf("%d other connections", len(resendPorts))
			}
			if timeouts == 0 {
				c = subject + " " + c
			} else {
				c = pronoun + " " + c
			}
			if len(procs) > 1 {
				c += " (" + perProc(procs, resent) + ")"
			}
			clauses = append(clauses, c)
		}
		e := &ld.evs[w[0]]
		text := when(span) + ", " + strings.Join(clauses, "; ")
		steps = append(steps, Step{Proc: e.Proc, PID: e.PID, Phase: e.Phase, Text: text + ".", First: span.first, Last: span.last})
	}
	return steps
}

func perProc(procs []string, n map[string]int) string {
	var parts []string
	for _, p := range procs {
		if n[p] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", p, n[p]))
		}
	}
	return strings.Join(parts, ", ")
}

// refusals tells a Policy Server refusing connections at its limit, in
// its log's words, naming the agent process it refused: "smps1.shared.lab
// refuses LLAWP.exe's connection: Connection limit of 256 exceeded".
func (ld *load) refusals() []Step {
	var idx []int
	told := map[string]bool{}
	for i := range ld.evs {
		e := &ld.evs[i]
		if e.Limit == nil {
			continue
		}
		// One refusal may show on several of the server's events (the
		// accept and its close): told once per connection.
		key := e.LocalHost + " " + e.Conn
		if e.Conn == "" {
			key = e.LocalHost + " " + e.Remote
		}
		if told[key] {
			continue
		}
		told[key] = true
		idx = append(idx, i)
	}
	var steps []Step
	for _, w := range ld.windows(idx, func(e *trace.Event) string { return e.LocalHost }) {
		e := &ld.evs[w[0]]
		whom := func(e *trace.Event) string {
			if p := ld.agentOf[e.Remote]; p != "" {
				return p
			}
			if e.RemoteHost != "" {
				return e.RemoteHost
			}
			return "an agent"
		}
		text := fmt.Sprintf("%s, %s refuses %s's connection: Connection limit of %d exceeded", at(e.T), e.LocalHost, whom(e), e.Limit.Max)
		last := e.T
		if len(w) > 1 {
			n := map[string]int{}
			var procs []string
			for _, i := range w[1:] {
				r := &ld.evs[i]
				if p := whom(r); n[p] == 0 {
					procs = append(procs, p)
				}
				n[whom(r)]++
				last = r.T
			}
			sort.Strings(procs)
			text += fmt.Sprintf("; then %d more until %s (%s)", len(w)-1, last.Local().Format(TimeLayout), perProc(procs, n))
		}
		if e.Limit.Message != "" {
			text += fmt.Sprintf(". Its log says %q for each", e.Limit.Message)
		}
		steps = append(steps, Step{Proc: e.Proc, PID: e.PID, Phase: e.Phase, Text: text + ".", First: e.T, Last: last})
	}
	return steps
}

// failures tells the page loads that fail: requests the agents sent that
// got no answer on any connection (the last try unanswered, with no
// resend after it), and connections the server closed before they
// carried a request (the ones refused at its limit).
func (ld *load) failures() []Step {
	type pending struct{ idx []int }
	// at is when a request failed: the end of its connection, or the
	// request itself when the trace ends first.
	failedAt := map[int]int{}
	conns := map[string]*pending{} // agent conn -> unanswered requests, oldest first
	carried := map[string]bool{}
	resentLater := map[string]int{} // proc pid call subject -> highest resend seen
	var unanswered []int
	var refused []int
	for i := range ld.evs {
		e := &ld.evs[i]
		if e.Role == RolePolicyServer || e.Conn == "" {
			continue
		}
		key := e.Proc + " " + strconv.Itoa(e.PID) + " " + e.Conn
		switch e.Op {
		case trace.OpRequest:
			carried[key] = true
			if e.Phase != trace.PhaseRequests {
				continue
			}
			if conns[key] == nil {
				conns[key] = &pending{}
			}
			conns[key].idx = append(conns[key].idx, i)
			rk := fmt.Sprintf("%s %d %s %s", e.Proc, e.PID, e.Request, e.Subject)
			resentLater[rk] = max(resentLater[rk], e.Resend)
		case trace.OpResponse:
			if p := conns[key]; p != nil && len(p.idx) > 0 {
				p.idx = p.idx[1:]
			}
		case trace.OpDisconnect, trace.OpReset:
			if p := conns[key]; p != nil {
				for _, r := range p.idx {
					failedAt[r] = i
				}
				unanswered = append(unanswered, p.idx...)
				p.idx = nil
			}
			if e.Peer && !carried[key] && e.Phase == trace.PhaseRequests {
				refused = append(refused, i)
			}
		}
	}
	for _, p := range conns {
		for _, r := range p.idx {
			failedAt[r] = r
		}
		unanswered = append(unanswered, p.idx...)
	}
	// A try that a later resend took over is no failure yet.
	var failed []int
	for _, i := range unanswered {
		e := &ld.evs[i]
		rk := fmt.Sprintf("%s %d %s %s", e.Proc, e.PID, e.Request, e.Subject)
		if resentLater[rk] > e.Resend {
			continue
		}
		failed = append(failed, i)
	}
	// Told at the time each failed: a request by its connection's end.
	type failure struct{ req, at int }
	var fs []failure
	for _, i := range failed {
		fs = append(fs, failure{i, failedAt[i]})
	}
	for _, i := range refused {
		fs = append(fs, failure{-1, i})
	}
	slices.SortFunc(fs, func(a, b failure) int { return a.at - b.at })
	var all []int
	req := map[int]int{} // the failure's event -> its request, for ends that failed several
	for _, f := range fs {
		all = append(all, f.at)
		if f.req >= 0 {
			req[len(all)-1] = f.req
		}
	}
	var steps []Step
	pos := 0
	for _, w := range ld.windows(all, func(*trace.Event) string { return "" }) {
		var span narrSpan
		var reqs []*narrReq
		closed := map[string]int{}
		for _, i := range w {
			e := &ld.evs[i]
			span.add(e.T)
			if r, ok := req[pos]; ok {
				reqs = append(reqs, &narrReq{kind: Call(&ld.evs[r])})
			} else {
				closed[e.RemoteHost]++
			}
			pos++
		}
		var clauses []string
		if len(reqs) > 0 {
			verb := "get"
			if len(reqs) == 1 {
				verb = "gets"
			}
			clauses = append(clauses, fmt.Sprintf("%s %s no answer on any connection", narrKinds(reqs), verb))
		}
		var hosts []string
		for h := range closed {
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
		for _, h := range hosts {
			clauses = append(clauses, fmt.Sprintf("%s closes %s before it carries a request", h, Count(closed[h], "agent connection", "agent connections")))
		}
		e := &ld.evs[w[0]]
		text := when(span) + ", " + strings.Join(clauses, ", and ") + ": the page loads that waited on them fail"
		steps = append(steps, Step{Proc: e.Proc, PID: e.PID, Phase: e.Phase, Text: text + ".", First: span.first, Last: span.last})
	}
	return steps
}
