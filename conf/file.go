package conf

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/agentlab/agentlab/atomicfile"
)

// Error is a problem with a configuration file, placed at its line so that
// the user can open the file there. Line is 1-based; 0 means the problem is
// with the file as a whole (a missing key, an unreadable file).
type Error struct {
	File string
	Line int
	Msg  string
	Err  error // the cause, if any, for errors.Is and errors.As
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Entry is one key="value" line.
type Entry struct {
	Key   string // as spelled in the file
	Value string // without the quotes
	Line  int    // 1-based
}

// File is a vendor configuration file kept line by line, so that a tool can
// change one value and write the file back without disturbing the comments,
// the layout, the line endings or the keys it does not know: the vendor's
// files are edited by hand and by the vendor's tools, and both must keep
// working on what agentlab writes.
type File struct {
	path  string
	bom   bool   // Notepad adds one; it is kept so a rewrite changes nothing else
	nl    string // the ending given to new lines: the file's own
	lines []line
}

type line struct {
	text  string // without its ending; verbatim unless the value was changed
	eol   string // "\r\n", "\n", or "" on a last line that has none
	key   string // "" on blank and comment lines
	value string
	// vs:ve is the value in text, quotes included, so that Set rewrites
	// only the value and keeps the key's spelling and a trailing comment.
	vs, ve int
}

const (
	bom       = "\xef\xbb\xbf"
	eofMarker = "# <EOF>"
)

// Parse reads a file's contents; path is used only in errors. It accepts
// CRLF and LF endings and quoted or unquoted values. In an unquoted value a
// '#' after a space or tab starts a comment; in a quoted value it does not.
func Parse(path string, data []byte) (*File, error) {
	f := &File{path: path}
	if bytes.HasPrefix(data, []byte(bom)) {
		f.bom = true
		data = data[len(bom):]
	}
	for n := 1; len(data) > 0; n++ {
		var text, eol string
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			text, eol, data = string(data[:i]), "\n", data[i+1:]
			if strings.HasSuffix(text, "\r") {
				text, eol = text[:len(text)-1], "\r\n"
			}
		} else {
			text, data = string(data), nil
		}
		l, msg := parseLine(text)
		if msg != "" {
			return nil, &Error{File: path, Line: n, Msg: msg}
		}
		l.eol = eol
		if f.nl == "" {
			f.nl = eol
		}
		f.lines = append(f.lines, l)
	}
	if f.nl == "" {
		f.nl = "\r\n" // the vendor's tools write CRLF, even on Unix
	}
	return f, nil
}

// ReadFile reads and parses the file at path.
func ReadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, readError(path, err)
	}
	return Parse(path, data)
}

func readError(path string, err error) error {
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		msg = pe.Err.Error() // the path is already in front
	}
	return &Error{File: path, Msg: "cannot read the file: " + msg, Err: err}
}

// parseLine returns the problem with the line as a message, or "".
func parseLine(text string) (line, string) {
	l := line{text: text}
	if msg := checkText(text); msg != "" {
		return l, "the line has " + msg
	}
	trimmed := strings.TrimLeft(text, " \t")
	if trimmed == "" || trimmed[0] == '#' {
		return l, ""
	}
	eq := strings.IndexByte(text, '=')
	if eq < 0 {
		return l, fmt.Sprintf(`no "=" in %q: want key="value", a # comment or a blank line`, text)
	}
	key := strings.Trim(text[:eq], " \t")
	if msg := checkKey(key); msg != "" {
		return l, msg
	}
	rest := text[eq+1:]
	body := strings.TrimLeft(rest, " \t")
	start := eq + 1 + len(rest) - len(body)
	if strings.HasPrefix(body, `"`) {
		end := strings.IndexByte(body[1:], '"')
		if end < 0 {
			return l, fmt.Sprintf("unterminated quote in the value of %s", key)
		}
		after := strings.TrimLeft(body[end+2:], " \t")
		if after != "" && after[0] != '#' {
			return l, fmt.Sprintf("unexpected %q after the closing quote of %s: a comment must start with #", after, key)
		}
		l.key, l.value, l.vs, l.ve = key, body[1:end+1], start, start+end+2
		return l, ""
	}
	// Unquoted: the value ends where a comment starts, at a '#' that
	// follows a space or tab, so "a#b" stays one value.
	end := len(rest)
	for i := 1; i < len(rest); i++ {
		if rest[i] == '#' && (rest[i-1] == ' ' || rest[i-1] == '\t') {
			end = i
			break
		}
	}
	value := strings.Trim(rest[:end], " \t")
	if strings.Contains(value, `"`) {
		return l, fmt.Sprintf("the value of %s has a quote but does not start with one", key)
	}
	start = eq + 1 + len(rest[:end]) - len(strings.TrimLeft(rest[:end], " \t"))
	l.key, l.value, l.vs, l.ve = key, value, start, start+len(value)
	return l, ""
}

// checkText rejects what no editor would have put in a text file on purpose,
// so that a binary or truncated file is reported rather than half-read. It
// names what it found, for "the line has ..." or "the value of k has ...".
func checkText(s string) string {
	if !utf8.ValidString(s) {
		return "invalid UTF-8"
	}
	for _, r := range s {
		switch {
		case r == 0:
			return "a NUL byte"
		case r == '\r':
			return "a stray carriage return"
		case r < 0x20 && r != '\t':
			return fmt.Sprintf("control character %U", r)
		}
	}
	return ""
}

func checkKey(key string) string {
	switch {
	case key == "":
		return `empty key before "="`
	case strings.IndexFunc(key, unicode.IsSpace) >= 0:
		return fmt.Sprintf("key %q has spaces", key)
	case strings.Contains(key, `"`):
		return fmt.Sprintf("key %q has a quote", key)
	}
	// An invisible character (a stray byte order mark, a zero-width space
	// pasted from a web page) would make a key that looks right never match.
	if i := strings.IndexFunc(key, func(r rune) bool { return !unicode.IsGraphic(r) }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(key[i:])
		return fmt.Sprintf("key %q has the invisible character %U", key, r)
	}
	return ""
}

// Path is the path the file was read from or will be reported as.
func (f *File) Path() string {
	if f == nil {
		return "" // an SmHost or WebAgent built by hand has no File
	}
	return f.path
}

// Errorf makes an *Error at a line of this file, for callers that find a
// problem with a value after parsing (an unreachable policy server, say).
func (f *File) Errorf(line int, format string, a ...any) *Error {
	return &Error{File: f.path, Line: line, Msg: fmt.Sprintf(format, a...)}
}

// Get returns the value of key, matched case-insensitively because the
// vendor's own files spell the same keys differently. When the key is
// repeated the last one wins, so a line appended by hand takes effect.
func (f *File) Get(key string) (value string, line int, ok bool) {
	for i := len(f.lines) - 1; i >= 0; i-- {
		if l := f.lines[i]; l.key != "" && strings.EqualFold(l.key, key) {
			return l.value, i + 1, true
		}
	}
	return "", 0, false
}

// All returns every entry with key, in file order: policyserver and
// LoadPlugin are meant to be repeated.
func (f *File) All(key string) []Entry {
	var es []Entry
	for i, l := range f.lines {
		if l.key != "" && strings.EqualFold(l.key, key) {
			es = append(es, Entry{Key: l.key, Value: l.value, Line: i + 1})
		}
	}
	return es
}

// Entries returns every key="value" line in file order.
func (f *File) Entries() []Entry {
	var es []Entry
	for i, l := range f.lines {
		if l.key != "" {
			es = append(es, Entry{Key: l.key, Value: l.value, Line: i + 1})
		}
	}
	return es
}

// Set gives key the single value value. The first line with the key is
// rewritten in place, keeping its spelling and trailing comment, and later
// lines with the key are removed so that Get and All agree with Set. A new
// key goes before the closing "# <EOF>" line, or at the end.
func (f *File) Set(key, value string) error {
	if err := f.checkEntry(key, value); err != nil {
		return err
	}
	first := -1
	for i := 0; i < len(f.lines); i++ {
		l := &f.lines[i]
		if l.key == "" || !strings.EqualFold(l.key, key) {
			continue
		}
		if first >= 0 {
			f.lines = slices.Delete(f.lines, i, i+1)
			i--
			continue
		}
		first = i
		l.text = l.text[:l.vs] + `"` + value + `"` + l.text[l.ve:]
		l.value, l.ve = value, l.vs+len(value)+2
	}
	if first < 0 {
		f.insert(f.eofIndex(), newLine(key, value))
	}
	return nil
}

// Add appends a key="value" line after the last line with the same key, so
// that repeated keys stay together, or before "# <EOF>" when there is none.
func (f *File) Add(key, value string) error {
	if err := f.checkEntry(key, value); err != nil {
		return err
	}
	at := f.eofIndex()
	for i := len(f.lines) - 1; i >= 0; i-- {
		if l := f.lines[i]; l.key != "" && strings.EqualFold(l.key, key) {
			at = i + 1
			break
		}
	}
	f.insert(at, newLine(key, value))
	return nil
}

// Del removes every line with key and returns how many it removed.
func (f *File) Del(key string) int {
	n := len(f.lines)
	f.lines = slices.DeleteFunc(f.lines, func(l line) bool {
		return l.key != "" && strings.EqualFold(l.key, key)
	})
	return n - len(f.lines)
}

// checkEntry refuses what Parse would refuse, so that whatever is written
// can be read back.
func (f *File) checkEntry(key, value string) error {
	if msg := checkEntry(key, value); msg != "" {
		return f.Errorf(0, "%s", msg)
	}
	return nil
}

func checkEntry(key, value string) string {
	if msg := checkKey(key); msg != "" {
		return msg
	}
	// A key with "=" would split, and one starting with "#" would read back
	// as a comment; a "#" further on is kept by Parse, so it is allowed.
	if strings.Contains(key, "=") || strings.HasPrefix(key, "#") {
		return fmt.Sprintf("key %q has \"=\" or starts with \"#\"", key)
	}
	if msg := checkText(value); msg != "" {
		return fmt.Sprintf("the value of %s has %s", key, msg)
	}
	if strings.Contains(value, `"`) {
		return fmt.Sprintf("the value of %s has a quote, which the file format cannot hold", key)
	}
	return ""
}

func newLine(key, value string) line {
	text := key + `="` + value + `"`
	return line{text: text, key: key, value: value, vs: len(key) + 1, ve: len(text)}
}

// eofIndex is where new lines go: before a closing "# <EOF>", which the
// vendor's tools write last and may look for.
func (f *File) eofIndex() int {
	for i := len(f.lines) - 1; i >= 0; i-- {
		t := strings.TrimSpace(f.lines[i].text)
		if t == "" {
			continue
		}
		if isEOFMarker(t) {
			return i
		}
		break
	}
	return len(f.lines)
}

func isEOFMarker(t string) bool {
	if !strings.HasPrefix(t, "#") {
		return false
	}
	return strings.EqualFold(strings.TrimSpace(t[1:]), "<EOF>")
}

func (f *File) insert(at int, l line) {
	l.eol = f.nl
	if at == len(f.lines) && at > 0 && f.lines[at-1].eol == "" {
		f.lines[at-1].eol = f.nl
	}
	f.lines = slices.Insert(f.lines, at, l)
}

// Bytes is the file's contents: the bytes it was parsed from when nothing
// was changed.
func (f *File) Bytes() []byte {
	var b bytes.Buffer
	if f.bom {
		b.WriteString(bom)
	}
	for _, l := range f.lines {
		b.WriteString(l.text)
		b.WriteString(l.eol)
	}
	return b.Bytes()
}

// WriteFile writes the file to path through a temporary file in the same
// directory and a rename, so that an agent starting at that moment reads
// either the old file or the new one, never half of one.
func (f *File) WriteFile(path string, perm fs.FileMode) error {
	return writeAtomic(path, f.Bytes(), perm)
}

func writeAtomic(path string, data []byte, perm fs.FileMode) error {
	if err := atomicfile.WriteFile(path, data, perm); err != nil {
		// Error names the file already: keep only the cause in Msg.
		cause := err
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			cause = pe.Err
		}
		return &Error{File: path, Msg: "cannot write the file: " + cause.Error(), Err: err}
	}
	return nil
}
