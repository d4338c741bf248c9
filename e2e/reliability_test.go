package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// The failover lab's settings that the reliability figures depend on
// (labs/failover.yaml, hco.failover in labs/seed-store.yaml).
const (
	failoverRequestTimeout = 2 * time.Second
	failoverHealthPoll     = 2 * time.Second
)

// failoverRun is what a reliability run left in summary.json and
// trace.jsonl.
type failoverRun struct {
	Requests struct {
		Sent, Succeeded, Failed int
		// Skipped are the rate's slots every browser was too busy for.
		Skipped   int
		MaxMs     float64 `json:"max_ms"`
		ElapsedMs float64 `json:"elapsed_ms"`
		Errors    []string
	}
	Faults []struct {
		Action  string
		Server  string
		Applied bool
		Time    time.Time
		Result  string
	}
	evs []trace.Event
}

func runFailoverLab(t testing.TB, rest string, flags ...string) failoverRun {
	t.Helper()
	labFile, _ := failoverLab(t, rest)
	out := t.TempDir()
	r := runCmd(t, nil, "agentlab", append([]string{"run", labFile, "--out", out, "--bin", binDir, "--poll", "1s"}, flags...)...)
	if r.code != 0 {
		t.Fatalf("agentlab run: exit %d\nstdout (end):\n%s\nstderr:\n%s", r.code, tail(r.stdout, 4000), r.stderr)
	}
	var run failoverRun
	data, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &run); err != nil {
		t.Fatal(err)
	}
	for _, f := range run.Faults {
		if !f.Applied {
			t.Fatalf("fault %s %s not applied: %s", f.Action, f.Server, data)
		}
	}
	if run.evs, err = trace.ReadFile(filepath.Join(out, "trace.jsonl")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"marks smps1.shared.lab unavailable", "next requests go to smps2.shared.lab", "sees smps1.shared.lab back", "Requests answered per second"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the report does not say %q", want)
		}
	}
	return run
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// backOnPrimary is when w3wp.exe's pool took smps1 back after t0 (its
// Server State event), and the first answer smps1 gave it after that.
func (r failoverRun) backOnPrimary(t0 time.Time) (state, answer time.Time) {
	for _, e := range r.evs {
		if e.Proc != "w3wp.exe" || e.RemoteHost != "smps1.shared.lab" || e.T.Before(t0) {
			continue
		}
		if state.IsZero() && e.Op == trace.OpServerState && e.State != nil && e.State.From != "" && e.State.To == trace.StateActive {
			state = e.T
		}
		if answer.IsZero() && !state.IsZero() && e.Op == trace.OpResponse && e.Phase == trace.PhaseRequests {
			answer = e.T
		}
	}
	return state, answer
}

// TestFailoverReliability: a steady load through the IIS model while the
// primary Policy Server dies (SIGKILL) or stalls, with EnableFailover=yes:
// no page load fails, none waits much longer than one RequestTimeout, and
// once the primary is back the agent returns to it within one health poll.
func TestFailoverReliability(t *testing.T) {
	rate := 200
	if raceEnabled {
		// Every binary is built with the race detector: 2 cores carry
		// half the load.
		rate = 100
	}
	workload := "workload:\n  duration: 7s\n  rate: " + strconv.Itoa(rate) + "\n  concurrency: 8\n"
	tests := []struct {
		name   string
		faults string
		// back is the fault after which the primary is up again; the
		// fail-back is measured from it.
		back  string
		grace time.Duration // what may pass on top of a health poll
	}{
		{"kill", "faults:\n  - {at: 2s, server: smps1, action: kill}\n  - {at: 4s, server: smps1, action: restart}\n", "restart", time.Second},
		// A stalled server accepts the health poll's connection but
		// answers its handshake only when the stall ends: that poll may
		// wait up to a RequestTimeout.
		{"stall", "faults:\n  - {at: 2s, server: smps1, action: stall 2500ms}\n", "stall", failoverRequestTimeout + time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			run := runFailoverLab(t, workload+tt.faults)
			q := run.Requests
			t.Logf("%s: %d page loads in %.1f s (%.0f/s), %d failed, %d skipped, slowest %.0f ms", tt.name, q.Sent, q.ElapsedMs/1000, float64(q.Sent)/(q.ElapsedMs/1000), q.Failed, q.Skipped, q.MaxMs)
			if q.Failed != 0 || q.Sent == 0 {
				t.Errorf("%d of %d page loads failed: %v", q.Failed, q.Sent, q.Errors)
			}
			if limit := failoverRequestTimeout + time.Second; time.Duration(q.MaxMs*float64(time.Millisecond)) > limit {
				t.Errorf("the slowest page load took %.0f ms, more than one RequestTimeout (%v) and a second", q.MaxMs, failoverRequestTimeout)
			}
			// While the stall holds every browser, the workload skips the
			// slots rather than sending them in a burst after: the slots
			// keep the rate, and only those of one RequestTimeout or so
			// go unsent.
			if got := float64(q.Sent+q.Skipped) / (q.ElapsedMs / 1000); !raceEnabled && got < 0.9*float64(rate) {
				t.Errorf("the load was %.0f page loads/s (%d skipped), want about %d", got, q.Skipped, rate)
			}
			if most := int(float64(rate) * (failoverRequestTimeout + time.Second).Seconds()); !raceEnabled && q.Skipped > most {
				t.Errorf("%d page loads skipped, want at most %d (a RequestTimeout and a second at %d/s)", q.Skipped, most, rate)
			}
			var up time.Time
			for _, f := range run.Faults {
				if f.Action == tt.back || strings.HasPrefix(f.Action, tt.back) {
					up = f.Time
				}
			}
			if tt.name == "stall" {
				up = up.Add(2500 * time.Millisecond) // the stall's end
			}
			state, answer := run.backOnPrimary(up)
			if state.IsZero() || answer.IsZero() {
				t.Fatalf("w3wp.exe never went back to smps1 after %s", up.Format(time.StampMilli))
			}
			t.Logf("%s: smps1 up again at %s; w3wp.exe's pool took it back %v later, first answer %v later",
				tt.name, up.Format(time.StampMilli), state.Sub(up).Round(time.Millisecond), answer.Sub(up).Round(time.Millisecond))
			if limit := failoverHealthPoll + tt.grace; answer.Sub(up) > limit {
				t.Errorf("fail-back took %v after smps1 was back, more than one health poll (%v) and %v", answer.Sub(up), failoverHealthPoll, tt.grace)
			}
		})
	}
}

// failbackDone is how long after t0 the web server's workers still had
// requests answered by the backup: when the last of them had moved back
// to smps1. Zero when none was answered by smps2 after t0.
func (r failoverRun) failbackDone(t0 time.Time) time.Duration {
	var last time.Time
	for _, e := range r.evs {
		if e.Role == "hla" && e.Op == trace.OpResponse && e.Phase == trace.PhaseRequests &&
			e.RemoteHost == "smps2.shared.lab" && e.T.After(t0) {
			last = e.T
		}
	}
	if last.IsZero() {
		return 0
	}
	return last.Sub(t0)
}

// BenchmarkFailback measures the failover lab under 200 page loads/s:
// failed page loads, the slowest one, and how long after the primary's
// restart the last web worker still used the backup, for IIS and for
// Apache prefork with and without child recycling, with a 10 s health
// poll. docs/failover.md has the figures and what they mean.
//
//	go test -run='^$' -bench=BenchmarkFailback -benchtime=1x ./e2e/
func BenchmarkFailback(b *testing.B) {
	const rest = "workload:\n  duration: 20s\n  rate: 200\n  concurrency: 8\n" +
		"faults:\n  - {at: 2s, server: smps1, action: kill}\n  - {at: 5s, server: smps1, action: restart}\n"
	cases := []struct {
		name  string
		flags []string
	}{
		{"iis", nil},
		{"apache-prefork", []string{"--model", "apache", "--workers", "4", "--mpm", "prefork"}},
		{"apache-prefork-recycle-50", []string{"--model", "apache", "--workers", "4", "--mpm", "prefork", "--max-requests-per-child", "50"}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var failed, maxMs, failback float64
			for range b.N {
				run := runFailoverLab(b, rest, append([]string{"--health-poll", "10s"}, c.flags...)...)
				var restart time.Time
				for _, f := range run.Faults {
					if f.Action == "restart" {
						restart = f.Time
					}
				}
				failed += float64(run.Requests.Failed)
				maxMs = max(maxMs, run.Requests.MaxMs)
				failback += float64(run.failbackDone(restart).Milliseconds())
			}
			n := float64(b.N)
			b.ReportMetric(failed/n, "failed/op")
			b.ReportMetric(maxMs, "slowest-ms")
			b.ReportMetric(failback/n, "failback-ms")
		})
	}
}
