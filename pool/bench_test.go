package pool

import (
	"context"
	"testing"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// BenchmarkPoolDo sends IsProtected from parallel callers through the pool
// and, for comparison, through one tli.Client, whose single socket takes one
// request at a time. Figures only: the machine decides the numbers.
//
// Callers outnumber CPUs (8 per GOMAXPROCS), as web server threads do, so
// that the pool has a reason to grow.
func BenchmarkPoolDo(b *testing.B) {
	l := newLab(b)
	l.untraced = true // writing traces would be most of the work
	ps := l.realServer("smps1.shared.lab")
	cfg, _ := l.config(hcoFor(true, ps.ep))
	// Still resolves the lab's names, but records nothing.
	cfg.Recorder = trace.NewRecorder(nil, trace.Options{Hosts: l.hostsMap()})

	p, _ := l.start(cfg)

	b.Run("pool", func(b *testing.B) {
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := p.Do(context.Background(), isProtected("/protected/index.html"))
				if err != nil || resp.Result != tlipb.Result_YES {
					b.Errorf("IsProtected: %v %v", resp, err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(p.Stats().Servers[0].Opened), "sockets")
	})

	b.Run("single-client", func(b *testing.B) {
		ctx := context.Background()
		c, err := tli.Dial(ctx, ps.ep.addr(), tli.ClientConfig{
			TrustedHost: trustedHost, Secret: secret, Recorder: cfg.Recorder, Dialer: cfg.Dialer, HandshakeTimeout: wait,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := c.Do(ctx, isProtected("/protected/index.html"))
				if err != nil || resp.Result != tlipb.Result_YES {
					b.Errorf("IsProtected: %v %v", resp, err)
					return
				}
			}
		})
	})
}

// BenchmarkRuleOrder is the selection every request pays for: the order of
// the servers for each rule, over the lab's sizes (two servers; two
// clusters of three).
func BenchmarkRuleOrder(b *testing.B) {
	two := plain(Active, Active)
	six := cs(c{0, Active, 3}, c{0, Failed, 0}, c{0, Active, 1}, c{1, Active, 2}, c{1, Active, 2}, c{1, Disabled, 0})
	for _, bb := range []struct {
		name  string
		rule  rule
		cands []candidate
	}{
		{"failover", rule{mode: modeFailover}, two},
		{"round-robin", rule{mode: modeRoundRobin}, two},
		{"clusters", rule{mode: modeClusters, threshold: 60}, six},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if o := bb.rule.order(bb.cands, uint64(i)); len(o) != len(bb.cands) {
					b.Fatal(o)
				}
			}
		})
	}
}
