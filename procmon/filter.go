package procmon

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/agentlab/agentlab/trace"
)

// Relations of Process Monitor's Filter dialog that compare text. Like
// Process Monitor, they ignore case.
const (
	RelIs         = "is"
	RelIsNot      = "is not"
	RelBeginsWith = "begins with"
	RelEndsWith   = "ends with"
	RelContains   = "contains"
	RelExcludes   = "excludes"
)

// relations in the order the parser tries them: "is not" before "is".
var relations = []string{RelIsNot, RelIs, RelBeginsWith, RelEndsWith, RelContains, RelExcludes}

// ProcmonCondition is one line of Process Monitor's Filter dialog without
// its action: a column, a relation and a value, as in "Process Name is
// w3wp.exe". It reads itself from that text (ParseProcmonCondition).
type Condition struct {
	Column   string // one of the view's columns, spelled as the header spells it
	Relation string // one of the Rel constants
	Value    string
}

// ParseProcmonCondition reads "COLUMN RELATION VALUE": a column of the
// view (Time of Day, Process Name, PID, Operation, Path, Result, Detail),
// a relation (is, is not, begins with, ends with, contains, excludes),
// then the value, the rest of the text. Column and relation ignore case,
// as the value does when it is compared.
func ParseCondition(s string) (Condition, error) {
	text := strings.TrimSpace(s)
	if text == "" {
		return Condition{}, fmt.Errorf(`empty filter: want "COLUMN RELATION VALUE", e.g. "Process Name is w3wp.exe"`)
	}
	var c Condition
	rest, ok := "", false
	for _, col := range Header {
		if rest, ok = cutWord(text, col); ok {
			c.Column = col
			break
		}
	}
	if !ok {
		return c, fmt.Errorf("%q: want a column first, one of %s", text, strings.Join(Header, ", "))
	}
	for _, rel := range relations {
		if rest, ok = cutWord(rest, rel); ok {
			c.Relation = rel
			break
		}
	}
	if !ok {
		return c, fmt.Errorf("%q: want a relation after %q, one of %s", text, c.Column, strings.Join(relations, ", "))
	}
	c.Value = rest
	if c.Value == "" {
		return c, fmt.Errorf("%q: no value after %q", text, c.Column+" "+c.Relation)
	}
	if c.Relation == RelIs || c.Relation == RelIsNot {
		switch c.Column {
		case ColOperation:
			i := slices.IndexFunc(Operations, func(op string) bool { return strings.EqualFold(op, c.Value) })
			if i < 0 {
				hint := ""
				if strings.EqualFold(c.Value, trace.OpReset) {
					hint = ` (a connection closed by a reset is a TCP Disconnect whose Detail says "reset": try "Detail contains reset")`
				}
				return c, fmt.Errorf("%q: Process Monitor has no operation %q%s; its network and process operations are %s",
					text, c.Value, hint, strings.Join(Operations, ", "))
			}
			c.Value = Operations[i]
		case ColPID:
			if _, err := strconv.ParseUint(c.Value, 10, 31); err != nil {
				return c, fmt.Errorf("%q: a PID is a number, not %q", text, c.Value)
			}
		}
	}
	return c, nil
}

// cutWord cuts word from the start of s, ignoring case, when a space or
// the end follows it, and returns the rest without its leading spaces.
func cutWord(s, word string) (string, bool) {
	if len(s) < len(word) || !strings.EqualFold(s[:len(word)], word) {
		return s, false
	}
	rest := s[len(word):]
	if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
		return s, false
	}
	return strings.TrimLeft(rest, " \t"), true
}

// UnmarshalText reads a condition from a flag (kong) or a file.
func (c *Condition) UnmarshalText(b []byte) error {
	v, err := ParseCondition(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// String is the condition as ParseProcmonCondition reads it.
func (c Condition) String() string { return c.Column + " " + c.Relation + " " + c.Value }

// Match tells whether a row of the view (cells in the header's order)
// meets the condition.
func (c Condition) Match(cells []string) bool {
	i := slices.Index(Header, c.Column)
	if i < 0 || i >= len(cells) {
		return false
	}
	v, want := strings.ToLower(cells[i]), strings.ToLower(c.Value)
	switch c.Relation {
	case RelIs:
		return v == want
	case RelIsNot:
		return v != want
	case RelBeginsWith:
		return strings.HasPrefix(v, want)
	case RelEndsWith:
		return strings.HasSuffix(v, want)
	case RelContains:
		return strings.Contains(v, want)
	case RelExcludes:
		return !strings.Contains(v, want)
	}
	return false
}

// ProcmonFilter is the Filter dialog's list: conditions that include the
// rows they match, and conditions that exclude them. Process Monitor
// combines them so: a row an Exclude condition matches is dropped; of the
// Include conditions, those on one column are OR-ed and those on different
// columns AND-ed (Process Name is w3wp.exe, Process Name is LLAWP.exe,
// Operation is TCP Connect: the connects of either process). With no
// Include condition every row not excluded is shown.
type Filter struct {
	Include []Condition
	Exclude []Condition
}

// Keep tells whether the view shows a row (cells in the header's order).
func (f Filter) Keep(cells []string) bool {
	for _, c := range f.Exclude {
		if c.Match(cells) {
			return false
		}
	}
	var need, met []string // columns with an Include condition, and those met
	for _, c := range f.Include {
		if !slices.Contains(need, c.Column) {
			need = append(need, c.Column)
		}
		if c.Match(cells) && !slices.Contains(met, c.Column) {
			met = append(met, c.Column)
		}
	}
	return len(met) == len(need)
}

// IsZero tells a filter that keeps every row.
func (f Filter) IsZero() bool { return len(f.Include) == 0 && len(f.Exclude) == 0 }

// String lists the conditions with their actions, as a title says them:
// "include Process Name is w3wp.exe; exclude Operation is TCP Send".
func (f Filter) String() string {
	var parts []string
	for _, c := range f.Include {
		parts = append(parts, "include "+c.String())
	}
	for _, c := range f.Exclude {
		parts = append(parts, "exclude "+c.String())
	}
	return strings.Join(parts, "; ")
}
