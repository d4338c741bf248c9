package yamlfile

import (
	"errors"
	"strings"
	"testing"

	"github.com/goccy/go-yaml/ast"
)

type item struct {
	Name  string   `yaml:"name"`
	Count int      `yaml:"count"`
	Tags  []string `yaml:"tags"`
}

type doc struct {
	Title string  `yaml:"title"`
	Owner *item   `yaml:"owner"`
	Items []item  `yaml:"items"`
	Rate  float64 `yaml:"rate"`
}

// TestDecode: one strict document, and every problem as file:line:col:
// message with the library's position.
func TestDecode(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // the error; "" for none
		check    func(*testing.T, doc)
	}{
		{name: "good", in: "title: t\nowner: {name: o}\nitems:\n  - name: a\n    count: 2\n    tags: [x]\nrate: 2.5\n", check: func(t *testing.T, d doc) {
			if d.Title != "t" || d.Owner == nil || d.Owner.Name != "o" || len(d.Items) != 1 || d.Items[0].Count != 2 || d.Rate != 2.5 {
				t.Errorf("decoded %+v", d)
			}
		}},
		{name: "empty", in: "", check: func(t *testing.T, d doc) {
			if d.Title != "" || d.Items != nil {
				t.Errorf("decoded %+v", d)
			}
		}},
		{name: "comments only", in: "# nothing\n"},
		{name: "unknown key", in: "title: t\ntitel: u\n", want: `f.yaml:2:1: unknown field "titel"`},
		{name: "unknown key in an item", in: "items:\n  - name: a\n    cuont: 1\n", want: `f.yaml:3:5: unknown field "cuont"`},
		{name: "wrong type, key named", in: "items:\n  - count: many\n", want: `f.yaml:2:12: count: want a whole number, got "many"`},
		{name: "a list for a scalar", in: "title: [a]\n", want: `f.yaml:1:8: title: want a string, got a list`},
		{name: "a scalar for a list", in: "items: x\n", want: `f.yaml:1:8: items: string was used where sequence is expected`},
		{name: "duplicate key", in: "title: a\ntitle: b\n", want: `f.yaml:2:1: mapping key "title" already defined at [1:1]`},
		{name: "syntax", in: "items: [\n", want: `f.yaml:1:8: sequence end token ']' not found`},
		{name: "two documents", in: "title: a\n---\ntitle: b\n", want: `f.yaml:2:1: more than one YAML document`},
		{name: "alias inside its anchor", in: "owner: &o {name: *o}\n", want: `f.yaml:1:18: alias *o is inside the anchor &o it names`},
		{name: "ambiguous number", in: "title: 0011\n", want: `f.yaml:1:8: 0011: write it in quotes if it is text (a secret, a name), or as 9 if it is a number`},
		{name: "quoted number is text", in: "title: \"0011\"\n", check: func(t *testing.T, d doc) {
			if d.Title != "0011" {
				t.Errorf("title %q", d.Title)
			}
		}},
		{name: "plain number is text too", in: "title: 42\n", check: func(t *testing.T, d doc) {
			if d.Title != "42" {
				t.Errorf("title %q", d.Title)
			}
		}},
		{name: "not a mapping", in: "- a\n", want: `f.yaml:1:1: sequence was used where mapping is expected`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d doc
			err := Decode("f.yaml", []byte(tt.in), &d)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Decode: %v", err)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
				t.Fatalf("Decode: %v, want an error starting %q", err, tt.want)
			}
			if tt.check != nil {
				tt.check(t, d)
			}
		})
	}
}

// TestDecodeEach: a problem in every item is reported, not the first only;
// anchors are known to the aliases of later items.
func TestDecodeEach(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string // every error line, in order
		items    int
	}{
		{"every item's problem", "items:\n  - name: a\n    cuont: 1\n  - name: b\n    count: x\ntitel: t\n", []string{
			`f.yaml:3:5: unknown field "cuont"`,
			`f.yaml:5:12: count: want a whole number, got "x"`,
			`f.yaml:6:1: unknown field "titel"`,
		}, 2},
		{"anchors across items", "items:\n  - &a {name: a, tags: &t [x, y]}\n  - {name: b, tags: *t}\n  - *a\n", nil, 3},
		{"an anchor on the list", "items: &l\n  - {name: a}\nowner: {name: o, tags: [z]}\n", nil, 1},
		{"a nil pointer filled", "owner:\n  name: o\n", nil, 0},
		{"a null pointer stays nil", "owner:\n", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("f.yaml", []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var d doc
			err = f.DecodeEach(&d)
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if len(d.Items) != tt.items {
				t.Errorf("%d items, want %d", len(d.Items), tt.items)
			}
			if strings.Contains(tt.in, "name: o") && (d.Owner == nil || d.Owner.Name != "o") {
				t.Errorf("owner %+v", d.Owner)
			}
			if strings.HasSuffix(tt.in, "owner:\n") && d.Owner != nil {
				t.Errorf("owner %+v, want nil", d.Owner)
			}
			if tt.items == 3 && (d.Items[1].Tags[1] != "y" || d.Items[2].Name != "a") {
				t.Errorf("aliases: %+v", d.Items)
			}
		})
	}
}

// TestUnmarshalerErrors: an unmarshaler's Errorf is placed at its node and
// named after the file by the decoding that called it.
func TestUnmarshalerErrors(t *testing.T) {
	var v struct {
		P port `yaml:"p"`
	}
	err := Decode("f.yaml", []byte("p: 70000\n"), &v)
	var e *Error
	if !errors.As(err, &e) || e.File != "f.yaml" || e.Line != 1 || e.Col != 4 || err.Error() != "f.yaml:1:4: port 70000 is out of range" {
		t.Errorf("err = %v (%+v)", err, e)
	}
}

type port int

func (p *port) UnmarshalYAML(n ast.Node) error {
	s, _ := Scalar(n)
	if s != "80" {
		return Errorf(n, "port %s is out of range", s)
	}
	*p = 80
	return nil
}

func TestErrorText(t *testing.T) {
	for _, c := range []struct {
		e    Error
		want string
	}{
		{Error{File: "f", Line: 3, Col: 7, Msg: "m"}, "f:3:7: m"},
		{Error{File: "f", Line: 3, Msg: "m"}, "f:3: m"},
		{Error{File: "f", Msg: "m"}, "f: m"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.e, got, c.want)
		}
	}
}

// TestPos: a block mapping is where its first key is, a flow mapping where
// its brace is, as a person points at them.
func TestPos(t *testing.T) {
	f, err := Parse("f.yaml", []byte("items:\n  - name: a\n    count: 1\n  - {name: b}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, items := Lookup(f.Body, "items")
	got := Items(items)
	for i, want := range [][2]int{{2, 5}, {4, 5}} {
		if l, c := Pos(got[i]); l != want[0] || c != want[1] {
			t.Errorf("item %d at %d:%d, want %d:%d", i, l, c, want[0], want[1])
		}
	}
	if l, c := Pos(nil); l != 0 || c != 0 {
		t.Errorf("nil at %d:%d", l, c)
	}
}

func TestEntries(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int // -1: not a mapping
	}{
		{"m: {a: 1, b: 2}\n", 2},
		{"m:\n  a: 1\n", 1},
		{"m: {}\n", 0},
		{"m: [a]\n", -1},
		{"m: x\n", -1},
		{"m:\n", -1},
	} {
		f, err := Parse("f.yaml", []byte(c.in))
		if err != nil {
			t.Fatal(err)
		}
		_, m := Lookup(f.Body, "m")
		got := Entries(m)
		if (got == nil) != (c.want < 0) || (c.want >= 0 && len(got) != c.want) {
			t.Errorf("%q: %d entries (nil %v), want %d", c.in, len(got), got == nil, c.want)
		}
	}
}
