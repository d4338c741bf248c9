package cmdline

import (
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/alecthomas/kong"
)

// Vendor is a program that keeps the vendor's spellings of its flags:
// single-dash names of one or more letters (smreghost -i -u -p -hn -hc -f
// -o -cf), which kong does not have. This is the one place they are
// translated:
//
//   - in the grammar, each is a long flag of the same name without its
//     dash (`name:"hn"`);
//   - before kong parses, `-hn VALUE` becomes `--hn=VALUE` (the value is
//     the next argument, whatever it starts with: a password may begin
//     with a hyphen) and `-o` becomes `--o`; any other single-dash word
//     (-hq, -source) is a usage error that suggests the closest flags in
//     their spelling (-hn, --source);
//   - the help lists them as the vendor writes them, and usage errors
//     name them so (-hn, not --hn).
//
// Arguments after "--" are left alone. A negative number is a value.
type Vendor struct {
	// Flags are the grammar's flag names that the vendor spells with one
	// dash: "i", "hn", "cf".
	Flags []string
	// Usage is the usage line the help shows, in the vendor's spelling.
	Usage string
}

func (v *Vendor) isVendor(name string) bool { return v != nil && slices.Contains(v.Flags, name) }

// singleDash rewrites args for kong. flags are the grammar's long flags,
// each with whether it takes a value, and shorts its one-letter flags (-h,
// -o); v may be nil (no vendor spellings). A single-dash word that is
// neither a vendor flag nor a short flag kong knows (-listen, the Go flag
// package's spelling, or -hq) is a usage error that suggests the closest
// flags in their spelling, rather than kong's reading of it as -l -i -s...
// (or -h: the help).
func (v *Vendor) singleDash(args []string, flags map[string]bool, shorts string) ([]string, error) {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...), nil
		}
		if !strings.HasPrefix(a, "-") || strings.HasPrefix(a, "--") || len(a) < 2 || negativeNumber.MatchString(a) {
			out = append(out, a)
			continue
		}
		name, value, hasValue := strings.Cut(a[1:], "=")
		switch {
		case v.isVendor(name) && hasValue:
			out = append(out, "--"+name+"="+value)
		case v.isVendor(name) && flags[name] && i+1 < len(args):
			out = append(out, "--"+name+"="+args[i+1])
			i++
		case v.isVendor(name):
			out = append(out, "--"+name)
		case len(name) > 1 && (!strings.ContainsRune(shorts, rune(name[0])) || len(v.near(name, flags)) > 0):
			return nil, v.unknown("-"+name, flags)
		default:
			out = append(out, a) // kong's own short flags: -h, -o FILE
		}
	}
	return out, nil
}

// unknown is the error for a single-dash word that is no flag, with the
// flags it is closest to in their spelling.
func (v *Vendor) unknown(word string, flags map[string]bool) error {
	near := v.near(strings.TrimLeft(word, "-"), flags)
	switch len(near) {
	case 0:
		return fmt.Errorf("unknown flag %s", word)
	case 1:
		return fmt.Errorf("unknown flag %s, did you mean %s?", word, near[0])
	default:
		return fmt.Errorf("unknown flag %s, did you mean %s or %s?", word, strings.Join(near[:len(near)-1], ", "), near[len(near)-1])
	}
}

// near are the flags w might have meant, in their spelling.
func (v *Vendor) near(w string, flags map[string]bool) []string {
	var near []string
	for _, name := range slices.Sorted(maps.Keys(flags)) {
		d := distance(w, name)
		if d == 0 || d == 1 && len(w) > 1 || d == 2 && len(w) > 4 {
			near = append(near, v.spelling(name))
		}
	}
	return near
}

// spelling is how the user writes the flag name.
func (v *Vendor) spelling(name string) string {
	if v.isVendor(name) {
		return "-" + name
	}
	return "--" + name
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// respell writes the vendor's flags with one dash in a kong error
// ("--hn: expected string value" is about -hn).
func (v *Vendor) respell(err error) error {
	quoted := make([]string, len(v.Flags))
	for i, n := range v.Flags {
		quoted[i] = regexp.QuoteMeta(n)
	}
	re := regexp.MustCompile(`(^|[^-\w])--(` + strings.Join(quoted, "|") + `)\b`)
	msg := re.ReplaceAllString(err.Error(), "$1-$2")
	if msg == err.Error() {
		return err
	}
	return respelled{msg: msg, err: err}
}

type respelled struct {
	msg string
	err error
}

func (r respelled) Error() string { return r.msg }
func (r respelled) Unwrap() error { return r.err }

// help lists the flags in the vendor's spelling for vendor flags and
// --flag for the others.
func (v *Vendor) help(w io.Writer, kctx *kong.Context) error {
	fmt.Fprintf(w, "Usage: %s\n\nFlags:\n", v.Usage)
	tw := tabwriter.NewWriter(w, 0, 4, 4, ' ', 0)
	for _, group := range kctx.Model.AllFlags(true) {
		for _, f := range group {
			spelling := "--" + f.Name
			if f.Short != 0 {
				spelling = fmt.Sprintf("-%c, --%s", f.Short, f.Name)
			}
			if v.isVendor(f.Name) {
				spelling = "-" + f.Name
			}
			if !f.IsBool() {
				spelling += " " + f.FormatPlaceHolder()
			}
			help := withDefault(f.Value)
			fmt.Fprintf(tw, "  %s\t%s\n", spelling, help)
		}
	}
	return tw.Flush()
}
