package pool

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/trace"
)

// State is a Policy Server's state as the agent sees it, with the vendor's
// names (DOMAIN.md section 6). pool/doc.go gives the transitions.
type State int

const (
	// Active servers are up and take new requests.
	Active State = iota
	// Inactive servers are up but get no new requests: the selection
	// prefers another one (a backup under EnableFailover=yes, a server of
	// a cluster that is not in use). Their sockets stay open.
	Inactive
	// Disabled servers were down when the pool started. The health poll
	// retries them, and so does a request that finds no server up.
	Disabled
	// Failed servers were up until an error or a RequestTimeout on one of
	// their sockets. They are retried like Disabled ones.
	Failed
)

// String gives the vendor's name of the state, as trace events name it.
func (s State) String() string {
	switch s {
	case Active:
		return trace.StateActive
	case Inactive:
		return trace.StateInactive
	case Disabled:
		return trace.StateDisabled
	case Failed:
		return trace.StateFailed
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// up tells whether a server in this state answers.
func (s State) up() bool { return s == Active || s == Inactive }

// candidate is what the selection knows of one server.
type candidate struct {
	index   int   // position in the pool's list (HCO order, clusters flattened)
	cluster int   // 0-based cluster; 0 for every server without clusters
	health  State // Active (up), Disabled or Failed: Inactive is the selection's verdict, never an input
	// latency is the server's recent response time (an EWMA of its
	// answers); 0 means not measured yet.
	latency time.Duration
}

type mode int

const (
	modeFailover   mode = iota // EnableFailover=yes
	modeRoundRobin             // EnableFailover=no
	modeClusters               // the HCO lists clusters; EnableFailover does not apply
)

// rule is the HCO's server selection. Its methods are pure functions of
// the candidates, so that a table test can check every case.
type rule struct {
	mode mode
	// threshold is the FailoverThreshold percentage (clusters only).
	threshold int
}

func ruleFor(hco conf.HCO) rule {
	switch {
	case len(hco.Clusters) > 0:
		return rule{mode: modeClusters, threshold: hco.FailoverThreshold}
	case hco.EnableFailover:
		return rule{mode: modeFailover}
	}
	return rule{mode: modeRoundRobin}
}

// order lists the candidates' indexes, the preferred first: a request goes
// to the first one it has not tried yet, so a retry goes to the second,
// and so on. turn rotates round robin: the pool gives each request the
// next turn.
//
// Every mode puts the servers that are up first and the others after them,
// in HCO order: a Disabled or Failed server is retried by a request only
// when no server that is up is left (the vendor's rule).
//
//   - failover: the servers that are up in HCO order;
//   - round robin: the servers that are up in HCO order, rotated by turn;
//   - clusters: the servers that are up in the cluster in use (inUse), the
//     fastest first; then those of the other clusters, cluster by cluster
//     in HCO order, the fastest first in each.
func (r rule) order(cands []candidate, turn uint64) []int {
	out := make([]int, 0, len(cands))
	switch r.mode {
	case modeFailover:
		out = appendUp(out, cands, -1)
	case modeRoundRobin:
		out = appendUp(out, cands, -1)
		if n := len(out); n > 1 {
			// Rotated left by turn in place: no second slice per request.
			k := int(turn % uint64(n))
			slices.Reverse(out[:k])
			slices.Reverse(out[k:])
			slices.Reverse(out)
		}
	case modeClusters:
		use := r.clusterInUse(cands)
		if use >= 0 {
			out = appendFastest(out, cands, use)
		}
		size, _ := clusterCounts(cands)
		for c := range size {
			if c != use {
				out = appendFastest(out, cands, c)
			}
		}
	}
	for _, c := range cands {
		if !c.health.up() {
			out = append(out, c.index)
		}
	}
	return out
}

// inUse tells, for each candidate in turn, whether the rule gives it new
// requests now: Active if so and up, Inactive if up and not. Under
// failover only the first server that is up; under round robin every
// server that is up; under clusters every server that is up in the cluster
// in use (the fastest of them gets the requests, and the others are next
// for a retry or as soon as they are faster).
func (r rule) inUse(cands []candidate) []bool {
	use := make([]bool, len(cands))
	switch r.mode {
	case modeFailover:
		for i, c := range cands {
			if c.health.up() {
				use[i] = true
				break
			}
		}
	case modeRoundRobin:
		for i, c := range cands {
			use[i] = c.health.up()
		}
	case modeClusters:
		in := r.clusterInUse(cands)
		for i, c := range cands {
			use[i] = c.health.up() && c.cluster == in
		}
	}
	return use
}

// clusterInUse is the first cluster, in HCO order, whose servers that are
// up number at least ceil(threshold% x its size) (and at least one: a
// cluster with no server up cannot take a request, whatever the
// threshold); when every cluster is below, the first with any server up;
// -1 when no server is up at all.
func (r rule) clusterInUse(cands []candidate) int {
	size, up := clusterCounts(cands)
	for c := range size {
		if up[c] > 0 && up[c] >= needed(r.threshold, size[c]) {
			return c
		}
	}
	for c := range size {
		if up[c] > 0 {
			return c
		}
	}
	return -1
}

// clusterCounts gives each cluster's size and how many of its servers are up.
func clusterCounts(cands []candidate) (size, up []int) {
	n := 0
	for _, c := range cands {
		n = max(n, c.cluster+1)
	}
	size, up = make([]int, n), make([]int, n)
	for _, c := range cands {
		size[c.cluster]++
		if c.health.up() {
			up[c.cluster]++
		}
	}
	return size, up
}

// needed is ceil(threshold% x size), in integers: 60% of 3 servers is
// ceil(1.8) = 2.
func needed(threshold, size int) int {
	return (threshold*size + 99) / 100
}

// why explains the rule's choice for a state change's note: which server
// or cluster now takes the new requests, and why.
func (r rule) why(cands []candidate, addrs []string) string {
	first := -1
	if o := r.order(cands, 0); len(o) > 0 && cands[o[0]].health.up() {
		first = o[0]
	}
	if first < 0 {
		return "no policy server is up"
	}
	switch r.mode {
	case modeRoundRobin:
		return "new requests go round robin over the servers that are up"
	case modeClusters:
		in := r.clusterInUse(cands)
		size, up := clusterCounts(cands)
		s := fmt.Sprintf("cluster %d in use (%d of %d up, FailoverThreshold %d%% needs %d)",
			in+1, up[in], size[in], r.threshold, needed(r.threshold, size[in]))
		for c := range in {
			s += fmt.Sprintf("; cluster %d has %d of %d up", c+1, up[c], size[c])
		}
		return s + "; new requests go to the fastest, now " + addrs[first]
	}
	return "new requests go to " + addrs[first] + ", the first server up in HCO order"
}

// appendUp appends the indexes of the servers that are up, in HCO order;
// cluster >= 0 keeps that cluster's only.
func appendUp(out []int, cands []candidate, cluster int) []int {
	for _, c := range cands {
		if c.health.up() && (cluster < 0 || c.cluster == cluster) {
			out = append(out, c.index)
		}
	}
	return out
}

// appendFastest appends cluster's servers that are up, the lowest latency
// first: one not measured yet (0) comes first, so that it gets measured;
// equal ones keep HCO order.
func appendFastest(out []int, cands []candidate, cluster int) []int {
	var up []candidate
	for _, c := range cands {
		if c.health.up() && c.cluster == cluster {
			up = append(up, c)
		}
	}
	slices.SortStableFunc(up, func(a, b candidate) int { return cmp.Compare(a.latency, b.latency) })
	for _, c := range up {
		out = append(out, c.index)
	}
	return out
}
