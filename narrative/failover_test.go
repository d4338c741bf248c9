package narrative

import (
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
	"github.com/agentlab/agentlab/trace/tracetest"
)

func TestNarrateFailover(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.Local)
	const wa = "wa1.shared.lab"
	// state is a Server State event of host's server, as pool records it.
	state := func(at time.Duration, host, phase, from, to, why, err string) trace.Event {
		e := tracetest.State(host+":44443", from, to, why, err)
		e.T, e.Proc, e.PID, e.LocalHost, e.RemoteHost, e.Phase = t0.Add(at), "w3wp.exe", 42, wa, host, phase
		return e
	}
	tests := []struct {
		name string
		evs  []trace.Event
		want []string
	}{
		{"up at start says nothing", []trace.Event{
			state(0, "smps1.shared.lab", trace.PhaseHCO, "", trace.StateActive, "up at start; new requests go to smps1.shared.lab:44443, the first server up in HCO order", ""),
			state(0, "smps2.shared.lab", trace.PhaseHCO, "", trace.StateInactive, "up at start; new requests go to smps1.shared.lab:44443, the first server up in HCO order", ""),
		}, nil},
		{"down at start", []trace.Event{
			state(0, "smps1.shared.lab", trace.PhaseHCO, "", trace.StateDisabled, "", "connect: connection refused"),
		}, []string{"at 10:00:00.000, w3wp.exe finds smps1.shared.lab down at start (connect: connection refused): it is Disabled and retried by the health poll."}},
		{"failover, then fail-back", []trace.Event{
			state(5*time.Second, "smps1.shared.lab", trace.PhaseRequests, trace.StateActive, trace.StateFailed, "no answer within RequestTimeout 60s", ""),
			state(5*time.Second+time.Millisecond, "smps2.shared.lab", trace.PhaseRequests, trace.StateInactive, trace.StateActive, "new requests go to smps2.shared.lab:44443, the first server up in HCO order", ""),
			state(40*time.Second, "smps1.shared.lab", trace.PhaseRequests, trace.StateFailed, trace.StateActive, "socket 5 connected (health poll)", ""),
			state(40*time.Second, "smps2.shared.lab", trace.PhaseRequests, trace.StateActive, trace.StateInactive, "new requests go to smps1.shared.lab:44443, the first server up in HCO order", ""),
		}, []string{
			"at 10:00:05.000, w3wp.exe marks smps1.shared.lab unavailable (no answer within RequestTimeout 60s); next requests go to smps2.shared.lab.",
			"at 10:00:40.000, w3wp.exe sees smps1.shared.lab back (socket 5 connected (health poll)): new sockets go to it; puts smps2.shared.lab on standby.",
		}},
		{"back but standing by", []trace.Event{
			state(0, "smps2.shared.lab", trace.PhaseRequests, trace.StateFailed, trace.StateInactive, "socket 3 connected (health poll)", ""),
		}, []string{"at 10:00:00.000, w3wp.exe sees smps2.shared.lab back (socket 3 connected (health poll)), standing by as Inactive."}},
		{"an event without its state is left out", []trace.Event{
			{T: t0, Proc: "w3wp.exe", PID: 42, Op: trace.OpServerState, LocalHost: wa, RemoteHost: "smps1.shared.lab", Phase: trace.PhaseRequests,
				Note: "smps1.shared.lab:44443 Active -> Failed: a trace from before the state field"},
		}, nil},
		{"a standby that goes down is unavailable too", []trace.Event{
			state(0, "smps1.shared.lab", trace.PhaseRequests, trace.StateInactive, trace.StateDisabled, "odd", ""),
		}, []string{"at 10:00:00.000, w3wp.exe marks smps1.shared.lab unavailable (odd)."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, s := range Narrate(tt.evs, wa, []string{"smps1.shared.lab", "smps2.shared.lab"}) {
				got = append(got, s.Text)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestNarrateHealthPollFails: a health poll knocking on a server that
// stays down is one step, however many seconds it lasts.
func TestNarrateHealthPollFails(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.Local)
	fail := func(at time.Duration) trace.Event {
		return trace.Event{T: t0.Add(at), Proc: "w3wp.exe", PID: 42, Op: trace.OpConnect, Remote: "127.0.0.21:44443",
			LocalHost: "wa1.shared.lab", RemoteHost: "smps1.shared.lab", Phase: trace.PhaseRequests, Note: "failed: connect: connection refused", Error: "connection refused"}
	}
	tests := []struct {
		name string
		evs  []trace.Event
		want string
	}{
		{"one", []trace.Event{fail(0)}, "at 10:00:00.000, w3wp.exe (pid 42) fails to connect to smps1.shared.lab:44443: connection refused."},
		{"close together", []trace.Event{fail(0), fail(500 * time.Millisecond)}, "at 10:00:00.000, w3wp.exe (pid 42) fails to connect to smps1.shared.lab:44443 2 times: connection refused."},
		{"every 2 s", []trace.Event{fail(0), fail(2 * time.Second), fail(4 * time.Second)}, "at 10:00:00.000, w3wp.exe (pid 42) fails to connect to smps1.shared.lab:44443 3 times until 10:00:04.000: connection refused."},
	}
	for _, tt := range tests {
		steps := Narrate(tt.evs, "wa1.shared.lab", []string{"smps1.shared.lab"})
		if len(steps) != 1 || steps[0].Text != tt.want {
			var got []string
			for _, s := range steps {
				got = append(got, s.Text)
			}
			t.Errorf("%s: steps %q, want %q", tt.name, got, tt.want)
		}
	}
}
