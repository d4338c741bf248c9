package fault

// The control API's side of the contract (smps --control, docs/faults.md):
// where a command goes, the header that proves it is no web page's, and
// what smps answers. policyserver serves it; Client sends it.

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// ControlPrefix is the path under which the fault commands live: GET
// ControlPrefix gives the faults in force, POST ControlPrefix/ACTION
// applies one.
const ControlPrefix = "/faults"

// ControlHeader must be on every POST, with the value 1. A browser sends
// a custom header only after a CORS preflight, which the control API
// never answers, so a web page the user visits cannot POST a fault.
const ControlHeader = "X-Agentlab-Control"

// ControlPath is the control API request that carries the action out:
// /faults/stall?for=10s. ParseControl reads it back.
func (a Action) ControlPath() string {
	p := ControlPrefix + "/" + string(a.Kind)
	if v, _ := lookup(a.Kind); v.param != "" {
		if arg := a.arg(); arg != "" {
			p += "?" + url.Values{v.param: {arg}}.Encode()
		}
	}
	return p
}

// ParseControl reads a command from a control request's path and query:
// /faults/stop-accepting[?mode=refuse|queue], /faults/reset,
// /faults/stall?for=10s, /faults/reject-handshakes[?code=3154],
// /faults/resume, /faults/slow-directory?latency=800ms,
// /faults/fast-directory, /faults/flushrequests. Unknown actions and parameters are errors: a typo must
// not become a fault that silently does something else.
func ParseControl(path, rawQuery string) (Action, error) {
	name, ok := strings.CutPrefix(path, ControlPrefix+"/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return Action{}, fmt.Errorf("path %q: want %s/ACTION, ACTION one of %s", path, ControlPrefix, serverActions)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return Action{}, fmt.Errorf("query %q: %w", rawQuery, err)
	}
	v, ok := lookup(Kind(name))
	if !ok || !v.byServer {
		return Action{}, errUnknownServerFault(name)
	}
	for k, vs := range q {
		// v.param == "" for actions without one: an empty key (?=x) must
		// not pass as that parameter.
		if v.param == "" {
			return Action{}, fmt.Errorf("%s takes no parameter, got %q", v.kind, k)
		}
		if k != v.param {
			return Action{}, fmt.Errorf("%s takes only %q, got %q", v.kind, v.param, k)
		}
		if len(vs) != 1 {
			return Action{}, fmt.Errorf("%s: %q given %d times", v.kind, k, len(vs))
		}
	}
	return v.parse(q.Get(v.param), v.param != "" && q.Has(v.param), querySpelling)
}

// State is the faults in force at a server: GET /faults, and the state
// in every answer.
type State struct {
	// Accept is accepting, queueing or refusing.
	Accept     string     `json:"accept"`
	StallUntil *time.Time `json:"stall_until,omitempty"`
	RejectCode int        `json:"reject_handshakes,omitempty"`
	// Listening are the addresses with an open listener; Closed those
	// closed by a refusal (or that could not listen again on resume).
	Listening []string `json:"listening"`
	Closed    []string `json:"closed,omitempty"`
	Conns     int      `json:"conns"`
	// DirectoryLatency is the user directory's latency per lookup set by
	// slow-directory; absent when the store's own applies.
	DirectoryLatency time.Duration `json:"directory_latency,omitempty"`
}

// Result is smps's answer to a command: what it did, for people (the lab
// prints and records it), and the state it left.
type Result struct {
	Done  string `json:"done"`
	Reset int    `json:"reset,omitempty"` // reset: how many connections
	// Flushed is how many queued requests flushrequests dropped.
	Flushed int   `json:"flushed,omitempty"`
	State   State `json:"state"`
}
