// Package fault is the contract between a lab and the Policy Servers it
// breaks (docs/faults.md): the fault actions and their limits, the two
// ways they are written (a lab file's "stall 10s", the control API's
// POST /faults/stall?for=10s), and the client a lab tells smps with. The
// lab and smps both import it, so that one parser reads both spellings,
// one set of limits bounds them, and the control API's header, paths and
// answers are defined once. policyserver carries the faults out; lab
// schedules them, and kills and restarts servers itself.
//
// It sits above tli, whose handshake error codes reject-handshakes names,
// and below policyserver and lab: policyserver must not import lab, and
// lab no server code.
package fault

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/agentlab/tli"
)

// Kind is a fault action's verb, as both spellings write it.
type Kind string

// The fault actions. Kill and Restart are the lab's own (it signals and
// starts the smps process); smps carries out the others when told to.
const (
	Kill             Kind = "kill"
	Restart          Kind = "restart"
	StopAccepting    Kind = "stop-accepting"
	Reset            Kind = "reset"
	Stall            Kind = "stall"
	RejectHandshakes Kind = "reject-handshakes"
	Resume           Kind = "resume"
	// SlowDirectory sets the user directory's latency per lookup (the
	// store's directory: section gives it otherwise); FastDirectory puts
	// the store's back. Two verbs rather than "slow-directory 0s": a zero
	// would read as a directory that answers at once, not as the store's.
	SlowDirectory Kind = "slow-directory"
	FastDirectory Kind = "fast-directory"
	// FlushRequests drops every request waiting for a worker thread, each
	// answered with an error, as smpolicysrv -flushrequests does.
	FlushRequests Kind = "flushrequests"
)

// MaxStall caps a stall: a stall is for watching a timeout happen, and
// far longer durations overflow the Unix-nanosecond deadline smps keeps
// it in. A lab file asking for more fails when it is read, with its line.
const MaxStall = 24 * time.Hour

// MaxDirectoryLatency caps slow-directory: a lookup slower than this is
// no directory a lab would wait on, and the worker thread waits it out.
const MaxDirectoryLatency = time.Minute

// The handshake error codes reject-handshakes may answer with: the
// vendor's, from tli's "No client hello" to "Bad encryption".
const (
	MinRejectCode = tli.CodeNoClientHello
	MaxRejectCode = tli.CodeBadEncryption
)

// DefaultRejectCode is what reject-handshakes answers when no code is
// given: a shared secret the server no longer accepts is the handshake
// failure met most in the field (after a re-registration elsewhere).
const DefaultRejectCode = tli.CodeSecretIncorrect

// Action is what a fault does: a verb and its argument.
type Action struct {
	Kind  Kind
	Queue bool          // stop-accepting: connects wait in the backlog instead of being refused
	For   time.Duration // stall: how long replies are held
	Code  int           // reject-handshakes: the error code; 0 is DefaultRejectCode
	// Latency is slow-directory's latency per directory lookup.
	Latency time.Duration
}

// verb is one action's grammar, for both spellings.
type verb struct {
	kind Kind
	// usage is how a lab file writes it, in the list of actions an error gives.
	usage string
	// param names the argument in the control API's query; "" for none.
	param string
	// byServer: smps carries it out, through its control API.
	byServer bool
}

var verbs = []verb{
	{Kill, "kill", "", false},
	{Restart, "restart", "", false},
	{StopAccepting, "stop-accepting [refuse|queue]", "mode", true},
	{Reset, "reset", "", true},
	{Stall, "stall DURATION", "for", true},
	{RejectHandshakes, "reject-handshakes [CODE]", "code", true},
	{Resume, "resume", "", true},
	{SlowDirectory, "slow-directory DURATION", "latency", true},
	{FastDirectory, "fast-directory", "", true},
	{FlushRequests, "flushrequests", "", true},
}

func lookup(k Kind) (verb, bool) {
	i := slices.IndexFunc(verbs, func(v verb) bool { return v.kind == k })
	if i < 0 {
		return verb{}, false
	}
	return verbs[i], true
}

// ByServer tells whether smps carries the action out (through its
// control API); the lab kills and restarts servers itself.
func (k Kind) ByServer() bool {
	v, ok := lookup(k)
	return ok && v.byServer
}

// labActions and serverActions are the lists errors give: every action
// with its argument, and the verbs smps takes.
var labActions, serverActions = func() (string, string) {
	var lab, server []string
	for _, v := range verbs {
		lab = append(lab, v.usage)
		if v.byServer {
			server = append(server, string(v.kind))
		}
	}
	return orList(lab), orList(server)
}()

// Usage lists the actions as a lab file writes them, for errors: "kill,
// restart, stop-accepting [refuse|queue], ...".
func Usage() string { return labActions }

// orList is "a, b or c".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// Parse reads an action as a lab file writes it: "kill", "stall 10s",
// "stop-accepting queue", "reject-handshakes 3153" and the like.
func Parse(s string) (Action, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return Action{}, fmt.Errorf("no action: want %s", labActions)
	}
	v, ok := lookup(Kind(f[0]))
	if !ok {
		return Action{}, fmt.Errorf("unknown action %q: want %s", f[0], labActions)
	}
	args, arg := f[1:], ""
	if len(args) > 0 {
		arg = args[0]
	}
	a, err := v.parse(arg, len(args) > 0, textSpelling)
	if err != nil {
		return Action{}, err
	}
	takes := 0 // arguments the verb takes
	if v.param != "" {
		takes = 1
	}
	if len(args) > takes {
		return Action{}, fmt.Errorf("%s: unexpected %q", v.kind, strings.Join(args[takes:], " "))
	}
	return a, nil
}

// spelling is which of the two ways an action was written: errors quote
// its argument as it was.
type spelling int

const (
	textSpelling  spelling = iota // a lab file: stall 10s
	querySpelling                 // the control API: /faults/stall?for=10s
)

// parse reads the argument, given or not (has), and checks it against the
// limits. It is the one parser of both spellings: they differ only in
// how the verb and its argument are found.
func (v verb) parse(arg string, has bool, sp spelling) (Action, error) {
	a := Action{Kind: v.kind}
	bad := func(problem string) error {
		if sp == querySpelling {
			return fmt.Errorf("%s %s %q: %s", v.kind, v.param, arg, problem)
		}
		return fmt.Errorf("%s %q: %s", v.kind, arg, problem)
	}
	switch v.kind {
	case StopAccepting:
		switch {
		case !has || arg == "refuse":
		case arg == "queue":
			a.Queue = true
		default:
			return Action{}, bad("want refuse (connects refused, the default) or queue (connects wait in the backlog)")
		}
	case Stall:
		d, err := v.duration(arg, has, sp, "10s", stallProblem, bad)
		if err != nil {
			return Action{}, err
		}
		a.For = d
	case SlowDirectory:
		d, err := v.duration(arg, has, sp, "800ms", latencyProblem, bad)
		if err != nil {
			return Action{}, err
		}
		a.Latency = d
	case RejectHandshakes:
		if has {
			n, err := strconv.Atoi(arg)
			if err != nil {
				n = 0 // not a number: the same answer as for a code out of range
			}
			if p := codeProblem(n); p != "" {
				return Action{}, bad(p)
			}
			a.Code = n
		}
	}
	return a, nil
}

// duration reads the duration argument a verb needs (example shows one),
// checked by problem; bad words an error about the argument as written.
func (v verb) duration(arg string, has bool, sp spelling, example string, problem func(time.Duration) string, bad func(string) error) (time.Duration, error) {
	if !has {
		if sp == querySpelling {
			return 0, fmt.Errorf("%s needs %s=DURATION, such as %s=%s", v.kind, v.param, v.param, example)
		}
		return 0, fmt.Errorf("%s needs a duration, such as %s %s", v.kind, v.kind, example)
	}
	d, err := time.ParseDuration(arg)
	if err != nil {
		d = 0 // not a duration: the same answer as for 0s
	}
	if p := problem(d); p != "" {
		return 0, bad(p)
	}
	return d, nil
}

// stallProblem, latencyProblem and codeProblem are the limits, for the
// parsers and Validate alike; "" when within them.
func stallProblem(d time.Duration) string {
	return durationProblem(d, MaxStall, "want a positive duration such as 10s")
}

func latencyProblem(d time.Duration) string {
	return durationProblem(d, MaxDirectoryLatency, "want a positive duration such as 800ms (fast-directory puts the store's latency back)")
}

// durationProblem is a duration's limits: positive (else want), at most max.
func durationProblem(d, max time.Duration, want string) string {
	switch {
	case d <= 0:
		return want
	case d > max:
		return "at most " + max.String()
	}
	return ""
}

func codeProblem(code int) string {
	if code < MinRejectCode || code > MaxRejectCode {
		return fmt.Sprintf("want one of the vendor's handshake error codes %d to %d", MinRejectCode, MaxRejectCode)
	}
	return ""
}

// Validate checks an action made in Go, not parsed, against the limits
// the parsers apply.
func (a Action) Validate() error {
	if _, ok := lookup(a.Kind); !ok {
		return fmt.Errorf("unknown action %q: want %s", a.Kind, labActions)
	}
	switch a.Kind {
	case Stall:
		if p := stallProblem(a.For); p != "" {
			return fmt.Errorf("%s %s: %s", a.Kind, a.For, p)
		}
	case SlowDirectory:
		if p := latencyProblem(a.Latency); p != "" {
			return fmt.Errorf("%s %s: %s", a.Kind, a.Latency, p)
		}
	case RejectHandshakes:
		if p := codeProblem(a.Code); a.Code != 0 && p != "" {
			return fmt.Errorf("%s %d: %s", a.Kind, a.Code, p)
		}
	}
	return nil
}

// CheckServer is Validate for an action smps is to carry out: kill and
// restart are no command of its.
func (a Action) CheckServer() error {
	if !a.Kind.ByServer() {
		return errUnknownServerFault(string(a.Kind))
	}
	return a.Validate()
}

func errUnknownServerFault(name string) error {
	return fmt.Errorf("unknown fault %q: want %s", name, serverActions)
}

// RejectCode is the code reject-handshakes answers with: Code, or
// DefaultRejectCode when none was given.
func (a Action) RejectCode() int {
	if a.Code == 0 {
		return DefaultRejectCode
	}
	return a.Code
}

// arg is the action's argument, written the same in both spellings; ""
// for none (stop-accepting refuse, reject-handshakes with smps's default).
func (a Action) arg() string {
	switch a.Kind {
	case StopAccepting:
		if a.Queue {
			return "queue"
		}
	case Stall:
		return a.For.String()
	case SlowDirectory:
		return a.Latency.String()
	case RejectHandshakes:
		if a.Code != 0 {
			return strconv.Itoa(a.Code)
		}
	}
	return ""
}

// String is the action as a lab file writes it; Parse reads it back.
func (a Action) String() string {
	if arg := a.arg(); arg != "" {
		return string(a.Kind) + " " + arg
	}
	return string(a.Kind)
}
