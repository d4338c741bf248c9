package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// The Apache model: an httpd parent that owns the listening socket and the
// one LLAWP, and children that each bootstrap and pool on their own.

// startApache starts hla --model apache and waits for its ready line,
// which comes once every child serves.
func (s *agentSetup) startApache(t *testing.T, extra ...string) (p *proc, baseURL, out string) {
	t.Helper()
	out = t.TempDir()
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(out, "*.log"))
			for _, f := range logs {
				b, _ := os.ReadFile(f)
				t.Logf("%s:\n%.4000s", f, b)
			}
		}
	})
	args := append(s.hlaArgs(filepath.Join(s.dir, "WebAgent.conf"), out), "--model", "apache")
	p = startProc(t, s.env, "hla", append(args, extra...)...)
	return p, p.waitNotice(t, &p.stdout, notice.HLAServing, nil, 2*time.Minute).Addr, out
}

// stopApache stops the parent with SIGTERM, as the lab does, and checks
// that it and everything it started leave. Within 8 s: less than the
// parent's grace before it kills a child, so a child that ignored SIGTERM
// (one stuck in accept(2), say) fails the test.
func stopApache(t *testing.T, p *proc, s *agentSetup) {
	t.Helper()
	procs := descendants(p.pid)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exitCode(t, 8*time.Second); code != 0 {
		t.Errorf("httpd parent exit %d on SIGTERM; stderr:\n%s", code, p.stderr.String())
	}
	if left := waitGone(5*time.Second, procs...); len(left) != 0 {
		t.Errorf("5 s after the parent's exit these still run: %v", left)
	}
	if left := leftovers([]string{s.ips["wa1.shared.lab"]}, nil); len(left) != 0 {
		t.Errorf("processes of this web server still run: %v", left)
	}
}

// descendants are the children of pid (httpd children and the LLAWP).
func descendants(pid int) []procStat {
	var out []procStat
	for _, q := range allProcs() {
		if q.ppid == pid {
			out = append(out, q)
		}
	}
	return out
}

func childProcs(pid int) []procStat {
	var out []procStat
	for _, q := range descendants(pid) {
		if q.comm == procname.Httpd {
			out = append(out, q)
		}
	}
	return out
}

// apacheTrace is the merged trace read by process.
type apacheTrace struct {
	evs []trace.Event
}

func readTrace(t *testing.T, dir string) apacheTrace {
	t.Helper()
	evs, err := trace.Merge(dir)
	if err != nil {
		t.Fatal(err)
	}
	return apacheTrace{evs}
}

// children are the pids of the httpd children, in order of first event.
func (a apacheTrace) children() []int {
	var out []int
	for _, e := range a.evs {
		if e.Proc == "httpd" && e.Role == "hla" && !slices.Contains(out, e.PID) {
			out = append(out, e.PID)
		}
	}
	return out
}

func (a apacheTrace) llawps() []int {
	var out []int
	for _, e := range a.evs {
		if e.Proc == procname.ApacheLLAWP && !slices.Contains(out, e.PID) {
			out = append(out, e.PID)
		}
	}
	return out
}

func (a apacheTrace) count(pid int, f func(trace.Event) bool) int {
	n := 0
	for _, e := range a.evs {
		if e.PID == pid && f(e) {
			n++
		}
	}
	return n
}

// booted: pid's own bootstrap connection to the bootstrap server, ended
// with a reset, and its HCO connections.
// first is the time of the first event of op by any of pids.
func (a apacheTrace) first(pids []int, op string) time.Time {
	var t time.Time
	for _, e := range a.evs {
		if slices.Contains(pids, e.PID) && e.Op == op && (t.IsZero() || e.T.Before(t)) {
			t = e.T
		}
	}
	return t
}

// last is the time of pid's last event that f accepts.
func (a apacheTrace) last(pid int, f func(trace.Event) bool) time.Time {
	var t time.Time
	for _, e := range a.evs {
		if e.PID == pid && f(e) && e.T.After(t) {
			t = e.T
		}
	}
	return t
}

func (a apacheTrace) bootResets(pid int, bootIP string) int {
	return a.count(pid, func(e trace.Event) bool {
		return e.Op == trace.OpReset && e.Phase == trace.PhaseBootstrap && strings.HasPrefix(e.Remote, bootIP+":")
	})
}

func (a apacheTrace) hcoConnects(pid int, hcoIP string) int {
	return a.count(pid, func(e trace.Event) bool {
		return e.Op == trace.OpConnect && e.Phase == trace.PhaseHCO && strings.HasPrefix(e.Remote, hcoIP+":")
	})
}

func (a apacheTrace) isProtected(pid int) int {
	return a.count(pid, func(e trace.Event) bool {
		return e.Op == trace.OpRequest && e.Request == trace.ReqIsProtected
	})
}

// pages loads n protected pages from conc goroutines, each request on a
// connection of its own (Connection: close), so that the kernel hands
// them to whichever child accepts; it returns the failures.
func pages(baseURL string, n, conc int) []string {
	var mu sync.Mutex
	var errs []string
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := closeClient()
			for next.Add(1) <= int64(n) {
				if err := getPage(context.Background(), c, baseURL+"/protected/"); err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return errs
}

func closeClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}, Timeout: 30 * time.Second}
}

func getPage(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(agentUser, agentPassword)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, body)
	}
	return nil
}

// waitTraceFor polls the merged trace until ok says yes.
func waitTraceFor(t *testing.T, dir, what string, timeout time.Duration, ok func(apacheTrace) bool) apacheTrace {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		a := readTrace(t, dir)
		if ok(a) {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("the trace never showed %s within %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// queueFlush queues FLUSH_ALL (194) for agent wa1 over an administrator
// session, as agentlab mgmt does.
func queueFlush(t *testing.T, server string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin, err := tli.Dial(ctx, server, tli.ClientConfig{Admin: true, TrustedHost: "smreghost"})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	resp, err := admin.Do(ctx, &tlipb.Request{Body: &tlipb.Request_QueueManagement{QueueManagement: &tlipb.QueueManagementRequest{
		AdminUser: "siteminder", AdminPassword: "siteminder", AgentName: "wa1",
		Command: &tlipb.ManagementCommand{Code: uint32(tlipb.ManagementCode_FLUSH_ALL)},
	}}})
	if err != nil || resp.Result != tlipb.Result_SUCCESS {
		t.Fatalf("QueueManagement: %v %v", resp, err)
	}
}

func waitLog(t *testing.T, path, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s never logged %q within %v; it has:\n%s", path, want, timeout, data)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestApacheThreeChildren: the seed's Apache picture. Every child does its
// own bootstrap and HCO phase, the one LLAWP its own round; requests spread
// over the children; only the LLAWP polls; a cache flush reaches every
// child through it.
func TestApacheThreeChildren(t *testing.T) {
	t.Parallel()
	s := newAgentSetup(t)
	p, baseURL, out := s.startApache(t, "--workers", "3")
	boot, hco := s.ips["smps2.shared.lab"], s.ips["smps1.shared.lab"]

	if errs := pages(baseURL, 60, 6); len(errs) != 0 {
		t.Fatalf("%d page loads failed: %v", len(errs), errs)
	}
	a := waitTraceFor(t, out, "the LLAWP's bootstrap and a DoManagement", time.Minute, func(a apacheTrace) bool {
		ll := a.llawps()
		return len(ll) == 1 && a.bootResets(ll[0], boot) == 1 && a.count(ll[0], func(e trace.Event) bool {
			return e.Op == trace.OpResponse && e.Request == trace.ReqDoManagement
		}) > 0
	})
	kids := a.children()
	if len(kids) != 3 {
		t.Fatalf("trace shows %d httpd children %v, want 3", len(kids), kids)
	}
	ll := a.llawps()[0]
	for _, pid := range append(slices.Clone(kids), ll) {
		if n := a.bootResets(pid, boot); n != 1 {
			t.Errorf("pid %d: %d bootstrap connections to %s ending in a reset, want 1", pid, n, boot)
		}
		if n := a.hcoConnects(pid, hco); n != 2 {
			t.Errorf("pid %d: %d HCO connections to %s, want MinSocketsPerPort = 2", pid, n, hco)
		}
	}
	var serving []int
	total := 0
	for _, pid := range kids {
		if n := a.isProtected(pid); n > 0 {
			serving = append(serving, pid)
			total += n
		}
	}
	if len(serving) < 2 || total != 60 {
		t.Errorf("IsProtected from children %v (%d in all), want at least 2 children and 60 requests", serving, total)
	}
	for _, e := range a.evs {
		if e.Op == trace.OpRequest && e.Request == trace.ReqDoManagement && e.Proc != procname.ApacheLLAWP {
			t.Errorf("DoManagement from %s (pid %d): only the LLAWP polls", e.Proc, e.PID)
		}
	}
	for _, pid := range kids {
		waitLog(t, filepath.Join(out, "WA.log"), fmt.Sprintf("Worker httpd (pid %d) registered with the LLAWP", pid), 10*time.Second)
	}

	// The seed's order: every child's bootstrap and HCO phase, then the
	// LLAWP's (the parent launches it once the children are through).
	llFirst := a.first([]int{ll}, trace.OpConnect)
	for _, pid := range kids {
		if last := a.last(pid, func(e trace.Event) bool { return e.Op == trace.OpConnect && e.Phase == trace.PhaseHCO }); !last.Before(llFirst) {
			t.Errorf("child %d opened an HCO socket at %v, after the LLAWP's first connect at %v", pid, last, llFirst)
		}
	}

	// The LLAWP's Status lists each child with its own sockets.
	st := waitStatus(t, baseURL, "every child reporting MinSocketsPerPort sockets to smps1", func(st statusDoc) bool {
		if len(st.LLAWP.Workers) != 3 {
			return false
		}
		for _, w := range st.LLAWP.Workers {
			if !slices.Contains(kids, w.PID) || len(w.Servers) != 1 || w.Servers[0].Addr != "smps1.shared.lab:44443" || w.Servers[0].Open != 2 {
				return false
			}
		}
		return true
	})
	if st.LLAWP.PID != ll {
		t.Errorf("status from LLAWP pid %d, the trace's LLAWP is %d", st.LLAWP.PID, ll)
	}

	queueFlush(t, hco+":44443")
	for _, pid := range kids {
		waitLog(t, filepath.Join(out, fmt.Sprintf("httpd-%d.log", pid)), "Management command from the LLAWP arg= code=194 command=FLUSH_ALL", 20*time.Second)
	}
	stopApache(t, p, s)
}

// statusDoc is the part of a worker's /agentlab/status the tests read.
type statusDoc struct {
	PID   int `json:"pid"`
	LLAWP struct {
		PID     int `json:"pid"`
		Workers []struct {
			PID     int `json:"pid"`
			Servers []struct {
				Addr  string `json:"addr"`
				State string `json:"state"`
				Open  int    `json:"open"`
			} `json:"servers"`
		} `json:"workers"`
	} `json:"llawp"`
	Error string `json:"error"`
}

// waitStatus polls the web server's /agentlab/status until ok holds.
func waitStatus(t *testing.T, baseURL, what string, ok func(statusDoc) bool) statusDoc {
	t.Helper()
	var st statusDoc
	var last string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := closeClient().Get(baseURL + "/agentlab/status")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(body)
			st = statusDoc{}
			if json.Unmarshal(body, &st) == nil && ok(st) {
				return st
			}
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("status never showed %s; last: %s", what, last)
	return st
}

// TestApacheWorkerRecycleNoDrop: a worker-MPM child that recycles stops
// accepting and answers every request on the connections it accepted, so
// that a browser on a fresh connection never sees it close unanswered.
func TestApacheWorkerRecycleNoDrop(t *testing.T) {
	t.Parallel()
	s := newAgentSetup(t)
	p, baseURL, out := s.startApache(t, "--workers", "3", "--mpm", "worker", "--max-requests-per-child", "10")
	if errs := pages(baseURL, 300, 4); len(errs) != 0 {
		t.Errorf("%d of 300 page loads failed while children recycled: %v", len(errs), errs)
	}
	if kids := readTrace(t, out).children(); len(kids) < 3+20 {
		t.Errorf("trace shows %d children, want the first 3 and at least 20 replacements for 300 requests at 10 per child", len(kids))
	}
	stopApache(t, p, s)
}

// TestApacheRecycle: --max-requests-per-child recycles each child after
// its requests; every replacement bootstraps again (the KB's socket storm).
func TestApacheRecycle(t *testing.T) {
	t.Parallel()
	s := newAgentSetup(t)
	p, baseURL, out := s.startApache(t, "--workers", "3", "--max-requests-per-child", "5")
	boot, hco := s.ips["smps2.shared.lab"], s.ips["smps1.shared.lab"]
	first := readTrace(t, out).children()

	// One at a time: with prefork and a connection per request, each
	// child serves exactly 5.
	if errs := pages(baseURL, 30, 1); len(errs) != 0 {
		t.Fatalf("%d page loads failed: %v", len(errs), errs)
	}
	// Which child accepts each request is the kernel's choice, so how
	// many children reach 5 is not fixed; what is: the 30 requests are all
	// served, no child serves more than 5, every child that served 5 is
	// replaced by one with its own bootstrap, and the live children (3, at
	// most 4 requests each) leave at least 30-3*4 = 18 requests, 4 full
	// children.
	var full []int
	a := waitTraceFor(t, out, "30 requests served and a booted replacement for every child that served 5", time.Minute, func(a apacheTrace) bool {
		full = full[:0]
		kids := a.children()
		total, booted := 0, 0
		for _, pid := range kids {
			n := a.isProtected(pid)
			total += n
			if n >= 5 {
				full = append(full, pid)
			}
			if a.hcoConnects(pid, hco) == 2 {
				booted++
			}
		}
		return total == 30 && len(kids) == 3+len(full) && booted == len(kids)
	})
	kids := a.children()
	t.Logf("children %v; first %v; served 5: %v", kids, first, full)
	if len(full) < 4 {
		t.Errorf("%d children served 5 requests, want at least 4", len(full))
	}
	for _, pid := range kids {
		if n := a.isProtected(pid); n > 5 {
			t.Errorf("child %d served %d requests, more than --max-requests-per-child 5", pid, n)
		}
		if n := a.bootResets(pid, boot); n != 1 {
			t.Errorf("child %d: %d bootstrap resets, want its own 1", pid, n)
		}
	}
	for _, pid := range full {
		if q, ok := readStat(pid); ok && q.state != 'Z' {
			t.Errorf("child %d served its 5 requests and still runs", pid)
		}
	}
	if live := childProcs(p.pid); len(live) != 3 {
		t.Errorf("%d children run after the recycling, want 3: %v", len(live), live)
	}
	stopApache(t, p, s)
}

// TestApacheChildKilled: a SIGKILLed child is replaced, and the replacement
// bootstraps; no request fails but those the killed child held.
func TestApacheChildKilled(t *testing.T) {
	t.Parallel()
	s := newAgentSetup(t)
	p, baseURL, out := s.startApache(t, "--workers", "3")
	hco := s.ips["smps1.shared.lab"]
	before := childProcs(p.pid)
	if len(before) != 3 {
		t.Fatalf("%d children, want 3: %v", len(before), before)
	}

	const clients = 4
	ctx, cancel := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := closeClient()
			for ctx.Err() == nil {
				err := getPage(ctx, c, baseURL+"/protected/")
				switch {
				case ctx.Err() != nil:
				case err != nil:
					failed.Add(1)
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				default:
					ok.Add(1)
				}
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	waitCount := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for ok.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d page loads within a minute (%d failed)", ok.Load(), failed.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitCount(20)
	victim := before[0]
	if err := syscall.Kill(victim.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var nu procStat
	deadline := time.Now().Add(30 * time.Second)
	for nu.pid == 0 {
		for _, q := range childProcs(p.pid) {
			if !slices.ContainsFunc(before, func(b procStat) bool { return b.pid == q.pid }) {
				nu = q
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no replacement child within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitTraceFor(t, out, fmt.Sprintf("the replacement %d's bootstrap and HCO phase", nu.pid), time.Minute, func(a apacheTrace) bool {
		return a.bootResets(nu.pid, s.ips["smps2.shared.lab"]) == 1 && a.hcoConnects(nu.pid, hco) == 2
	})
	waitCount(ok.Load() + 20)
	cancel()
	wg.Wait()
	t.Logf("%d page loads, %d failed; child %d killed, %d replaced it", ok.Load()+failed.Load(), failed.Load(), victim.pid, nu.pid)
	if failed.Load() > clients {
		t.Errorf("%d page loads failed, more than the %d the killed child could hold: %v", failed.Load(), clients, errs)
	}
	if alive(victim) {
		t.Errorf("the killed child %d still runs", victim.pid)
	}
	// A child stopped by someone else's SIGTERM exits 0, but did not
	// recycle: it is a death, replaced after a backoff, not at once.
	if err := syscall.Kill(nu.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLog(t, filepath.Join(out, fmt.Sprintf("httpd-%d.log", p.pid)), "exit status 0 (stopped from outside)", 20*time.Second)
	stopApache(t, p, s)
}

// TestApacheParentKilled: a SIGKILLed parent leaves no child and no LLAWP.
func TestApacheParentKilled(t *testing.T) {
	t.Parallel()
	s := newAgentSetup(t)
	p, baseURL, _ := s.startApache(t, "--workers", "3")
	if errs := pages(baseURL, 20, 4); len(errs) != 0 {
		t.Fatalf("%d page loads failed: %v", len(errs), errs)
	}
	procs := descendants(p.pid)
	comms := commands(procs)
	if want := []string{"LLAWP", "httpd", "httpd", "httpd"}; !slices.Equal(comms, want) {
		t.Fatalf("the parent runs %v, want %v", comms, want)
	}
	p.cmd.Process.Kill()
	p.exitCode(t, 10*time.Second)
	if left := waitGone(5*time.Second, procs...); len(left) != 0 {
		t.Errorf("5 s after the parent's SIGKILL these still run: %v", left)
	}
}

// TestApacheMPM: a prefork child serves one request at a time; worker
// children serve many at once over one pool.
func TestApacheMPM(t *testing.T) {
	t.Parallel()
	s := newAgentSetup(t)
	for _, mpm := range []string{"prefork", "worker"} {
		var cur, peak atomic.Int64
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := cur.Add(1)
			defer cur.Add(-1)
			for {
				m := peak.Load()
				if n <= m || peak.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(150 * time.Millisecond)
			io.WriteString(w, "ok")
		}))
		p, baseURL, _ := s.startApache(t, "--workers", "2", "--mpm", mpm, "--upstream", up.URL)
		if errs := pages(baseURL, 32, 8); len(errs) != 0 {
			t.Errorf("%s: %d page loads failed: %v", mpm, len(errs), errs)
		}
		stopApache(t, p, s)
		up.Close()
		t.Logf("%s: at most %d requests at once in the application", mpm, peak.Load())
		switch {
		case mpm == "prefork" && peak.Load() > 2:
			t.Errorf("prefork: %d requests at once with 2 children, want at most one per child", peak.Load())
		case mpm == "worker" && peak.Load() <= 2:
			t.Errorf("worker: at most %d requests at once with 2 children and 8 clients, want more than one per child", peak.Load())
		}
	}
}

// TestApacheACOFromLLAWP: with --aco-from-llawp the children still
// bootstrap and pool on their own, but only the LLAWP asks for the ACO.
func TestApacheACOFromLLAWP(t *testing.T) {
	t.Parallel()
	s := newAgentSetup(t)
	p, baseURL, out := s.startApache(t, "--workers", "2", "--aco-from-llawp")
	if errs := pages(baseURL, 10, 2); len(errs) != 0 {
		t.Fatalf("%d page loads failed: %v", len(errs), errs)
	}
	a := readTrace(t, out)
	getACO := func(e trace.Event) bool {
		return e.Op == trace.OpRequest && e.Request == trace.ReqGetAgentConfig
	}
	kids, ll := a.children(), a.llawps()
	if len(kids) != 2 || len(ll) != 1 {
		t.Fatalf("trace shows children %v and LLAWPs %v, want 2 and 1", kids, ll)
	}
	for _, pid := range kids {
		if n := a.count(pid, getACO); n != 0 {
			t.Errorf("child %d sent %d GetAgentConfig, want none", pid, n)
		}
		if n := a.hcoConnects(pid, s.ips["smps1.shared.lab"]); n != 2 {
			t.Errorf("child %d: %d HCO connections, want its own 2", pid, n)
		}
		waitLog(t, filepath.Join(out, fmt.Sprintf("httpd-%d.log", pid)), "Agent configuration object taken from the LLAWP aco=aco.wa1", 5*time.Second)
	}
	if n := a.count(ll[0], getACO); n != 1 {
		t.Errorf("the LLAWP sent %d GetAgentConfig, want 1", n)
	}
	stopApache(t, p, s)
}
