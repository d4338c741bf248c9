package lab

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestWorkloadLimits: a workload ends at its request count or its
// duration, whichever comes first, and a rate spaces its page loads.
func TestWorkloadLimits(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	cases := []struct {
		name       string
		w          Workload
		minN, maxN int
		minT, maxT time.Duration
	}{
		{"count", Workload{Requests: 7}, 7, 7, 0, 5 * time.Second},
		{"count at a rate", Workload{Requests: 5, Rate: 20, Concurrency: 3}, 5, 5, 190 * time.Millisecond, 2 * time.Second},
		{"duration at a rate", Workload{Duration: 500 * time.Millisecond, Rate: 20, Concurrency: 2}, 8, 11, 450 * time.Millisecond, 2 * time.Second},
		{"count before duration", Workload{Requests: 3, Duration: time.Minute}, 3, 3, 0, 5 * time.Second},
		// The last slot before the end is at 200ms: the run ends with it.
		{"duration before count", Workload{Requests: 1000, Duration: 300 * time.Millisecond, Rate: 10}, 3, 3, 190 * time.Millisecond, 2 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := c.w
			w.BaseURL, w.Paths = srv.URL, []string{"/"}
			t0 := time.Now()
			res := w.Run(context.Background())
			took := time.Since(t0)
			if res.Sent < c.minN || res.Sent > c.maxN || res.Failed != 0 {
				t.Errorf("sent %d (failed %d), want %d to %d", res.Sent, res.Failed, c.minN, c.maxN)
			}
			if took < c.minT || took > c.maxT {
				t.Errorf("took %s, want %s to %s", took, c.minT, c.maxT)
			}
		})
	}
	// A canceled run stops sending.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res := (Workload{BaseURL: srv.URL, Duration: time.Minute, Rate: 5}).Run(ctx); res.Sent != 0 {
		t.Errorf("a canceled workload sent %d", res.Sent)
	}
}

// TestWorkloadSpec: the command line wins over the lab, the lab over the
// default of 10 page loads from one browser.
func TestWorkloadSpec(t *testing.T) {
	lab := WorkloadSpec{Duration: Duration(20 * time.Second), Rate: 100, Concurrency: 4}
	cases := []struct {
		name string
		lab  WorkloadSpec
		opts Options
		want WorkloadSpec
	}{
		{"nothing given", WorkloadSpec{}, Options{}, WorkloadSpec{Requests: DefaultRequests, Concurrency: 1}},
		{"the lab's", lab, Options{}, lab},
		{"flags win", lab, Options{Requests: 50, Concurrency: 2, Rate: 5, Duration: time.Second},
			WorkloadSpec{Requests: 50, Concurrency: 2, Rate: 5, Duration: Duration(time.Second)}},
		{"requests with the lab's duration", lab, Options{Requests: 50}, WorkloadSpec{Requests: 50, Duration: lab.Duration, Rate: 100, Concurrency: 4}},
	}
	for _, c := range cases {
		r := &Run{Lab: &Lab{Workload: c.lab}, Opts: c.opts}
		if got := r.workloadSpec(); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}
