package lab

// A lab file's faults: list (docs/faults.md), read with every problem's
// line, and the servers it names found among the lab's. What each action
// means and its limits are package fault's, shared with smps.

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"

	"github.com/agentlab/agentlab/yamlfile"

	"github.com/agentlab/agentlab/fault"
	"github.com/agentlab/agentlab/trace"
)

// AnchorWorkload is the default anchor of a fault's at: the moment the
// workload starts.
const AnchorWorkload = "workload"

// faultPhases are the trace phases a fault may wait for with after:.
// Admin is not one: the web server's agents never enter it.
var faultPhases = []string{trace.PhaseBootstrap, trace.PhaseHCO, trace.PhaseRequests, trace.PhaseManagement}

// Fault is one item of a lab file's faults: list.
//
//   - at: 5s          # after the anchor (default 0s)
//     after: hco      # the anchor: workload (default), bootstrap, hco, requests or management
//     server: smps1   # a policy server of the lab: its host, host:port, or the host's first label
//     action: kill    # see fault.Parse
type Fault struct {
	Line  int           // of the item in the lab file
	At    time.Duration // after the anchor
	After string        // the anchor; "" means AnchorWorkload
	// Server is as written until Validate, then the server's host, or its
	// host:port when the host has several of the lab's servers.
	Server string
	Action fault.Action

	addr     string // the server's host:port, set by Validate: what the run keys it by
	problems []lineError
}

type lineError struct {
	line int
	msg  string
}

// UnmarshalYAML reads a fault item and keeps every problem with its line,
// for Validate to report with the file's name: a lab file with three bad
// faults gets three errors, not the first one.
func (f *Fault) UnmarshalYAML(n ast.Node) error {
	line, _ := yamlfile.Pos(n)
	*f = Fault{Line: line}
	bad := func(n ast.Node, format string, a ...any) {
		line, _ := yamlfile.Pos(n)
		f.problems = append(f.problems, lineError{line, fmt.Sprintf(format, a...)})
	}
	entries := yamlfile.Entries(n)
	if entries == nil {
		bad(n, "a fault is a mapping of at, after, server and action, such as {at: 5s, server: smps1, action: kill}")
		return nil
	}
	// A key given twice is refused by the YAML parser before this runs.
	seen := map[string]bool{}
	for _, e := range entries {
		k := yamlfile.KeyText(e.Key)
		seen[k] = true
		v, ok := yamlfile.Scalar(e.Value)
		if !ok {
			bad(e.Value, "%s: want a single value, such as %s", k, map[string]string{
				"at": "5s", "after": "hco", "server": "smps1", "action": "stall 10s"}[k])
			continue
		}
		switch k {
		case "at":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				bad(e.Value, "at %q: want a duration such as 5s (0s: at once)", v)
			}
			f.At = d
		case "after":
			if v != AnchorWorkload && !slices.Contains(faultPhases, v) {
				bad(e.Value, "after %q: want %s (the workload's start) or a phase of the web server's agents: %s",
					v, AnchorWorkload, strings.Join(faultPhases, ", "))
			}
			f.After = v
		case "server":
			if v == "" {
				bad(e.Value, "server is empty: name one of the lab's policy servers")
			}
			f.Server = v
		case "action":
			a, err := fault.Parse(v)
			if err != nil {
				bad(e.Value, "%v", err)
			}
			f.Action = a
		default:
			bad(e.Key, "unknown key %q in a fault: want at, after, server and action", k)
		}
	}
	if !seen["server"] {
		bad(n, "the fault names no server")
	}
	if !seen["action"] {
		bad(n, "the fault has no action: want %s", fault.Usage())
	}
	return nil
}

// Anchor is the moment At counts from.
func (f Fault) Anchor() string {
	if f.After == "" {
		return AnchorWorkload
	}
	return f.After
}

// When is the fault's time as a person reads it: "at 5s", "1s after hco".
func (f Fault) When() string {
	if f.Anchor() == AnchorWorkload {
		return "at " + f.At.String()
	}
	if f.At == 0 {
		return "after " + f.After
	}
	return f.At.String() + " after " + f.After
}

// validateFaults gives one error per problem, each naming the lab file and
// the line, as file:line: message.
func (l *Lab) validateFaults() []error { return l.checkFaults(l.Faults, "fault") }

// checkFaults is validateFaults for a list of faults, what naming an item
// in errors ("fault", a remedy's).
func (l *Lab) checkFaults(faults []Fault, what string) []error {
	var errs []error
	for i := range faults {
		f := &faults[i]
		if f.Line == 0 {
			// An empty item ("- " alone, or "- ~"): the YAML library
			// hands a null to no unmarshaler, so nothing said where.
			errs = append(errs, fmt.Errorf("%s: %s %d is empty: want a mapping of at, after, server and action, such as {at: 5s, server: smps1, action: kill}", l.File, what, i+1))
			continue
		}
		for _, p := range f.problems {
			errs = append(errs, fmt.Errorf("%s:%d: %s %d: %s", l.File, p.line, what, i+1, p.msg))
		}
		if f.Server == "" {
			continue
		}
		ps, err := l.faultServer(f.Server)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %s %d: %v", l.File, f.Line, what, i+1, err))
			continue
		}
		f.Server, f.addr = l.serverName(ps), ps.Addr()
	}
	return errs
}

// serverName is how the faults name a server to a person: its host, unless
// the host has several of the lab's servers, where the port tells them apart.
func (l *Lab) serverName(ps PolicyServer) string {
	for _, o := range l.PolicyServers {
		if o.Host == ps.Host && o.Port != ps.Port {
			return ps.Addr()
		}
	}
	return ps.Host
}

// faultServer finds the lab server a fault names: its host, host:port, or
// the host's first label (smps1 for smps1.shared.lab) when only one host
// has it.
func (l *Lab) faultServer(name string) (PolicyServer, error) {
	var exact, label []PolicyServer
	for _, p := range l.PolicyServers {
		switch {
		case p.Host == name || p.Addr() == name:
			exact = append(exact, p)
		case strings.SplitN(p.Host, ".", 2)[0] == name:
			label = append(label, p)
		}
	}
	hosts := l.ServerHosts()
	switch {
	case len(exact) == 1:
		return exact[0], nil
	case len(exact) > 1:
		return PolicyServer{}, fmt.Errorf("server %q is %d of the lab's policy servers: name one as host:port", name, len(exact))
	case len(label) == 1:
		return label[0], nil
	case len(label) > 1 && !slices.ContainsFunc(label, func(p PolicyServer) bool { return p.Host != label[0].Host }):
		return PolicyServer{}, fmt.Errorf("server %q is %d of the lab's policy servers: name one as host:port", name, len(label))
	case len(label) > 1:
		return PolicyServer{}, fmt.Errorf("server %q could be any of %d hosts: write the whole host name", name, len(label))
	}
	return PolicyServer{}, fmt.Errorf("server %q is not one of the lab's policy servers (%s)", name, strings.Join(hosts, ", "))
}
