package chart

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
)

func TestGaugesFromTrace(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	const wa, s1, s2 = "wa1.shared.lab", "smps1.shared.lab", "smps2.shared.lab"
	srv := func(at time.Duration, host, op, conn string, q *trace.QueueState, lim *trace.ConnLimit) trace.Event {
		return trace.Event{T: t0.Add(at), Role: "policyserver", Op: op, Conn: conn, LocalHost: host, RemoteHost: wa, Queue: q, Limit: lim}
	}
	depth := func(d int) *trace.QueueState { return &trace.QueueState{Depth: d, Busy: 2, Threads: 2} }
	lim := &trace.ConnLimit{Max: 2, Message: "Connection request rejected. Connection limit of 2 exceeded."}
	tests := []struct {
		name        string
		evs         []trace.Event
		open, queue [][]int
		any         bool
	}{
		{"no load fields: nothing seen", []trace.Event{
			srv(0, s1, trace.OpAccept, "a", nil, nil),
		}, [][]int{{-1, -1, -1}, {-1, -1, -1}}, [][]int{{-1, -1, -1}, {-1, -1, -1}}, false},
		{"climb, refuse, queue, drain", []trace.Event{
			srv(0, s1, trace.OpAccept, "a", nil, nil),
			srv(100*time.Millisecond, s1, trace.OpRequest, "a", depth(1), nil),
			srv(1100*time.Millisecond, s1, trace.OpAccept, "b", nil, nil),
			srv(1200*time.Millisecond, s1, trace.OpRequest, "b", depth(4), nil),
			srv(1300*time.Millisecond, s1, trace.OpRequest, "b", depth(3), nil),
			// refused at the limit: not an open connection
			srv(1400*time.Millisecond, s1, trace.OpAccept, "c", nil, lim),
			srv(1400*time.Millisecond, s1, trace.OpDisconnect, "c", nil, lim),
			srv(2500*time.Millisecond, s1, trace.OpDisconnect, "a", nil, nil),
			srv(2600*time.Millisecond, s1, trace.OpResponse, "b", depth(0), nil),
			// another server's and a client's events stay apart
			srv(500*time.Millisecond, s2, trace.OpAccept, "z", nil, nil),
			{T: t0, Role: "hla", Op: trace.OpConnect, Conn: "x", LocalHost: wa, RemoteHost: s1},
		}, [][]int{{1, 2, 2}, {1, 1, 1}}, [][]int{{1, 4, 0}, {-1, -1, -1}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := GaugesFromTrace(tt.evs, []string{s1, s2}, t0, 3)
			if !slices.EqualFunc(g.Open, tt.open, slices.Equal) || !slices.EqualFunc(g.Queue, tt.queue, slices.Equal) || g.Any() != tt.any {
				t.Errorf("open %v queue %v any %v, want %v %v %v", g.Open, g.Queue, g.Any(), tt.open, tt.queue, tt.any)
			}
		})
	}
}

func TestWriteServers(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	l := Load{Start: t0, Servers: []string{"smps1.shared.lab"}, PerSecond: [][]int{{40, 3}}}
	g := NewGauges(t0, l.Servers, 2, "from metrics.jsonl")
	g.Set(g.Open, 0, t0.Add(100*time.Millisecond), 12)
	g.Set(g.Open, 0, t0.Add(1100*time.Millisecond), 256)
	g.Set(g.Queue, 0, t0.Add(1200*time.Millisecond), 64)
	g.Set(g.Queue, 0, t0.Add(5*time.Second), 9) // past the span: left out
	var b bytes.Buffer
	if err := WriteServers(&b, l, g); err != nil {
		t.Fatal(err)
	}
	want := `Per second, by Policy Server: requests answered, connections open, requests queued (the last two from metrics.jsonl, from 10:00:00):

          smps1.shared.lab          
  second  answered     open   queued
       0        40       12        -
       1         3      256       64
`
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", strings.ReplaceAll(got, " ", "."), strings.ReplaceAll(want, " ", "."))
	}
}
