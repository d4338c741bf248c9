package pool

import (
	"strconv"
	"sync/atomic"

	"github.com/agentlab/agentlab/conf"
)

// State is a Policy Server's state as the agent sees it, with the vendor's
// names (DOMAIN.md section 6).
type State int

const (
	// Active servers take requests.
	Active State = iota
	// Disabled servers were down when the pool started. They are retried
	// by CheckServers, or by a request that finds no Active server.
	Disabled
	// Failed servers were Active until an error or a RequestTimeout on one
	// of their sockets. They are retried like Disabled ones.
	Failed
)

// String gives the vendor's name of the state.
func (s State) String() string {
	switch s {
	case Active:
		return "Active"
	case Disabled:
		return "Disabled"
	case Failed:
		return "Failed"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// candidate is what a selector knows of one server. Clusters will add their
// cluster number and the server's response time here.
type candidate struct {
	index int // position in the HCO's list
	state State
}

// selector decides where a request goes. order lists server indexes, the
// preferred first; the pool sends the request to the first one it has not
// tried yet for this request, so a retry goes to the second, and so on.
//
// Every selector puts the available servers first and the unavailable ones
// after them: an unavailable server is retried only when no available one
// is left, which is the vendor's rule for Disabled and Failed servers.
type selector interface {
	order(cands []candidate) []int
}

func newSelector(hco conf.HCO) selector {
	if hco.EnableFailover {
		return failover{}
	}
	return &roundRobin{}
}

// failover sends everything to the first available server in HCO order
// (EnableFailover=yes).
type failover struct{}

func (failover) order(cands []candidate) []int {
	avail, unavail := split(cands)
	return append(avail, unavail...)
}

// roundRobin spreads requests over the available servers in turn
// (EnableFailover=no).
type roundRobin struct{ next atomic.Uint64 }

func (r *roundRobin) order(cands []candidate) []int {
	avail, unavail := split(cands)
	if n := len(avail); n > 1 {
		k := int((r.next.Add(1) - 1) % uint64(n))
		rotated := make([]int, 0, len(cands))
		rotated = append(append(rotated, avail[k:]...), avail[:k]...)
		return append(rotated, unavail...)
	}
	return append(avail, unavail...)
}

func split(cands []candidate) (avail, unavail []int) {
	avail = make([]int, 0, len(cands))
	for _, c := range cands {
		if c.state == Active {
			avail = append(avail, c.index)
		} else {
			unavail = append(unavail, c.index)
		}
	}
	return avail, unavail
}
