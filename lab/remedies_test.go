package lab

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
)

const remediesLab = `name: x
hosts: {wa1: 127.0.0.11, ps1: 127.0.0.21}
policy_servers: [{host: ps1, port: 44443, max_conns: 8, threads: 2}]
web_server: {host: wa1, http_port: 8080, trusted_host: t, host_config_object: h, agent_config_object: a, bootstrap: [ps1]}
admin: {user: a, password: b}
user: {name: u, password: p}
faults:
  - {at: 5s, server: ps1, action: stall 3s}
remedies:
  - name: more threads
    threads: 16
  - name: larger limit
    max_conns: 256
  - name: a restart
    faults:
      - {at: 8s, server: ps1, action: kill}
      - {at: 9s, server: ps1, action: restart}
`

func TestRemediesParse(t *testing.T) {
	l, err := Parse("lab.yaml", "", []byte(remediesLab))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Remedies) != 3 {
		t.Fatalf("remedies %+v", l.Remedies)
	}
	cases := []struct {
		remedy           int
		threads, maxConn int
		faults           []string
	}{
		{0, 16, 8, []string{"stall 3s"}},
		{1, 2, 256, []string{"stall 3s"}},
		{2, 2, 8, []string{"stall 3s", "kill", "restart"}},
	}
	for _, c := range cases {
		rl := l.WithRemedy(l.Remedies[c.remedy])
		ps := rl.PolicyServers[0]
		var faults []string
		for _, f := range rl.Faults {
			faults = append(faults, f.Action.String())
			if f.addr != "ps1:44443" {
				t.Errorf("remedy %d: fault %s not validated (addr %q)", c.remedy, f.Action, f.addr)
			}
		}
		if ps.Threads != c.threads || ps.MaxConns != c.maxConn || strings.Join(faults, ",") != strings.Join(c.faults, ",") || rl.Remedies != nil {
			t.Errorf("remedy %d: threads %d max_conns %d faults %q", c.remedy, ps.Threads, ps.MaxConns, faults)
		}
	}
	// The lab itself is left as it was.
	if l.PolicyServers[0].Threads != 2 || len(l.Faults) != 1 {
		t.Errorf("the lab changed: %+v %d faults", l.PolicyServers[0], len(l.Faults))
	}

	bad := []struct{ name, from, to, want string }{
		{"no name", "  - name: more threads\n", "  - threads: 4\n  - name: more threads\n", "remedy 1 has no name"},
		{"negative", "threads: 16", "threads: -1", "threads and max_conns must not be negative"},
		{"bad fault", "action: kill}", "action: explode}", `lab.yaml:16: remedy "a restart" fault 1: unknown action "explode"`},
		{"unknown server", "{at: 8s, server: ps1", "{at: 8s, server: ps9", `remedy "a restart" fault 1: server "ps9" is not one of the lab's policy servers`},
		{"unknown key", "    max_conns: 256", "    max_conn: 256", "max_conn"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("lab.yaml", "", []byte(strings.Replace(remediesLab, c.from, c.to, 1)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want %q", err, c.want)
			}
		})
	}
}

func TestRemedyFigures(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	answer := func(at time.Duration) trace.Event {
		return trace.Event{T: t0.Add(at), Role: "hla", Op: trace.OpResponse, Phase: trace.PhaseRequests, LocalHost: "wa1", RemoteHost: "smps1"}
	}
	timeout := trace.Event{T: t0.Add(2 * time.Second), Role: "hla", Op: trace.OpDisconnect, Timeout: &trace.RequestTimeout{After: 2 * time.Second}}
	refusal := trace.Event{T: t0.Add(6500 * time.Millisecond), Role: "policyserver", Op: trace.OpAccept, Limit: &trace.ConnLimit{Max: 8}}
	var sum Summary
	sum.Requests.Sent, sum.Requests.Failed = 100, 7
	cases := []struct {
		name      string
		evs       []trace.Event
		troubles  int
		recovered bool
		outage    time.Duration
		cell      string
	}{
		{"no build-up", []trace.Event{answer(0), answer(10 * time.Second)}, 0, false, 0, "no build-up"},
		{"recovered", []trace.Event{answer(0), timeout, refusal, answer(10 * time.Second)}, 2, true, 4500 * time.Millisecond, "4.5s"},
		{"not quiet long enough", []trace.Event{answer(0), timeout, refusal, answer(8 * time.Second)}, 2, false, 0, "not within the run"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := ComputeRemedyFigures(c.evs, sum)
			if f.Troubles != c.troubles || f.Recovered != c.recovered || f.Outage != c.outage || f.Failed != 7 || f.Sent != 100 {
				t.Errorf("figures %+v", f)
			}
			var b bytes.Buffer
			if err := WriteRemedyTable(&b, []RemedyRun{{Remedy: "none", RemedyFigures: f}, {Remedy: "broken", Error: "smps1: no such flag"}}, []string{"smps1"}); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(b.String()), "\n")
			if len(lines) != 3 || !strings.HasPrefix(lines[0], "remedy") || !strings.Contains(lines[1], "7 of 100") ||
				!strings.HasSuffix(lines[1], c.cell) || !strings.Contains(lines[2], "failed: smps1: no such flag") {
				t.Errorf("table:\n%s", b.String())
			}
		})
	}
}

// TestServerPeakOpen: the remedies table's peak is the server's count of
// connections it held: those the agents gave up on (reset) stay counted
// until the server closes its end; refused ones never count.
func TestServerPeakOpen(t *testing.T) {
	ev := func(op, conn string, limit bool) trace.Event {
		e := trace.Event{Role: "policyserver", Op: op, Conn: conn, LocalHost: "smps1"}
		if limit {
			e.Limit = &trace.ConnLimit{Max: 2, Message: "Connection request rejected. Connection limit of 2 exceeded."}
		}
		return e
	}
	agentReset := trace.Event{Role: "hla", Op: trace.OpReset, Conn: "a-1", LocalHost: "wa1", RemoteHost: "smps1"}
	tests := []struct {
		name string
		evs  []trace.Event
		want int
	}{
		{"none", nil, 0},
		{"one at a time", []trace.Event{ev(trace.OpAccept, "1", false), ev(trace.OpDisconnect, "1", false), ev(trace.OpAccept, "2", false)}, 1},
		{"the agent's reset does not close the server's end",
			[]trace.Event{ev(trace.OpAccept, "1", false), agentReset, ev(trace.OpAccept, "2", false), ev(trace.OpAccept, "3", false)}, 3},
		{"refused at the limit: not counted",
			[]trace.Event{ev(trace.OpAccept, "1", false), ev(trace.OpAccept, "2", false), ev(trace.OpAccept, "3", false), ev(trace.OpDisconnect, "3", true)}, 2},
		{"a reset after a disconnect closes once",
			[]trace.Event{ev(trace.OpAccept, "1", false), ev(trace.OpAccept, "2", false), ev(trace.OpDisconnect, "1", false), ev(trace.OpReset, "1", false), ev(trace.OpAccept, "3", false)}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := serverPeakOpen(tt.evs)["smps1"]; got != tt.want {
				t.Errorf("peak %d, want %d", got, tt.want)
			}
		})
	}
}
