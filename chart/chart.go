package chart

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/guptarohit/asciigraph"

	"github.com/agentlab/agentlab/trace"
)

// ServerLoad is how many agent requests each Policy Server answered, per
// second: what shows a failover and a fail-back at a glance.
type Load struct {
	// Start is the second of the first answer counted.
	Start time.Time
	// Servers are the Policy Servers' host names, in the order asked for.
	Servers []string
	// PerSecond[i][s] is the number of answers from Servers[i] in second
	// s after Start.
	PerSecond [][]int
}

// CountServerLoad counts the responses that the agents on host received
// from each of servers in the requests phase (IsProtected, Login,
// Authorize: the traffic of the page loads, not bootstrap, HCO or
// management), per second.
func CountLoad(evs []trace.Event, host string, servers []string) Load {
	load := Load{Servers: slices.Clone(servers), PerSecond: make([][]int, len(servers))}
	var answered []trace.Event
	for _, e := range evs {
		if e.Op == trace.OpResponse && e.Phase == trace.PhaseRequests && strings.EqualFold(e.LocalHost, host) &&
			slices.ContainsFunc(servers, func(s string) bool { return strings.EqualFold(s, e.RemoteHost) }) {
			answered = append(answered, e)
		}
	}
	if len(answered) == 0 {
		return load
	}
	start := answered[0].T
	for _, e := range answered {
		if e.T.Before(start) {
			start = e.T
		}
	}
	load.Start = start.Truncate(time.Second)
	for _, e := range answered {
		i := slices.IndexFunc(servers, func(s string) bool { return strings.EqualFold(s, e.RemoteHost) })
		sec := int(e.T.Sub(load.Start) / time.Second)
		for len(load.PerSecond[i]) <= sec {
			load.PerSecond[i] = append(load.PerSecond[i], 0)
		}
		load.PerSecond[i][sec]++
	}
	// Every series as long as the run, so that a server that stopped
	// answering shows as zero rather than ending early.
	n := 0
	for _, s := range load.PerSecond {
		n = max(n, len(s))
	}
	for i := range load.PerSecond {
		for len(load.PerSecond[i]) < n {
			load.PerSecond[i] = append(load.PerSecond[i], 0)
		}
	}
	return load
}

// Seconds is how many seconds the load spans.
func (l Load) Seconds() int {
	if len(l.PerSecond) == 0 {
		return 0
	}
	return len(l.PerSecond[0])
}

// chartTicks is how many x-axis ticks to draw for a span of last seconds:
// as many as fit (at most 8) with whole seconds between them.
func chartTicks(last int) int {
	for k := min(8, last+1); k > 2; k-- {
		if last%(k-1) == 0 {
			return k
		}
	}
	return 2
}

// chartMarks tell the series apart without colour (a log file, a pipe).
var chartMarks = []string{"*", "o", "+", "x", "#", "@"}

// WriteServerChart draws the load as a line per server, then the figures
// per second under it, which the chart only approximates when the run is
// longer than the terminal is wide.
func Write(w io.Writer, l Load) error {
	if l.Seconds() == 0 {
		_, err := fmt.Fprintln(w, "No request reached a Policy Server: nothing to chart.")
		return err
	}
	data := make([][]float64, len(l.Servers))
	legends := make([]string, len(l.Servers))
	chars := make([]asciigraph.CharSet, len(l.Servers))
	for i, s := range l.PerSecond {
		data[i] = make([]float64, len(s))
		for j, v := range s {
			data[i][j] = float64(v)
		}
		mark := chartMarks[i%len(chartMarks)]
		legends[i] = fmt.Sprintf("%s (%s)", l.Servers[i], mark)
		chars[i] = asciigraph.CreateCharSet(mark)
	}
	opts := []asciigraph.Option{
		asciigraph.Height(10), asciigraph.LowerBound(0), asciigraph.Precision(0),
		asciigraph.SeriesLegends(legends...), asciigraph.SeriesChars(chars...),
		asciigraph.Caption(fmt.Sprintf("requests answered per second by each Policy Server, from %s (x: seconds)", l.Start.Format("15:04:05"))),
	}
	if n := l.Seconds(); n > 1 {
		opts = append(opts, asciigraph.XAxisRange(0, float64(n-1)), asciigraph.XAxisTickCount(chartTicks(n-1)),
			asciigraph.XAxisValueFormatter(func(v float64) string { return strconv.Itoa(int(math.Round(v))) }))
	}
	// A few columns per second, so that a switch reads as a step; a long
	// run is squeezed to a terminal's width.
	opts = append(opts, asciigraph.Width(min(max(4*l.Seconds(), 40), 72)))
	// No colour was asked for, but the legend still carries resets: a log
	// file or a pipe is better without them.
	chart := strings.ReplaceAll(asciigraph.PlotMany(data, opts...), "\x1b[0m", "")
	if _, err := fmt.Fprintln(w, chart); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%8s", "second")
	for _, s := range l.Servers {
		fmt.Fprintf(&b, " %18s", s)
	}
	b.WriteByte('\n')
	for sec := range l.Seconds() {
		fmt.Fprintf(&b, "%8d", sec)
		for i := range l.Servers {
			fmt.Fprintf(&b, " %18d", l.PerSecond[i][sec])
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}
