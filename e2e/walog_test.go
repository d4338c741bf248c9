package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/logging"
	"github.com/agentlab/agentlab/trace"
)

// waRecord is one line of WA.jsonl.
type waRecord struct {
	Time    string `json:"time"`
	Level   string `json:"level"`
	Proc    string `json:"proc"`
	Role    string `json:"role"`
	PID     int    `json:"pid"`
	TID     int    `json:"tid"`
	Message string `json:"message"`
	Error   string `json:"error"`
	t       time.Time
}

func readWA(t *testing.T, out string) ([]waRecord, []string) {
	t.Helper()
	f, err := os.Open(filepath.Join(out, "WA.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []waRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r waRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("WA.jsonl line %d: %v", len(recs)+1, err)
		}
		if r.t, err = time.Parse(logging.TimeFormat, r.Time); err != nil {
			t.Fatalf("WA.jsonl line %d: time %q: %v", len(recs)+1, r.Time, err)
		}
		recs = append(recs, r)
	}
	data, err := os.ReadFile(filepath.Join(out, "WA.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	return recs, lines[:len(lines)-1] // after the last newline: nothing
}

// checkWALog holds a run's WA.log against the vendor's layout and the
// order of time: every line is `[pid/tid][Day Mon DD YYYY HH:MM:SS]
// message`, nothing more, one per record of WA.jsonl (where our fields
// are), and the records of the LLAWP and of its workers are in the order
// they were written, whoever forwarded them: the worker's own bootstrap,
// which comes before it starts its LLAWP, comes before the LLAWP's first
// line.
func checkWALog(t *testing.T, out string) {
	t.Helper()
	recs, lines := readWA(t, out)
	if len(recs) == 0 {
		t.Fatal("WA.jsonl is empty")
	}
	var want []string
	for i, r := range recs {
		if i > 0 && r.t.Before(recs[i-1].t) {
			t.Errorf("WA.jsonl is not in time order: line %d (%s, %s %d: %q) comes after line %d (%s, %s %d: %q)",
				i+1, r.Time, r.Proc, r.PID, r.Message, i, recs[i-1].Time, recs[i-1].Proc, recs[i-1].PID, recs[i-1].Message)
		}
		if r.Level == "debug" || r.Level == "trace" {
			continue
		}
		msg := r.Message
		if r.Error != "" {
			msg += ": " + r.Error
		}
		want = append(want, logging.AgentLogLine(r.PID, r.TID, r.t, msg))
	}
	if !slices.Equal(lines, want) {
		t.Errorf("WA.log is not WA.jsonl in the vendor's layout:\n%s\nwant:\n%s", strings.Join(lines, ""), strings.Join(want, ""))
	}
	first := func(role string) int {
		return slices.IndexFunc(recs, func(r waRecord) bool { return r.Role == role })
	}
	if w, l := first("hla"), first("llawp"); w < 0 || l < 0 || w > l {
		t.Errorf("WA.jsonl: the worker's first record is line %d, the LLAWP's line %d: the worker bootstraps before it starts its LLAWP", w+1, l+1)
	}
}

// countRequests counts one process's requests of a call in the trace.
func countRequests(evs []trace.Event, proc, call string) int {
	n := 0
	for _, e := range evs {
		if e.Proc == proc && e.Op == trace.OpRequest && e.Request == call {
			n++
		}
	}
	return n
}

// TestSeedLabAgentCache runs the seed lab with the agent cache on and off,
// the seed's two use cases: off, every page load asks the Policy Server
// IsProtected (one more after the Basic challenge); on, only the first
// load of each page does.
func TestSeedLabAgentCache(t *testing.T) {
	labFile, _ := seedLab(t)
	const loads = 10
	asked := map[string]int{}
	for _, cache := range []string{"off", "on"} {
		out := t.TempDir()
		r := runCmd(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir, "--requests", fmt.Sprint(loads), "--poll", "1s", "--agent-cache", cache, "--rows", "0")
		if r.code != 0 {
			t.Fatalf("agentlab run --agent-cache %s: exit %d\nstdout:\n%s\nstderr:\n%s", cache, r.code, r.stdout, r.stderr)
		}
		evs, err := trace.ReadFile(filepath.Join(out, "trace.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		asked[cache] = countRequests(evs, "w3wp.exe", trace.ReqIsProtected)
		var sum struct {
			Settings struct {
				AgentCache string `json:"agent_cache"`
			}
			Requests struct{ Sent, Succeeded, Challenges int }
		}
		data, _ := os.ReadFile(filepath.Join(out, "summary.json"))
		if err := json.Unmarshal(data, &sum); err != nil {
			t.Fatal(err)
		}
		if sum.Settings.AgentCache != cache || sum.Requests.Sent != loads || sum.Requests.Succeeded != loads {
			t.Errorf("--agent-cache %s: summary.json says agent_cache %q, %d sent, %d succeeded", cache, sum.Settings.AgentCache, sum.Requests.Sent, sum.Requests.Succeeded)
		}
		useCase := "Use case (b): the agent cache is off (ACO aco.wa1: MaxResourceCacheSize 0), so every page load asks the Policy Server IsProtected"
		if cache == "on" {
			useCase = "Use case (a): the agent cache is on (ACO aco.wa1: MaxResourceCacheSize 700), so only the first load of a resource asks the Policy Server IsProtected"
			// The workload loads two pages, / and /protected/, in turn.
			if asked[cache] != 2 {
				t.Errorf("--agent-cache on: w3wp.exe sent %d IsProtected for %d loads of 2 pages, want 2", asked[cache], loads)
			}
		} else if want := loads + sum.Requests.Challenges; asked[cache] != want {
			t.Errorf("--agent-cache off: w3wp.exe sent %d IsProtected for %d loads and %d challenges, want %d", asked[cache], loads, sum.Requests.Challenges, want)
		}
		if !strings.Contains(r.stdout, useCase) {
			t.Errorf("--agent-cache %s: the steps do not say %q:\n%s", cache, useCase, r.stdout)
		}
		checkWALog(t, out)
	}
	t.Logf("IsProtected for %d page loads: %d with the agent cache off, %d with it on", loads, asked["off"], asked["on"])
}

// checkGrowth checks a run's growth of w3wp.exe's pool to smps1 from the
// trace, the steps and WA.log: every socket opened while requests went on
// belongs to a step of the pool (trace.PoolStep), the steps go 2 to 4, 4 to
// 6 and so on, each opening the sockets it says, and both the steps and
// WA.log tell each one.
func checkGrowth(t *testing.T, out, stdout string) {
	t.Helper()
	evs, err := trace.ReadFile(filepath.Join(out, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	steps := map[int]trace.PoolStep{}
	opened := map[int]int{}
	for _, e := range evs {
		if e.Proc != "w3wp.exe" || e.Op != trace.OpConnect || e.RemoteHost != "smps1.shared.lab" || e.Phase != trace.PhaseRequests {
			continue
		}
		if e.PoolStep == nil {
			t.Errorf("w3wp.exe opened %s in phase %s with no pool step", e.Local, e.Phase)
			continue
		}
		steps[e.PoolStep.N] = *e.PoolStep
		if e.Conn != "" { // a connect that failed opened no connection
			opened[e.PoolStep.N]++
		}
	}
	if len(steps) == 0 {
		t.Fatal("the pool never grew")
	}
	_, lines := readWA(t, out)
	wa := strings.Join(lines, "")
	to := 2
	for n := 1; n <= len(steps); n++ {
		st, ok := steps[n]
		if !ok || st.From != to || st.To != min(to+2, 20) || opened[n] != st.To-st.From {
			t.Errorf("pool step %d: %+v with %d sockets opened, want from %d to %d", n, st, opened[n], to, min(to+2, 20))
		}
		to = st.To
		if want := fmt.Sprintf("'s pool to smps1.shared.lab:44443 grows from %d to %d sockets", st.From, st.To); !strings.Contains(stdout, want) {
			t.Errorf("the steps do not tell pool step %d (%q):\n%s", n, want, stdout)
		}
		if want := fmt.Sprintf("opening 2 more (newsocketstep='2'), from %d to %d sockets.\n", st.From, st.To); !strings.Contains(wa, want) {
			t.Errorf("WA.log does not tell pool step %d (%q)", n, want)
		}
	}
}
