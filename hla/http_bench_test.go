package hla

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/policyserver/pstest"
	"github.com/agentlab/agentlab/pool"
)

// benchStack is a Policy Server and the agent's socket pool to it, in this
// process, over loopback TCP: the path a page load takes in the lab.
type benchStack struct {
	pool *pool.Pool
	aco  conf.ACO
}

func newBenchStack(b *testing.B) *benchStack {
	b.Helper()
	ps := pstest.Start(b, "trust_bench", nil)
	hco := conf.DefaultHCO()
	hco.Name = "hco.bench"
	hco.PolicyServers = []conf.PolicyServer{{Host: "127.0.0.1", AuthorizationPort: ps.Port}}
	p, aco, err := pool.Start(context.Background(), pool.Config{HCO: hco, TrustedHost: "trust_bench", Secret: ps.Secret}, pool.AgentInfo{AgentName: "bench", Role: "hla"}, "aco.wa1")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return &benchStack{pool: p, aco: aco}
}

func (s *benchStack) server(b *testing.B, cacheSize int) *httptest.Server {
	aco := s.aco
	aco.MaxResourceCacheSize, aco.MaxSessionCacheSize = cacheSize, cacheSize
	a, err := NewAgent(Config{Client: s.pool, AgentName: aco.DefaultAgentName, ACO: aco, Next: NewSite()})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(a)
	b.Cleanup(ts.Close)
	return ts
}

// login gets an SMSESSION cookie as a browser does after the challenge.
func login(b *testing.B, base string) *http.Cookie {
	req, _ := http.NewRequest(http.MethodGet, base+"/protected/", nil)
	req.SetBasicAuth("user1", "Passw0rd1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == SessionCookie {
			return c
		}
	}
	b.Fatalf("no %s cookie after login: %d", SessionCookie, resp.StatusCode)
	return nil
}

// loads sends page loads of /protected/ from 8 keep-alive browsers for d
// and returns requests per second and each load's latency. It times by
// hand: testing.Benchmark called from inside a running benchmark waits for
// a lock that benchmark holds, and never returns.
func loads(b *testing.B, base string, cookie *http.Cookie, basic bool, d time.Duration) (rps float64, lat []time.Duration) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed error
	start := time.Now()
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Since(start) < d {
				req, _ := http.NewRequest(http.MethodGet, base+"/protected/", nil)
				if cookie != nil {
					req.AddCookie(cookie)
				}
				if basic {
					req.SetBasicAuth("user1", "Passw0rd1")
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if failed != nil {
		b.Fatal(failed)
	}
	return float64(len(lat)) / time.Since(start).Seconds(), lat
}

func pct(l []time.Duration, p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p/100)]
}

// BenchmarkHTTP compares, in one run over loopback TCP, the built-in site
// served by a plain net/http server with the same site behind the agent,
// the agent cache on (no Policy Server call once warm) and off (the seed's
// setting: IsProtected and Authorize on every page load). The figures are
// requests per second and the ratio cache-on/plain (target >= 0.8), and
// p50/p99 of the cache-off page loads. Rounds are interleaved so that a
// busy neighbour on a small machine slows all three alike. It runs once
// whatever -benchtime says; -benchtime sets each measurement's length.
func BenchmarkHTTP(b *testing.B) {
	s := newBenchStack(b)
	plain := httptest.NewServer(NewSite())
	b.Cleanup(plain.Close)
	on, off := s.server(b, 700), s.server(b, 0)
	onCookie, offCookie := login(b, on.URL), login(b, off.URL)

	d := max(benchTime()/3, 100*time.Millisecond)
	const rounds = 3
	var rps [4]float64
	var offLat, basicLat []time.Duration
	for i := 0; i < rounds; i++ {
		// The plain server gets the same cookie: the same browser, the
		// same request bytes.
		r0, _ := loads(b, plain.URL, onCookie, false, d)
		r1, _ := loads(b, on.URL, onCookie, false, d)
		r2, l2 := loads(b, off.URL, offCookie, false, d)
		// Credentials on every request and no cookie: IsProtected, Login
		// and Authorize, the three Policy Server calls of a page load
		// with nothing cached anywhere.
		r3, l3 := loads(b, off.URL, nil, true, d)
		rps[0], rps[1], rps[2], rps[3] = rps[0]+r0/rounds, rps[1]+r1/rounds, rps[2]+r2/rounds, rps[3]+r3/rounds
		offLat = append(offLat, l2...)
		basicLat = append(basicLat, l3...)
	}
	b.ReportMetric(rps[0], "plain-req/s")
	b.ReportMetric(rps[1], "cache-on-req/s")
	b.ReportMetric(rps[2], "cache-off-req/s")
	b.ReportMetric(rps[3], "three-calls-req/s")
	b.ReportMetric(rps[1]/rps[0], "cache-on/plain")
	b.ReportMetric(float64(pct(offLat, 50).Microseconds()), "cache-off-p50-us")
	b.ReportMetric(float64(pct(offLat, 99).Microseconds()), "cache-off-p99-us")
	b.ReportMetric(float64(pct(basicLat, 50).Microseconds()), "three-calls-p50-us")
	b.ReportMetric(float64(pct(basicLat, 99).Microseconds()), "three-calls-p99-us")
	b.Logf("plain %.0f req/s; agent cache on %.0f req/s (%.2fx plain); cache off with a session %.0f req/s (2 calls: p50 %s, p99 %s); "+
		"cache off with Basic credentials each time %.0f req/s (3 calls: p50 %s, p99 %s)",
		rps[0], rps[1], rps[1]/rps[0], rps[2], pct(offLat, 50), pct(offLat, 99), rps[3], pct(basicLat, 50), pct(basicLat, 99))
}

// benchTime is -test.benchtime when it is a duration (1s otherwise).
func benchTime() time.Duration {
	if f := flag.Lookup("test.benchtime"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil {
			return d
		}
	}
	return time.Second
}
