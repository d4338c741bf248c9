package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
)

// Issue 12 point 7: how many idle TLI sessions one smps holds, what each
// costs it in memory, and how fast it takes new ones.
const (
	// scaleHeadroom is the descriptors kept free in each process below
	// its RLIMIT_NOFILE: the listener, log files, epoll, the fresh
	// connections the benchmark times, and a server's sockets that the
	// clients have closed but it has not yet.
	scaleHeadroom = 1000
	// scaleDialers is "several dialers in parallel".
	scaleDialers = 8
	// scalePerSource is the sessions opened from one source address:
	// far below the ~28,000 ephemeral ports a (source, destination) pair
	// has, so that ports never run out.
	scalePerSource = 500
	// scaleSingleMax caps the handshakes timed with one dialer per step,
	// which is the slow half, to keep each size under a minute.
	scaleSingleMax = 2000
	// scaleStepTimeout bounds the opening of one size.
	scaleStepTimeout = 60 * time.Second
	scaleTrustedHost = "trust_scale"
	scaleSecret      = "a shared secret for the scale benchmark"
)

// BenchmarkSmpsScale starts one smps and opens and holds real TLI sessions
// against it (TCP connect and the full handshake) from many source
// addresses on loopback: 1,000, then 10,000, then 50,000, or as many as
// the descriptor limit of either process allows less scaleHeadroom. Each
// size is a sub-benchmark whose ns/op is a fresh connection's connect,
// handshake and first IsProtected, with custom metrics:
//
//   - rss-B/conn, pss-B/conn: smps's RSS and PSS over the held sessions,
//     from /proc/PID/smaps_rollup, less the same figures before any.
//   - hs/s-1dialer, hs/s-8dialers: handshakes per second while opening
//     this size's new sessions, with one dialer and then with 8;
//     hs-8/1 is their ratio.
//   - isprotected-us: the IsProtected alone on the fresh connection, and
//     isprotected-x0 its ratio to the same figure with no session held
//     (sub-benchmark held=0, the baseline of the same run).
//
// The figures are reported, never asserted: the goals (docs/performance.md)
// are read from them.
func BenchmarkSmpsScale(b *testing.B) {
	raiseNoFile(b)
	ips := loopbackIPs(b, 1, 44443)
	store := scaleStore(b)
	_, pid := startSmpsProc(b, ips[0], "smps1.shared.lab", "--store", store, "--max-conns", "1000000")
	addr := net.JoinHostPort(ips[0], "44443")

	own, err := noFileLimit("self")
	if err != nil {
		b.Fatal(err)
	}
	srv, err := noFileLimit(strconv.Itoa(pid))
	if err != nil {
		b.Fatal(err)
	}
	limit := min(own, srv) - scaleHeadroom
	b.Logf("RLIMIT_NOFILE: %d in this process, %d in smps; holding at most %d sessions (headroom %d)", own, srv, limit, scaleHeadroom)

	h := &scaleHolder{addr: addr}
	b.Cleanup(h.closeAll)
	fresh := &freshDialer{addr: addr}
	// The memory baseline is read here rather than in held=0, which a
	// -bench pattern may leave out.
	var base scaleFigures
	base.rss, base.pss = smapsRollup(b, pid)
	b.Run("held=0", func(b *testing.B) {
		base.isProtected = fresh.measure(b)
		b.ReportMetric(base.isProtected, "isprotected-us")
	})
	for _, want := range []int{1000, 10000, 50000} {
		n := min(want, limit)
		if n <= len(h.clients) {
			break
		}
		if n < want {
			b.Logf("%d sessions asked, stopping at %d: RLIMIT_NOFILE is %d here (ulimit -Hn) less a headroom of %d descriptors",
				want, n, min(own, srv), scaleHeadroom)
		}
		step := n - len(h.clients)
		single := min(step/2, scaleSingleMax)
		ctx, cancel := context.WithTimeout(context.Background(), scaleStepTimeout)
		hs1, err := h.open(ctx, single, 1)
		var hsN float64
		if err == nil {
			hsN, err = h.open(ctx, step-single, scaleDialers)
		}
		cancel()
		if err != nil {
			// What was held is still measured: the report says where
			// it stopped and why.
			b.Logf("opening %d sessions stopped at %d: %v", n, len(h.clients), err)
		}
		held := len(h.clients)
		rss, pss := smapsRollup(b, pid)
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			us := fresh.measure(b)
			b.ReportMetric(float64(rss-base.rss)/float64(held), "rss-B/conn")
			b.ReportMetric(float64(pss-base.pss)/float64(held), "pss-B/conn")
			b.ReportMetric(hs1, "hs/s-1dialer")
			b.ReportMetric(hsN, "hs/s-8dialers")
			b.ReportMetric(hsN/hs1, "hs-8/1")
			b.ReportMetric(us, "isprotected-us")
			if base.isProtected > 0 {
				b.ReportMetric(us/base.isProtected, "isprotected-x0")
			}
		})
		if err != nil {
			break
		}
	}
}

type scaleFigures struct {
	rss, pss    int64 // bytes
	isProtected float64
}

// scaleStore is the seed store with one trusted host whose secret the
// benchmark knows, so that it needs no registration.
func scaleStore(b *testing.B) string {
	data, err := os.ReadFile("../labs/seed-store.yaml")
	if err != nil {
		b.Fatal(err)
	}
	s := string(data)
	const empty = "\ntrusted_hosts: []\n"
	if !strings.Contains(s, empty) {
		b.Fatal("labs/seed-store.yaml no longer has an empty trusted_hosts list")
	}
	s = strings.Replace(s, empty, fmt.Sprintf("\ntrusted_hosts:\n  - name: %s\n    secret: \"{PLAIN}%s\"\n    hco: hco.smps1\n",
		scaleTrustedHost, scaleSecret), 1)
	p := filepath.Join(b.TempDir(), "store.yaml")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// raiseNoFile sets this process's soft descriptor limit to its hard one.
// Go's runtime already does so at start-up since Go 1.19 (and smps, a Go
// program, gets the same); doing it here keeps the benchmark right if that
// ever changes.
func raiseNoFile(b *testing.B) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		b.Fatal(err)
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			b.Fatalf("raising RLIMIT_NOFILE to %d: %v", r.Max, err)
		}
	}
}

// noFileLimit is a process's soft descriptor limit, from /proc/PID/limits.
func noFileLimit(pid string) (int, error) {
	data, err := os.ReadFile("/proc/" + pid + "/limits")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if f, ok := strings.CutPrefix(line, "Max open files"); ok {
			fields := strings.Fields(f)
			if len(fields) < 1 {
				break
			}
			if fields[0] == "unlimited" {
				return 1 << 30, nil
			}
			return strconv.Atoi(fields[0])
		}
	}
	return 0, fmt.Errorf("/proc/%s/limits: no Max open files line", pid)
}

// smapsRollup is a process's RSS and PSS in bytes.
func smapsRollup(b *testing.B, pid int) (rss, pss int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 || fields[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			b.Fatalf("smaps_rollup: %q: %v", sc.Text(), err)
		}
		switch fields[0] {
		case "Rss:":
			rss = kb << 10
		case "Pss:":
			pss = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	if rss == 0 {
		b.Fatalf("/proc/%d/smaps_rollup: no Rss", pid)
	}
	return rss, pss
}

// sourceIP is the i-th source address of a group: 127.G.x.y, with
// scalePerSource connections on each.
func sourceIP(group, i int) net.IP {
	k := i / scalePerSource
	return net.IPv4(127, byte(group), byte(k/250), byte(k%250+1))
}

func scaleClientConfig(src net.IP) tli.ClientConfig {
	return tli.ClientConfig{TrustedHost: scaleTrustedHost, Secret: []byte(scaleSecret),
		Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}}
}

// scaleHolder opens sessions and holds them, idle, until the end.
type scaleHolder struct {
	addr    string
	mu      sync.Mutex
	clients []*tli.Client
}

// open opens n more sessions with the given number of dialers and gives
// the handshakes per second (connect included).
func (h *scaleHolder) open(ctx context.Context, n, dialers int) (perSec float64, err error) {
	if n <= 0 {
		return 0, nil
	}
	first := len(h.clients)
	next := make(chan int, n)
	for i := range n {
		next <- first + i
	}
	close(next)
	errs := make(chan error, dialers)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range dialers {
		wg.Go(func() {
			for i := range next {
				c, err := tli.Dial(ctx, h.addr, scaleClientConfig(sourceIP(77, i)))
				if err != nil {
					errs <- fmt.Errorf("session %d: %w", i, err)
					return
				}
				h.mu.Lock()
				h.clients = append(h.clients, c)
				h.mu.Unlock()
			}
		})
	}
	wg.Wait()
	d := time.Since(t0)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n) / d.Seconds(), nil
}

func (h *scaleHolder) closeAll() {
	for _, c := range h.clients {
		c.Close()
	}
	h.clients = nil
}

// freshDialer times IsProtected on connections opened for it, each from a
// source address and port not used before in the run.
type freshDialer struct {
	addr string
	n    int
}

// measure runs b.N fresh connections (connect, handshake, one IsProtected,
// close) and gives the IsProtected alone, in microseconds: the median,
// which a neighbour's burst on the shared machine moves least.
func (f *freshDialer) measure(b *testing.B) float64 {
	ctx := context.Background()
	var times []time.Duration
	req := &tlipb.Request{Body: &tlipb.Request_IsProtected{IsProtected: &tlipb.IsProtectedRequest{
		AgentName: "wa1", Resource: "/protected/index.html", Action: "GET"}}}
	for b.Loop() {
		c, err := tli.Dial(ctx, f.addr, scaleClientConfig(sourceIP(78, f.n)))
		f.n++
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		resp, err := c.Do(ctx, req)
		times = append(times, time.Since(t0))
		c.Close()
		if err != nil {
			b.Fatal(err)
		}
		if resp.Result != tlipb.Result_YES {
			b.Fatalf("IsProtected: %v %s", resp.Result, resp.Message)
		}
	}
	slices.Sort(times)
	return float64(times[len(times)/2].Nanoseconds()) / 1e3
}
