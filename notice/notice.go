// Package notice is the one contract between agentlab's processes about
// their lifecycle: the lines a process prints on its standard output (or
// on its parent's notice pipe) to say that it listens or serves, that a
// process it supervises started or died, and what it did about it. The
// process that announces and the one that listens (the lab, an httpd or
// WAS parent, a test) both use this package, so that neither matches the
// other's text with a literal of its own.
//
// A notice is one line, "<prog>: <kind> <payload>", readable by a person
// who runs the program by hand: "smps: listening on 127.0.0.21:44443",
// "hla: serving http://127.0.0.11:8080". Process notices carry their
// payload as JSON (trace.Process), since a reader needs every field. A
// web worker's news to its parent (HCODone, Recycling) has no payload:
// the pipe it comes on says which worker it is.
package notice

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"unicode"

	"github.com/agentlab/agentlab/trace"
)

// The programs that print notices, as their notices name them.
const (
	ProgSmps = "smps"
	ProgHLA  = "hla"
	// ProgLLAWP names the LLAWP's notices, which its owner prints for it
	// (the LLAWP's stdout belongs to go-plugin).
	ProgLLAWP = "llawp"
)

// SmpsListening and HLAServing are the readiness notices a lab waits for.
var (
	SmpsListening = Notice{Prog: ProgSmps, Kind: Listening}
	HLAServing    = Notice{Prog: ProgHLA, Kind: Serving}
)

// Kind is what a notice says.
type Kind string

const (
	// Listening: a Policy Server accepts TLI connections on Addr.
	Listening Kind = "listening on"
	// Control: a Policy Server takes fault commands on Addr (smps --control).
	Control Kind = "control on"
	// Metrics: a process serves Prometheus's /metrics on Addr (--metrics);
	// Prog says whose (smps, hla, llawp) when a supervisor passes on
	// another process's.
	Metrics Kind = "metrics on"
	// Serving: a web server answers HTTP at URL.
	Serving Kind = "serving"
	// Started: a supervisor started Process (a replacement after a death,
	// or a new LLAWP).
	Started Kind = "started"
	// Exited: a process that a supervisor watches ended; Process.Exit says
	// how, whether it was a death, and what the supervisor did.
	Exited Kind = "exited"
	// HCODone: a web worker is through its HCO phase, its pool open (to
	// its parent, which launches the Apache model's LLAWP once every
	// first worker is). No payload.
	HCODone Kind = "hco phase done"
	// Recycling: a web worker has served its MaxRequests and drains (to
	// its parent, which replaces it at once when it exits, where any
	// other exit is a death). No payload.
	Recycling Kind = "recycling"
)

// kinds in the order Parse tries them: none is a prefix of a later one.
var kinds = []Kind{Listening, Control, Metrics, Serving, Started, Exited, HCODone, Recycling}

// bare are the kinds with no payload.
func bare(k Kind) bool { return k == HCODone || k == Recycling }

// Notice is one announcement.
type Notice struct {
	// Prog is the program that prints it: smps, hla.
	Prog string
	Kind Kind
	// Addr is host:port for Listening, Control and Metrics, a URL for
	// Serving.
	Addr string
	// Process is set for Started and Exited.
	Process *trace.Process
}

// String is the notice's line, without the newline.
func (n Notice) String() string {
	switch {
	case bare(n.Kind):
		return fmt.Sprintf("%s: %s", n.Prog, n.Kind)
	case n.Kind == Started || n.Kind == Exited:
		b, _ := json.Marshal(n.Process)
		return fmt.Sprintf("%s: %s %s", n.Prog, n.Kind, b)
	default:
		return fmt.Sprintf("%s: %s %s", n.Prog, n.Kind, n.Addr)
	}
}

// Write prints the notice as one line, in one write: notices from several
// goroutines never interleave.
func Write(w io.Writer, n Notice) error {
	_, err := io.WriteString(w, n.String()+"\n")
	return err
}

// Parse reads a line that String wrote; ok is false for any other line
// (a program's own output, which a reader passes on as it is).
func Parse(line string) (n Notice, ok bool) {
	prog, rest, found := strings.Cut(strings.TrimRight(line, "\r\n"), ": ")
	if !found || !word(prog) {
		return Notice{}, false
	}
	for _, k := range kinds {
		if bare(k) {
			if rest == string(k) {
				return Notice{Prog: prog, Kind: k}, true
			}
			continue
		}
		payload, found := strings.CutPrefix(rest, string(k)+" ")
		if !found {
			continue
		}
		n = Notice{Prog: prog, Kind: k}
		switch k {
		case Started, Exited:
			var p trace.Process
			if err := json.Unmarshal([]byte(payload), &p); err != nil || p.PID <= 0 || p.Name == "" {
				return Notice{}, false
			}
			if k == Exited && p.Exit == nil {
				return Notice{}, false
			}
			n.Process = &p
		case Serving:
			if u, err := url.Parse(payload); !word(payload) || err != nil || u.Scheme == "" || u.Host == "" {
				return Notice{}, false
			}
			n.Addr = payload
		default:
			if _, _, err := net.SplitHostPort(payload); !word(payload) || err != nil {
				return Notice{}, false
			}
			n.Addr = payload
		}
		return n, true
	}
	return Notice{}, false
}

// word: non-empty, with no space or control character, so that a notice
// stays one line and its fields stay apart.
func word(s string) bool {
	return s != "" && strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) < 0
}

// ParseKind is Parse for a reader that waits for one kind from one program.
func ParseKind(line, prog string, k Kind) (Notice, bool) {
	n, ok := Parse(line)
	if !ok || n.Prog != prog || n.Kind != k {
		return Notice{}, false
	}
	return n, true
}
