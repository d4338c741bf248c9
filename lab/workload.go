package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Workload is what the lab sends to the web server: page loads as a
// browser makes them, answering a Basic challenge with the lab user's
// credentials and keeping the SMSESSION cookie afterwards.
type Workload struct {
	BaseURL  string
	User     string
	Password string
	Paths    []string // cycled through; default: /, /protected/
	// Requests is the number of page loads, Duration how long to keep
	// sending them; the workload ends at the first limit it reaches, and
	// at least one must be set.
	Requests int
	Duration time.Duration
	// Rate spaces page loads to this many per second across all browsers,
	// on average; 0: as fast as the browsers go. A steady rate is what
	// makes a failover readable in time. When every browser is busy (a
	// server stalls), the slots they miss by more than one interval are
	// skipped, and counted, not sent in a burst once the server answers.
	Rate        float64
	Concurrency int // browsers; each has its own cookie jar
	// Transport carries the page loads; nil is http.DefaultTransport.
	// Tests give one that calls a handler in memory, so that a workload
	// runs in virtual time (testing/synctest).
	Transport http.RoundTripper
}

// WorkloadSpec is a lab file's workload: section.
type WorkloadSpec struct {
	Requests    int      `yaml:"requests" json:"requests,omitempty"`
	Concurrency int      `yaml:"concurrency" json:"concurrency,omitempty"`
	Duration    Duration `yaml:"duration" json:"-"`
	Rate        float64  `yaml:"rate" json:"rate,omitempty"`
}

func (s WorkloadSpec) validate() error {
	if s.Requests < 0 || s.Concurrency < 0 || s.Rate < 0 {
		return fmt.Errorf("requests, concurrency and rate must not be negative")
	}
	return nil
}

// DefaultRequests is the workload when neither the lab nor the command
// line gives a request count or a duration.
const DefaultRequests = 10

// workloadSpec is the run's workload: the command line's values, else the
// lab's, else DefaultRequests page loads from one browser.
func (r *Run) workloadSpec() WorkloadSpec {
	s, o := r.Lab.Workload, r.Opts
	if o.Requests > 0 {
		s.Requests = o.Requests
	}
	if o.Duration > 0 {
		s.Duration = Duration(o.Duration)
	}
	if o.Concurrency > 0 {
		s.Concurrency = o.Concurrency
	}
	if o.Rate > 0 {
		s.Rate = o.Rate
	}
	if s.Requests == 0 && s.Duration == 0 {
		s.Requests = DefaultRequests
	}
	s.Concurrency = max(s.Concurrency, 1)
	return s
}

func (s WorkloadSpec) durationText() string {
	if s.Duration == 0 {
		return ""
	}
	return time.Duration(s.Duration).String()
}

// describe says what the workload sends, for the progress output.
func (s WorkloadSpec) describe() string {
	var what []string
	if s.Requests > 0 {
		what = append(what, fmt.Sprintf("%d page loads", s.Requests))
	}
	if s.Duration > 0 {
		what = append(what, fmt.Sprintf("page loads for %s", time.Duration(s.Duration)))
	}
	out := strings.Join(what, " or ")
	if s.Rate > 0 {
		out += fmt.Sprintf(" at %g a second", s.Rate)
	}
	if s.Concurrency > 1 {
		out += fmt.Sprintf(" from %d browsers", s.Concurrency)
	}
	return out
}

// WorkloadResult counts page loads; every figure is measured.
type WorkloadResult struct {
	Sent       int `json:"sent"`
	Succeeded  int `json:"succeeded"`
	Failed     int `json:"failed"`
	Challenges int `json:"challenges"`
	// Skipped are the rate's slots no browser was free to take in time.
	Skipped   int           `json:"skipped,omitempty"`
	Errors    []string      `json:"errors,omitempty"`
	Elapsed   time.Duration `json:"-"`
	Latencies []time.Duration
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
	var next, started, skipped atomic.Int64
	start := time.Now()
	counted := w.Requests > 0 || w.Duration == 0
	var interval time.Duration
	if w.Rate > 0 {
		interval = time.Duration(float64(time.Second) / w.Rate)
	}
	// The duration ends the sending, not the page loads under way: one cut
	// off at the deadline would count as a failure the agent never made.
	over := func(t time.Time) bool { return w.Duration > 0 && !t.Before(start.Add(w.Duration)) }
	var wg sync.WaitGroup
	for b := 0; b < w.Concurrency; b++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			jar, _ := cookiejar.New(nil)
			client := &http.Client{Jar: jar, Timeout: 90 * time.Second, Transport: w.Transport}
			for {
				if counted && started.Load() >= int64(w.Requests) || ctx.Err() != nil {
					return
				}
				if w.Rate > 0 {
					i := next.Add(1) - 1
					slot := start.Add(time.Duration(float64(i) / w.Rate * float64(time.Second)))
					if over(slot) {
						return
					}
					// Sending the missed slots at once would be load the lab
					// never asked for, and would run past the duration.
					if time.Since(slot) > interval {
						skipped.Add(1)
						continue
					}
					if !sleepUntil(ctx, slot) {
						return
					}
				}
				// The slot's time alone is not enough: a browser back from
				// a slow page load may be past the end.
				if over(time.Now()) {
					return
				}
				n := started.Add(1) - 1
				if counted && n >= int64(w.Requests) {
					return
				}
				t0 := time.Now()
				challenged, err := w.pageLoad(ctx, client, w.Paths[n%int64(len(w.Paths))])
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
	res.Skipped = int(skipped.Load())
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

// sleepUntil waits for t; false when ctx ends first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}
