package chart

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
)

func TestCountServerLoad(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 400e6, time.UTC)
	resp := func(at time.Duration, local, remote, phase string) trace.Event {
		return trace.Event{T: t0.Add(at), Op: trace.OpResponse, LocalHost: local, RemoteHost: remote, Phase: phase, Note: "IsProtected /"}
	}
	const wa, s1, s2 = "wa1.shared.lab", "smps1.shared.lab", "smps2.shared.lab"
	tests := []struct {
		name string
		evs  []trace.Event
		want [][]int
	}{
		{"nothing", nil, [][]int{nil, nil}},
		{"failover then fail-back", []trace.Event{
			resp(0, wa, s1, trace.PhaseRequests), resp(300*time.Millisecond, wa, s1, trace.PhaseRequests), // second 0
			resp(time.Second, wa, s2, trace.PhaseRequests),   // second 1: smps1 gone
			resp(2*time.Second, wa, s2, trace.PhaseRequests), // second 2
			resp(3*time.Second, wa, s1, trace.PhaseRequests), // second 3: back
		}, [][]int{{2, 0, 0, 1}, {0, 1, 1, 0}}},
		{"only the requests phase of the web server's agents", []trace.Event{
			resp(0, wa, s1, trace.PhaseRequests),
			resp(0, wa, s1, trace.PhaseManagement),
			resp(0, wa, s1, trace.PhaseHCO),
			resp(0, "smps2.shared.lab", s1, trace.PhaseRequests),
			{T: t0, Op: trace.OpRequest, LocalHost: wa, RemoteHost: s1, Phase: trace.PhaseRequests},
		}, [][]int{{1}, {0}}},
		{"a server that never answered is all zeros", []trace.Event{
			resp(0, wa, s1, trace.PhaseRequests), resp(1500*time.Millisecond, wa, s1, trace.PhaseRequests),
		}, [][]int{{1, 1}, {0, 0}}},
		{"host names match whatever their case", []trace.Event{resp(0, "WA1.shared.lab", "SMPS2.shared.lab", trace.PhaseRequests)}, [][]int{{0}, {1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := CountLoad(tt.evs, wa, []string{s1, s2})
			for i := range tt.want {
				if !slices.Equal(l.PerSecond[i], tt.want[i]) {
					t.Errorf("%s: %v, want %v", l.Servers[i], l.PerSecond[i], tt.want[i])
				}
			}
			if len(tt.evs) > 0 && !l.Start.Equal(t0.Truncate(time.Second)) {
				t.Errorf("start %v, want %v", l.Start, t0.Truncate(time.Second))
			}
		})
	}
}

func TestWriteServerChart(t *testing.T) {
	l := Load{
		Start:     time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		Servers:   []string{"smps1.shared.lab", "smps2.shared.lab"},
		PerSecond: [][]int{{200, 210, 0, 0, 190}, {0, 0, 205, 198, 3}},
	}
	var b strings.Builder
	if err := Write(&b, l); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"smps1.shared.lab (*)", "smps2.shared.lab (o)", "from 10:00:00",
		"       2                  0                205", // the switch
		"       4                190                  3", // the fail-back
	} {
		if !strings.Contains(out, want) {
			t.Errorf("chart lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	Write(&b, Load{Servers: []string{"smps1.shared.lab"}, PerSecond: [][]int{nil}})
	if !strings.Contains(b.String(), "nothing to chart") {
		t.Errorf("empty load: %q", b.String())
	}
}

func TestChartTicks(t *testing.T) {
	for _, tt := range []struct{ last, want int }{{1, 2}, {2, 3}, {4, 5}, {7, 8}, {20, 6}, {21, 8}, {13, 2}, {100, 6}} {
		if got := chartTicks(tt.last); got != tt.want {
			t.Errorf("chartTicks(%d) = %d, want %d", tt.last, got, tt.want)
		}
	}
}
