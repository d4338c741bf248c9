// Package cmdline is the one command-line style of agentlab's five programs
// (smps, hla, llawp, smreghost, agentlab), all parsed with kong:
//
//   - --help prints the help on stdout, starting with a one-line
//     description of the program (or of the subcommand asked about), and
//     exits 0;
//   - a usage error (an unknown flag, a bad value, a missing argument, a
//     check of the grammar's Validate) prints one line and a hint on
//     stderr, e.g.
//     `smps: unknown flag --lisen, did you mean "--listen"? (see smps --help)`,
//     and exits 2: not the whole help, not kong's 80;
//   - any other error, once the program runs, prints `name: error` and
//     exits 1;
//   - a negative number is a value, not a flag: `--rows -1` reads as
//     `--rows=-1` (kong takes any argument that starts with a hyphen for a
//     flag).
//
// Long flags are written --flag. Single-dash multi-letter flags, which kong
// does not have, exist only as smreghost's vendor spellings: see Vendor.
package cmdline

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/alecthomas/kong"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitRuntime = 1 // the program ran and failed
	ExitUsage   = 2 // the command line was not one the program takes
)

// Program is one of the five as its command line presents it.
type Program struct {
	Name string // smps
	// Summary is the line --help starts with: what the program is.
	Summary string
	// Detail, when set, follows it in the help: paragraphs on how the
	// program is used.
	Detail string
	// Stdout and Stderr default to the process's.
	Stdout, Stderr io.Writer
	// Vendor, when set, translates the vendor's single-dash spellings
	// before kong parses, and shows them in the help.
	Vendor *Vendor
	// Options are added to the style's own.
	Options []kong.Option
}

// ErrHelp is what Parse returns once it has printed the help: the program
// exits ExitOK.
var ErrHelp = errors.New("help printed")

// UsageError is a command line the program cannot use.
type UsageError struct {
	Err error
	// Command is what the hint sends to --help: the program, or the
	// program and the subcommand the error is about (agentlab run).
	Command string
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Line is the one line a usage error prints: the program, what is wrong
// and where the help is.
func (e *UsageError) Line(program string) string {
	msg := strings.Join(strings.Fields(e.Err.Error()), " ")
	return fmt.Sprintf("%s: %s (see %s --help)", program, msg, e.Command)
}

// Usagef is a usage error found after parsing, in a program's Run: it
// exits the way a parse error does.
func Usagef(format string, a ...any) error {
	return &UsageError{Err: fmt.Errorf(format, a...)}
}

// exit carries kong's call to Exit (after --help) out of its parse.
type exit struct{ code int }

func (p Program) stdout() io.Writer {
	if p.Stdout != nil {
		return p.Stdout
	}
	return os.Stdout
}

func (p Program) stderr() io.Writer {
	if p.Stderr != nil {
		return p.Stderr
	}
	return os.Stderr
}

// New builds the kong parser of grammar in the style. A grammar kong
// refuses is a programming error: New panics.
func (p Program) New(grammar any) *kong.Kong {
	opts := []kong.Option{
		kong.Name(p.Name),
		kong.Writers(p.stdout(), p.stderr()),
		kong.Exit(func(code int) { panic(exit{code}) }),
		kong.Help(p.help),
		kong.ValueFormatter(withDefault),
		kong.TypeMapper(reflect.TypeFor[time.Duration](), negative{}),
		kong.KindMapper(reflect.Int, negative{}),
		kong.KindMapper(reflect.Int64, negative{}),
	}
	k, err := kong.New(grammar, append(opts, p.Options...)...)
	if err != nil {
		panic(fmt.Sprintf("%s: command-line grammar: %v", p.Name, err))
	}
	return k
}

// Parse parses args into grammar. It returns ErrHelp once --help has
// printed the help, a *UsageError for a command line the program cannot
// use, or the context to run.
func (p Program) Parse(grammar any, args []string) (kctx *kong.Context, err error) {
	k := p.New(grammar)
	// Every command's flags: a single-dash word is checked before kong
	// knows which command it belongs to.
	flags, shorts := map[string]bool{}, ""
	var visit func(n *kong.Node)
	visit = func(n *kong.Node) {
		for _, f := range n.Flags {
			flags[f.Name] = !f.IsBool()
			if f.Short != 0 {
				shorts += string(f.Short)
			}
		}
		for _, c := range n.Children {
			visit(c)
		}
	}
	visit(k.Model.Node)
	if k.Model.HelpFlag != nil {
		shorts += string(k.Model.HelpFlag.Short)
	}
	if args, err = p.Vendor.singleDash(args, flags, shorts); err != nil {
		return nil, &UsageError{Err: err, Command: p.Name}
	}
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(exit)
			if !ok {
				panic(r)
			}
			if e.code != 0 {
				kctx, err = nil, &UsageError{Err: fmt.Errorf("exit status %d", e.code), Command: p.Name}
				return
			}
			kctx, err = nil, ErrHelp
		}
	}()
	kctx, err = k.Parse(args)
	if err != nil {
		ue := &UsageError{Err: err, Command: p.Name}
		var pe *kong.ParseError
		if errors.As(err, &pe) {
			ue.Err = pe.Unwrap()
			if pe.Context != nil {
				if cmd := pe.Context.Selected(); cmd != nil {
					ue.Command = p.Name + " " + cmd.Path()
				}
			}
		}
		if p.Vendor != nil {
			ue.Err = p.Vendor.respell(ue.Err)
		}
		return nil, ue
	}
	return kctx, nil
}

// Main parses os.Args[1:] (args, for a test's sake) and ends the program
// as the style says after --help (exit 0) or a usage error (one line on
// stderr, exit 2); otherwise it returns the context to run.
func (p Program) Main(grammar any, args []string) *kong.Context {
	kctx, err := p.Parse(grammar, args)
	if err != nil {
		os.Exit(p.Report(err))
	}
	return kctx
}

// Report prints what err means for the user and returns the exit status:
// nothing and 0 for nil or ErrHelp, one line and 2 for a usage error, and
// `name: error` and 1 for any other.
func (p Program) Report(err error) int {
	var ue *UsageError
	switch {
	case err == nil, errors.Is(err, ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		if ue.Command == "" {
			ue.Command = p.Name
		}
		fmt.Fprintln(p.stderr(), ue.Line(p.Name))
		return ExitUsage
	default:
		fmt.Fprintf(p.stderr(), "%s: %v\n", p.Name, err)
		return ExitRuntime
	}
}

// Exit ends the program after its run with Report's status.
func (p Program) Exit(err error) {
	os.Exit(p.Report(err))
}

// help prints the one-line description first, then kong's help without
// repeating it.
func (p Program) help(opts kong.HelpOptions, kctx *kong.Context) error {
	w := kctx.Stdout
	if cmd := kctx.Selected(); cmd != nil {
		// A subcommand's help starts with what the subcommand does.
		first, rest, _ := strings.Cut(strings.TrimSpace(cmd.Help), "\n")
		fmt.Fprintf(w, "%s %s - %s\n\n", p.Name, cmd.Path(), first)
		saved := cmd.Help
		cmd.Help = strings.TrimSpace(rest)
		defer func() { cmd.Help = saved }()
	} else {
		fmt.Fprintf(w, "%s - %s\n\n", p.Name, p.Summary)
		if p.Detail != "" {
			fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(p.Detail))
		}
	}
	if p.Vendor != nil {
		return p.Vendor.help(w, kctx)
	}
	return kong.DefaultHelpPrinter(opts, kctx)
}

// withDefault adds a flag's default to its help, unless kong already shows
// it as the placeholder (--idle-timeout=10m0s).
func withDefault(v *kong.Value) string {
	help := kong.DefaultHelpValueFormatter(v)
	if !v.HasDefault || v.Default == "" || v.IsBool() || v.Tag.PlaceHolder == "" {
		return help
	}
	return strings.TrimSuffix(help, ".") + " (default: " + v.Default + ")."
}

// negative reads an argument that is a negative number ("-1", "-1ns") as
// the value of the flag before it: kong takes any argument that starts
// with a hyphen for a flag, so `--rows -1` would otherwise be refused while
// `--rows=-1` works. Anything else goes to kong's own mapper.
type negative struct{}

var negativeNumber = regexp.MustCompile(`^-[0-9.]`)

func (negative) Decode(ctx *kong.DecodeContext, target reflect.Value) error {
	if t := ctx.Scan.Peek(); t.Type == kong.UntypedToken {
		if s, ok := t.Value.(string); ok && negativeNumber.MatchString(s) {
			ctx.Scan.Pop()
			ctx.Scan.PushTyped(s, kong.FlagValueToken)
		}
	}
	return defaults.ForType(target.Type()).Decode(ctx, target)
}

// defaults are kong's own mappers, which negative hands the value to.
var defaults = kong.NewRegistry().RegisterDefaults()
