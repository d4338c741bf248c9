package pool

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/trace"
)

// The state changes the trace tells, for every rule: the state each server
// starts in, then each health change, then what the selection makes of
// the servers that are up. No socket is involved: the health changes are
// made by hand, as the pool's sockets would make them.
func TestSettleTellsStateChanges(t *testing.T) {
	ps := func(n string) conf.PolicyServer {
		return conf.PolicyServer{Host: "smps" + n + ".shared.lab", AuthorizationPort: 44443}
	}
	hco := func(failover bool, threshold int, clusters ...[]conf.PolicyServer) conf.HCO {
		h := conf.DefaultHCO()
		h.Name, h.EnableFailover, h.FailoverThreshold = "hco.test", failover, threshold
		if len(clusters) == 1 {
			h.PolicyServers = clusters[0]
		} else {
			h.Clusters = clusters
		}
		return h
	}
	two := []conf.PolicyServer{ps("1"), ps("2")}
	const (
		timeout = "no answer within RequestTimeout 60s"
		polled  = "socket 3 connected (health poll)"
		first1  = "new requests go to smps1.shared.lab:44443, the first server up in HCO order"
		first2  = "new requests go to smps2.shared.lab:44443, the first server up in HCO order"
		rr      = "new requests go round robin over the servers that are up"
	)
	type change struct {
		server int
		to     State
		why    string
	}
	tests := []struct {
		name  string
		hco   conf.HCO
		start []State    // health when Start ends
		steps [][]change // settle runs after each group
		want  []string
	}{
		{
			name: "failover: the primary fails, the backup takes over, the primary comes back",
			hco:  hco(true, 0, two), start: []State{Active, Active},
			steps: [][]change{{{0, Failed, timeout}}, {{0, Active, polled}}},
			want: []string{
				"smps1.shared.lab:44443 Active: up at start; " + first1,
				"smps2.shared.lab:44443 Inactive: up at start; " + first1,
				"smps1.shared.lab:44443 Active -> Failed: " + timeout,
				"smps2.shared.lab:44443 Inactive -> Active: " + first2,
				"smps1.shared.lab:44443 Failed -> Active: " + polled,
				"smps2.shared.lab:44443 Active -> Inactive: " + first1,
			},
		},
		{
			name: "failover: the primary is down at start, then found by the health poll",
			hco:  hco(true, 0, two), start: []State{Disabled, Active},
			steps: [][]change{{{0, Active, "socket 1 connected (health poll)"}}},
			want: []string{
				"smps1.shared.lab:44443 Disabled: down at start: connection refused",
				"smps2.shared.lab:44443 Active: up at start; " + first2,
				"smps1.shared.lab:44443 Disabled -> Active: socket 1 connected (health poll)",
				"smps2.shared.lab:44443 Active -> Inactive: " + first1,
			},
		},
		{
			name: "failover: the backup fails and comes back, the primary goes on",
			hco:  hco(true, 0, two), start: []State{Active, Active},
			steps: [][]change{{{1, Failed, "socket 2: EOF"}}, {{1, Active, polled}}},
			want: []string{
				"smps1.shared.lab:44443 Active: up at start; " + first1,
				"smps2.shared.lab:44443 Inactive: up at start; " + first1,
				"smps2.shared.lab:44443 Inactive -> Failed: socket 2: EOF",
				"smps2.shared.lab:44443 Failed -> Inactive: " + polled,
			},
		},
		{
			name: "failover: a failure and a recovery between two settles are both told",
			hco:  hco(true, 0, two), start: []State{Active, Active},
			steps: [][]change{{{0, Failed, timeout}, {0, Active, "socket 3 connected (retried by a request)"}}},
			want: []string{
				"smps1.shared.lab:44443 Active: up at start; " + first1,
				"smps2.shared.lab:44443 Inactive: up at start; " + first1,
				"smps1.shared.lab:44443 Active -> Failed: " + timeout,
				"smps1.shared.lab:44443 Failed -> Active: socket 3 connected (retried by a request)",
			},
		},
		{
			name: "round robin: every server up is Active",
			hco:  hco(false, 0, two), start: []State{Active, Active},
			steps: [][]change{{{0, Failed, timeout}}, {{0, Active, polled}}},
			want: []string{
				"smps1.shared.lab:44443 Active: up at start; " + rr,
				"smps2.shared.lab:44443 Active: up at start; " + rr,
				"smps1.shared.lab:44443 Active -> Failed: " + timeout,
				"smps1.shared.lab:44443 Failed -> Active: " + polled,
			},
		},
		{
			name: "round robin: one down at start",
			hco:  hco(false, 0, two), start: []State{Active, Disabled},
			want: []string{
				"smps1.shared.lab:44443 Active: up at start; " + rr,
				"smps2.shared.lab:44443 Disabled: down at start: connection refused",
			},
		},
		{
			name:  "clusters 60%: one of two down puts the first cluster below, the second takes over",
			hco:   hco(true, 60, []conf.PolicyServer{ps("1"), ps("2")}, []conf.PolicyServer{ps("3"), ps("4")}),
			start: []State{Active, Active, Active, Active},
			steps: [][]change{{{1, Failed, timeout}}, {{1, Active, polled}}},
			want: []string{
				"smps1.shared.lab:44443 Active: up at start; cluster 1 in use (2 of 2 up, FailoverThreshold 60% needs 2); new requests go to the fastest, now smps1.shared.lab:44443",
				"smps2.shared.lab:44443 Active: up at start; cluster 1 in use (2 of 2 up, FailoverThreshold 60% needs 2); new requests go to the fastest, now smps1.shared.lab:44443",
				"smps3.shared.lab:44443 Inactive: up at start; cluster 1 in use (2 of 2 up, FailoverThreshold 60% needs 2); new requests go to the fastest, now smps1.shared.lab:44443",
				"smps4.shared.lab:44443 Inactive: up at start; cluster 1 in use (2 of 2 up, FailoverThreshold 60% needs 2); new requests go to the fastest, now smps1.shared.lab:44443",
				"smps2.shared.lab:44443 Active -> Failed: " + timeout,
				"smps1.shared.lab:44443 Active -> Inactive: cluster 2 in use (2 of 2 up, FailoverThreshold 60% needs 2); cluster 1 has 1 of 2 up; new requests go to the fastest, now smps3.shared.lab:44443",
				"smps3.shared.lab:44443 Inactive -> Active: cluster 2 in use (2 of 2 up, FailoverThreshold 60% needs 2); cluster 1 has 1 of 2 up; new requests go to the fastest, now smps3.shared.lab:44443",
				"smps4.shared.lab:44443 Inactive -> Active: cluster 2 in use (2 of 2 up, FailoverThreshold 60% needs 2); cluster 1 has 1 of 2 up; new requests go to the fastest, now smps3.shared.lab:44443",
				"smps2.shared.lab:44443 Failed -> Active: " + polled,
				"smps1.shared.lab:44443 Inactive -> Active: cluster 1 in use (2 of 2 up, FailoverThreshold 60% needs 2); new requests go to the fastest, now smps1.shared.lab:44443",
				"smps3.shared.lab:44443 Active -> Inactive: cluster 1 in use (2 of 2 up, FailoverThreshold 60% needs 2); new requests go to the fastest, now smps1.shared.lab:44443",
				"smps4.shared.lab:44443 Active -> Inactive: cluster 1 in use (2 of 2 up, FailoverThreshold 60% needs 2); new requests go to the fastest, now smps1.shared.lab:44443",
			},
		},
	}
	hosts, err := trace.NewHosts(map[string][]string{"127.0.0.21": {"smps1.shared.lab"}, "127.0.0.200": {agentHost}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := &buf{}
			rec := trace.NewRecorder(tb, trace.Options{Proc: "w3wp.exe", Role: "hla", Host: agentHost, Hosts: hosts})
			p, err := newPool(t.Context(), Config{HCO: tt.hco, TrustedHost: trustedHost, Secret: secret, Recorder: rec})
			if err != nil {
				t.Fatal(err)
			}
			defer p.stop()
			for i, s := range p.servers {
				s.health = tt.start[i]
				if !s.health.up() {
					s.lastErr = errors.New("connection refused")
				}
			}
			p.started.Store(true)
			p.settle()
			for _, group := range tt.steps {
				for _, ch := range group {
					s := p.servers[ch.server]
					s.mu.Lock()
					s.setHealthLocked(ch.to, ch.why)
					s.mu.Unlock()
				}
				p.settle()
			}
			p.settle() // nothing new: nothing told

			evs := tb.events(t)
			var notes []string
			for _, e := range evs {
				if e.Op != trace.OpServerState || e.Conn != "" || e.LocalHost != agentHost {
					t.Errorf("event %+v, want a Server State on no connection from %s", e, agentHost)
				}
				notes = append(notes, e.Note)
			}
			if !slices.Equal(notes, tt.want) {
				t.Errorf("notes:\n %s\nwant\n %s", strings.Join(notes, "\n "), strings.Join(tt.want, "\n "))
			}
			// The server the hosts map knows is named as a connection's
			// remote end names it.
			if e := evs[0]; e.Remote != "127.0.0.21:44443" || e.RemoteHost != "smps1.shared.lab" || e.Phase != trace.PhaseHCO {
				t.Errorf("first event: remote %q (%q), phase %q; want 127.0.0.21:44443 (smps1.shared.lab), %q", e.Remote, e.RemoteHost, e.Phase, trace.PhaseHCO)
			}
			if len(evs) > len(p.servers) && evs[len(p.servers)].Phase != trace.PhaseRequests {
				t.Errorf("a change after start is in phase %q, want %q", evs[len(p.servers)].Phase, trace.PhaseRequests)
			}
		})
	}
}
