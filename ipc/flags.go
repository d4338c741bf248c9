package ipc

import (
	"reflect"
	"strconv"
	"strings"
	"time"
)

// LLAWPFlags are the llawp binary's command line, defined once for both
// sides: the owner builds them and passes Args to Launch; cmd/llawp parses
// them (kong reads the tags, in cmdline's style). A field added here is
// passed and parsed with no second list to keep in step.
//
// Zero values are left off the command line, and each means the LLAWP's
// default: llawp.Config says what they are.
type LLAWPFlags struct {
	WebAgent     string        `name:"webagent" required:"" placeholder:"FILE" help:"WebAgent.conf of this web server instance."`
	Out          string        `default:"." placeholder:"DIR" help:"Folder for the agent log and trace log (WA.log, WATrace.log)."`
	Trace        string        `placeholder:"DIR" help:"Folder for this process's socket trace."`
	TracePayload bool          `help:"Keep the bytes of each send and receive in the socket trace."`
	Hosts        string        `placeholder:"FILE" help:"The lab's hosts file: resolves and names the lab's hosts."`
	Source       string        `placeholder:"IP" help:"Local IP address to connect from (the web server host's lab address)."`
	Poll         time.Duration `help:"DoManagement poll period; 0 takes the ACO's PSPollInterval."`
	HealthPoll   time.Duration `help:"How often to retry Policy Servers that are down (0: 30s; negative: never)."`
	Linger       time.Duration `help:"How long to stay up with no worker registered (0: ${default_linger}; negative: forever)."`
	ProcName     string        `placeholder:"NAME" help:"Process name in logs, traces and the system's process list (default: ${default_proc_name})."`
	AgentName    string        `placeholder:"NAME" help:"Agent name for DoManagement; empty takes the ACO's DefaultAgentName."`
	AgentTrace   bool          `help:"Write the trace log (WATrace.log) even if the ACO's TraceFile is off."`
	Debug        bool          `help:"Log at debug level."`
	Metrics      string        `placeholder:"ADDR" help:"Serve the LLAWP's pool's Prometheus /metrics on this loopback host:port (port 0: any); Status gives the address."`
}

// Args is f as the llawp binary's arguments, for every field that is not
// zero, in the struct's order: "--flag value", as a person types it and as
// tools that look for an address or a folder among a process's arguments
// see it, or --flag=value when the value starts with a hyphen (a negative
// duration, --linger=-1ns), which would otherwise read as a flag.
func (f LLAWPFlags) Args() []string {
	var args []string
	v, t := reflect.ValueOf(f), reflect.TypeOf(f)
	for i := range t.NumField() {
		field, value := t.Field(i), v.Field(i)
		if value.IsZero() {
			continue
		}
		name := "--" + flagName(field)
		with := func(v string) {
			if strings.HasPrefix(v, "-") {
				args = append(args, name+"="+v)
			} else {
				args = append(args, name, v)
			}
		}
		switch x := value.Interface().(type) {
		case bool:
			args = append(args, name)
		case string:
			with(x)
		case time.Duration:
			with(x.String())
		case int:
			with(strconv.Itoa(x))
		default:
			// A field of a type Args cannot write would be silently
			// dropped: fail where the type is added, in the tests.
			panic("ipc: LLAWPFlags." + field.Name + ": no command-line form for " + field.Type.String())
		}
	}
	return args
}

// flagName is the long flag kong derives for a field: its name tag, else
// the field name in kebab case (TracePayload: trace-payload).
func flagName(f reflect.StructField) string {
	if n := f.Tag.Get("name"); n != "" {
		return n
	}
	var b strings.Builder
	for i, r := range f.Name {
		if 'A' <= r && r <= 'Z' {
			if i > 0 {
				b.WriteByte('-')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
