package pool

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentlab/agentlab/metrics"
)

// Collector is the pool's metrics in Prometheus's form (package metrics
// names them), read from Stats at each scrape: nothing is counted twice,
// and a scrape sees one snapshot. pools gives the pools to report, at the
// time of the scrape (an agent process may have none yet, or replace it);
// their figures add up, a server's sockets by its address.
type Collector struct {
	pools func() []*Pool
}

// NewCollector returns the Collector of the pools that pools gives.
func NewCollector(pools func() []*Pool) *Collector { return &Collector{pools: pools} }

var (
	descSockets = prometheus.NewDesc(metrics.AgentSockets,
		"The agent's sockets to each Policy Server, idle or busy (one request at a time per socket).",
		[]string{metrics.LabelServer, metrics.LabelState}, nil)
	descServerState = prometheus.NewDesc(metrics.AgentServerState,
		"1 for the state the agent has each Policy Server in (Active, Inactive, Disabled, Failed), 0 for the others.",
		[]string{metrics.LabelServer, metrics.LabelState}, nil)
	descCallersWaiting = prometheus.NewDesc(metrics.AgentCallersWaiting,
		"Requests waiting for a socket: every socket busy, MaxSocketsPerPort reached or new ones being opened.",
		nil, nil)
	descRequests = prometheus.NewDesc(metrics.AgentRequests,
		"Requests the agent sent, by call and by the Agent API result its caller got (TIMEOUT and NOCONNECTION when no Policy Server answered).",
		[]string{metrics.LabelType, metrics.LabelResult}, nil)
	descResends = prometheus.NewDesc(metrics.AgentResends,
		"Requests sent again on a new connection after no answer within RequestTimeout.",
		nil, nil)
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSockets, descServerState, descCallersWaiting, descRequests, descResends} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	type sockKey struct{ server, state string }
	socks := map[sockKey]int{}
	states := map[string]State{}
	var order []string
	calls := map[CallResult]int64{}
	var waiting int
	var resends int64
	for _, p := range c.pools() {
		st := p.Stats()
		for _, s := range st.Servers {
			if _, ok := states[s.Addr]; !ok {
				order = append(order, s.Addr)
			}
			states[s.Addr] = s.State
			socks[sockKey{s.Addr, "busy"}] += s.Busy
			socks[sockKey{s.Addr, "idle"}] += s.Open - s.Busy
			waiting += s.Waiting
		}
		for k, n := range st.Calls {
			calls[k] += n
		}
		resends += st.Resends
	}
	for _, addr := range order {
		for _, state := range []string{"idle", "busy"} {
			ch <- prometheus.MustNewConstMetric(descSockets, prometheus.GaugeValue, float64(socks[sockKey{addr, state}]), addr, state)
		}
		for _, state := range []State{Active, Inactive, Disabled, Failed} {
			v := 0.0
			if states[addr] == state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descServerState, prometheus.GaugeValue, v, addr, state.String())
		}
	}
	ch <- prometheus.MustNewConstMetric(descCallersWaiting, prometheus.GaugeValue, float64(waiting))
	for k, n := range calls {
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(n), k.Call, k.Result)
	}
	ch <- prometheus.MustNewConstMetric(descResends, prometheus.CounterValue, float64(resends))
}
