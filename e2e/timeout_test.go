package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/trace"
)

// TestAgentTimeoutResend: both Policy Servers of the failover lab
// (RequestTimeout 2 s) stall. A page load's IsProtected (or the Authorize
// of one that was through it) times out, its socket is reset with the
// trace saying why (Event.Timeout), it is sent again on another connection
// (Event.Resend; never a Login), and when none answers the browser gets
// the agent's 500 and WA.log names the error and its likely cause.
func TestAgentTimeoutResend(t *testing.T) {
	t.Parallel()
	labFile, _ := failoverLab(t, `workload:
  duration: 4s
  rate: 2
  concurrency: 2
faults:
  - {at: 1s, server: smps1, action: stall 20s}
  - {at: 1s, server: smps2, action: stall 20s}
`)
	out := t.TempDir()
	r := runCmd(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir, "--poll", "1s")
	if r.code != 0 {
		t.Fatalf("agentlab run: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var sum struct {
		Requests struct{ Sent, Succeeded, Failed int }
	}
	if data, err := os.ReadFile(filepath.Join(out, "summary.json")); err != nil || json.Unmarshal(data, &sum) != nil {
		t.Fatalf("summary.json: %v\n%s", err, data)
	}
	if sum.Requests.Failed == 0 {
		t.Errorf("no page load failed while both servers stalled: %+v", sum.Requests)
	}

	evs, err := trace.Merge(out)
	if err != nil {
		t.Fatal(err)
	}
	timedOut := map[string]bool{} // the w3wp.exe sockets reset after RequestTimeout
	for _, e := range evs {
		if e.Proc != procname.IISWorker || e.Op != trace.OpReset || e.Timeout == nil {
			continue
		}
		if e.Peer || e.Timeout.After != 2*time.Second || !resendable(e.Timeout.Request) {
			t.Errorf("timed-out socket %s: %+v (by peer: %v), want our reset after 2s of IsProtected or Authorize", e.Conn, *e.Timeout, e.Peer)
		}
		timedOut[e.Conn] = true
	}
	if len(timedOut) == 0 {
		t.Fatal("no socket of w3wp.exe was reset after RequestTimeout")
	}
	resent := 0
	for _, e := range evs {
		if e.Proc == procname.IISWorker && e.Op == trace.OpRequest && e.Resend > 0 {
			resent++
			if !resendable(e.Request) {
				t.Errorf("resend of %s, want only IsProtected or Authorize: %+v", e.Request, e)
			}
		}
	}
	if resent == 0 {
		t.Error("no IsProtected was sent again after RequestTimeout")
	}

	wa, err := os.ReadFile(filepath.Join(out, "WA.log"))
	if err != nil {
		t.Fatal(err)
	}
	// [20-0004] for a page load whose IsProtected failed, [20-0003] for
	// one whose Authorize did.
	if !strings.Contains(string(wa), "] [20-000") || !strings.Contains(string(wa), " (HTTP 500). Likely cause: the Policy Server did not answer within RequestTimeout") {
		t.Errorf("WA.log does not tell the failed page loads and their likely cause:\n%.6000s", wa)
	}
}

// resendable: the calls the page loads send that may be sent again after
// RequestTimeout (a Login may have opened a session: never).
func resendable(call string) bool {
	return call == trace.ReqIsProtected || call == trace.ReqAuthorize
}
