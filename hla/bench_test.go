package hla

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkAgent compares, in one run, the built-in site alone with the
// site behind the agent, cache off (the seed's setting) and on, through a
// fake Policy Server that answers at once: the figures are the agent's own
// cost, not the network's. ps-calls/op shows what each load sends.
func BenchmarkAgent(b *testing.B) {
	for _, page := range []string{"/", "/protected/"} {
		for _, mode := range []struct {
			name  string
			agent bool
			size  int
		}{{"site", false, 0}, {"cache-off", true, 0}, {"cache-on", true, 700}} {
			b.Run(mode.name+page, func(b *testing.B) {
				var h http.Handler = NewSite()
				var ps *fakePS
				cookie := ""
				if mode.agent {
					rg := newRig(b, cacheACO(mode.size, mode.size))
					rg.agent.cfg.Next = h
					rg.ps.norecord = true
					cookie = rg.login(b, "user1")
					h, ps = rg.agent, rg.ps
					ps.total.Store(0)
				}
				r := httptest.NewRequest(http.MethodGet, page, nil)
				r.AddCookie(&http.Cookie{Name: SessionCookie, Value: cookie})
				b.ReportAllocs()
				for b.Loop() {
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					if w.Code != http.StatusOK {
						b.Fatalf("status %d", w.Code)
					}
				}
				if ps != nil {
					b.ReportMetric(float64(ps.total.Load())/float64(b.N), "ps-calls/op")
				}
			})
		}
	}
}
