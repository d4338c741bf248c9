package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Workload is what the lab sends to the web server: page loads as a
// browser makes them, answering a Basic challenge with the lab user's
// credentials and keeping the SMSESSION cookie afterwards.
type Workload struct {
	BaseURL     string
	User        string
	Password    string
	Paths       []string // cycled through; default: /, /protected/
	Requests    int      // page loads
	Concurrency int      // browsers; each has its own cookie jar
}

// WorkloadResult counts page loads; every figure is measured.
type WorkloadResult struct {
	Sent       int           `json:"sent"`
	Succeeded  int           `json:"succeeded"`
	Failed     int           `json:"failed"`
	Challenges int           `json:"challenges"`
	Errors     []string      `json:"errors,omitempty"`
	Elapsed    time.Duration `json:"-"`
	Latencies  []time.Duration
}

// Percentile of the page-load latencies (p in 0..100).
func (r *WorkloadResult) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	l := append([]time.Duration(nil), r.Latencies...)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	i := int(float64(len(l)-1) * p / 100)
	return l[i]
}

// Run sends the page loads. A page load succeeds when it ends in 200 after
// at most one challenge.
func (w Workload) Run(ctx context.Context) *WorkloadResult {
	if len(w.Paths) == 0 {
		w.Paths = []string{"/", "/protected/"}
	}
	if w.Concurrency < 1 {
		w.Concurrency = 1
	}
	res := &WorkloadResult{}
	var mu sync.Mutex
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for b := 0; b < w.Concurrency; b++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			jar, _ := cookiejar.New(nil)
			client := &http.Client{Jar: jar, Timeout: 90 * time.Second}
			for {
				i := int(next.Add(1)) - 1
				if i >= w.Requests || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				challenged, err := w.pageLoad(ctx, client, w.Paths[i%len(w.Paths)])
				d := time.Since(t0)
				mu.Lock()
				res.Sent++
				// Latency is of page loads that worked: a failure's time
				// (up to a client timeout) says nothing about the agent.
				if err == nil {
					res.Latencies = append(res.Latencies, d)
				}
				if challenged {
					res.Challenges++
				}
				if err != nil {
					res.Failed++
					if len(res.Errors) < 20 {
						res.Errors = append(res.Errors, err.Error())
					}
				} else {
					res.Succeeded++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}

func (w Workload) pageLoad(ctx context.Context, c *http.Client, path string) (challenged bool, err error) {
	status, hdr, err := w.get(ctx, c, path, false)
	if err != nil {
		return false, err
	}
	if status == http.StatusUnauthorized && hdr.Get("WWW-Authenticate") != "" {
		challenged = true
		if status, _, err = w.get(ctx, c, path, true); err != nil {
			return true, err
		}
	}
	if status != http.StatusOK {
		return challenged, fmt.Errorf("GET %s: %d %s", path, status, http.StatusText(status))
	}
	return challenged, nil
}

func (w Workload) get(ctx context.Context, c *http.Client, path string, auth bool) (int, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.BaseURL+path, nil)
	if err != nil {
		return 0, nil, err
	}
	if auth {
		req.SetBasicAuth(w.User, w.Password)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header, nil
}
