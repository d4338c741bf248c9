package conf

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// fields reads typed values from a File and keeps the first problem by
// line, so that the user is sent to the earliest bad line and a missing key
// (line 0) is reported only when every line present is fine.
type fields struct {
	f    *File
	errs []*Error
}

func (r *fields) fail(line int, format string, a ...any) {
	r.errs = append(r.errs, r.f.Errorf(line, format, a...))
}

func (r *fields) err() error {
	if len(r.errs) == 0 {
		return nil
	}
	e := slices.MinFunc(r.errs, func(a, b *Error) int {
		if (a.Line == 0) != (b.Line == 0) {
			return cmp.Compare(b.Line, a.Line) // line 0 sorts last
		}
		return cmp.Compare(a.Line, b.Line)
	})
	return e
}

// str reads a string; a required key must be present and not blank. why
// explains a missing required key to the user.
func (r *fields) str(key string, dst *string, line *int, required bool, why string) {
	v, n, ok := r.f.Get(key)
	switch {
	case !ok && required:
		r.fail(0, "no %s=\"...\" line: %s", key, why)
	case !ok:
	case required && strings.TrimSpace(v) == "":
		r.fail(n, "%s is empty: %s", key, why)
	case strings.TrimSpace(v) == "":
		// An optional key left empty means its default, as if absent
		// (cryptoprovider= is ETPKI): writing the file afresh then reads
		// the same.
		*line = n
	default:
		*dst, *line = v, n
	}
}

func (r *fields) yesNo(key string, dst *bool, line *int) {
	v, n, ok := r.f.Get(key)
	if !ok {
		return
	}
	switch t := strings.TrimSpace(v); {
	case strings.EqualFold(t, "YES"):
		*dst, *line = true, n
	case strings.EqualFold(t, "NO"):
		*dst, *line = false, n
	default:
		r.fail(n, "%s must be YES or NO, got %q", key, v)
	}
}

// maxSeconds keeps a Seconds value far from overflowing time.Duration.
const maxSeconds = math.MaxInt32

func (r *fields) seconds(key string, dst *Seconds, line *int) {
	v, n, ok := r.f.Get(key)
	if !ok {
		return
	}
	s, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || s < 1 || s > maxSeconds {
		r.fail(n, "%s must be a whole number of seconds from 1 to %d, got %q", key, maxSeconds, v)
		return
	}
	*dst, *line = Seconds(time.Duration(s)*time.Second), n
}

func (r *fields) count(key string, dst *int, line *int) {
	v, n, ok := r.f.Get(key)
	if !ok {
		return
	}
	c, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || c < 0 || c > math.MaxInt32 {
		r.fail(n, "%s must be a whole number from 0 to %d, got %q", key, math.MaxInt32, v)
		return
	}
	*dst, *line = c, n
}

// builder writes a fresh file the way the vendor's tools do: CRLF endings,
// every value quoted, a closing "# <EOF>".
type builder struct {
	b   strings.Builder
	err string
}

func (w *builder) comment(text string) {
	w.b.WriteString(text + "\r\n")
}

func (w *builder) entry(key, value string) {
	// A value with a quote or a line break would change the file's
	// structure (a newline could smuggle in another key), so it is refused.
	if msg := checkEntry(key, value); msg != "" && w.err == "" {
		w.err = msg
	}
	w.b.WriteString(key + `="` + value + `"` + "\r\n")
}

func (w *builder) bytes(path string) ([]byte, error) {
	if w.err != "" {
		return nil, &Error{File: path, Msg: w.err}
	}
	return []byte(w.b.String()), nil
}

func yesNo(b bool) string {
	if b {
		return "YES"
	}
	return "NO"
}

func secondsString(s Seconds) string {
	return strconv.FormatInt(int64(time.Duration(s)/time.Second), 10)
}
