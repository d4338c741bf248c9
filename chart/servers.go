package chart

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// Gauges are a Policy Server's state second by second, beside the
// requests it answered (Load): the connections it had open and the
// requests waiting in its queue. Either from the processes' scraped
// /metrics or from the servers' trace (GaugesFromTrace); Source says
// which, for the chart's caption.
type Gauges struct {
	// Start is the second Open[i][0] and Queue[i][0] tell, a Load's Start.
	Start   time.Time
	Servers []string
	// Open[i][s] and Queue[i][s] are the largest values seen for
	// Servers[i] in second s; -1 where nothing was seen.
	Open, Queue [][]int
	Source      string
}

// NewGauges is Gauges for servers over seconds from start, nothing seen yet.
func NewGauges(start time.Time, servers []string, seconds int, source string) Gauges {
	g := Gauges{Start: start, Servers: append([]string(nil), servers...), Source: source,
		Open: make([][]int, len(servers)), Queue: make([][]int, len(servers))}
	for i := range servers {
		g.Open[i], g.Queue[i] = unseen(seconds), unseen(seconds)
	}
	return g
}

func unseen(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = -1
	}
	return s
}

// Set records a value seen at t into series (Open or Queue) for the
// server at index i: the second keeps its largest. Outside the span it
// is left out.
func (g Gauges) Set(series [][]int, i int, t time.Time, v int) {
	if i < 0 || i >= len(series) || t.Before(g.Start) {
		return
	}
	s := int(t.Sub(g.Start) / time.Second)
	if s >= len(series[i]) {
		return
	}
	series[i][s] = max(series[i][s], v)
}

// Any tells whether anything was seen.
func (g Gauges) Any() bool {
	for _, series := range [][][]int{g.Open, g.Queue} {
		for _, s := range series {
			for _, v := range s {
				if v >= 0 {
					return true
				}
			}
		}
	}
	return false
}

// GaugesFromTrace reads the gauges from the Policy Servers' own events
// (role policyserver, their host one of servers): connections open from
// their accepts and ends (a connection refused at the limit is none), the
// queue from the Queue field of their Request and Response events. Only a
// trace with Queue or Limit fields has anything to chart: without them
// nothing is seen, and Any is false.
func GaugesFromTrace(evs []trace.Event, servers []string, start time.Time, seconds int) Gauges {
	g := NewGauges(start, servers, seconds, "from the trace")
	load := false
	for _, e := range evs {
		if e.Limit != nil || e.Queue != nil {
			load = true
			break
		}
	}
	if !load {
		return g
	}
	trace.ServerConns(evs, func(j int, server string, before, after int) {
		i := serverIndex(servers, server)
		if i < 0 {
			return
		}
		// A second's figure is its most: with a close, the count before it.
		g.Set(g.Open, i, evs[j].T, max(before, after))
	})
	for _, e := range evs {
		if e.Role != trace.RolePolicyServer || e.Queue == nil {
			continue
		}
		if i := serverIndex(servers, e.LocalHost); i >= 0 {
			g.Set(g.Queue, i, e.T, e.Queue.Depth)
		}
	}
	// A second with no change holds the count of the second before.
	for i := range servers {
		for s := 1; s < seconds; s++ {
			if g.Open[i][s] < 0 {
				g.Open[i][s] = g.Open[i][s-1]
			}
		}
	}
	return g
}

func serverIndex(servers []string, host string) int {
	for i, s := range servers {
		if strings.EqualFold(s, host) {
			return i
		}
	}
	return -1
}

// WriteServers writes, second by second, each Policy Server's requests
// answered (l) beside its connections open and its queue depth (g), as
// a table: "-" where nothing was seen that second.
func WriteServers(w io.Writer, l Load, g Gauges) error {
	if l.Seconds() == 0 {
		_, err := fmt.Fprintln(w, "No request reached a Policy Server: nothing to chart.")
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Per second, by Policy Server: requests answered, connections open, requests queued (the last two %s, from %s):\n\n",
		g.Source, l.Start.Format("15:04:05"))
	fmt.Fprintf(&b, "%8s", "")
	for _, s := range l.Servers {
		fmt.Fprintf(&b, "  %-26s", s)
	}
	fmt.Fprintf(&b, "\n%8s", "second")
	for range l.Servers {
		fmt.Fprintf(&b, "  %8s %8s %8s", "answered", "open", "queued")
	}
	b.WriteByte('\n')
	cell := func(series [][]int, i, s int) string {
		gi := serverIndex(g.Servers, l.Servers[i])
		if gi < 0 || s >= len(series[gi]) || series[gi][s] < 0 {
			return "-"
		}
		return fmt.Sprint(series[gi][s])
	}
	for s := range l.Seconds() {
		fmt.Fprintf(&b, "%8d", s)
		for i := range l.Servers {
			fmt.Fprintf(&b, "  %8d %8s %8s", l.PerSecond[i][s], cell(g.Open, i, s), cell(g.Queue, i, s))
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}
