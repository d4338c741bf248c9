// Package yamlfile reads the YAML files people write for agentlab (lab
// files, policy stores, the registrations file) the one strict way: one
// document, no unknown keys, no duplicate keys, and every problem reported
// as file:line:col: message with the line and column that the YAML library
// (github.com/goccy/go-yaml) gives, so that an editor can jump to it. It
// imports no package of the project, so that conf can use it for the HCO
// and ACO it decodes.
package yamlfile

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Error is one problem of a YAML file, at a line and column when it has a
// place (both 1-based; 0 when the problem is with the file as a whole).
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Col > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// Errorf is a problem at node n, for an unmarshaler to return: the
// decoding that called it names the file (Wrap).
func Errorf(n ast.Node, format string, a ...any) error {
	e := &Error{Msg: fmt.Sprintf(format, a...)}
	e.Line, e.Col = Pos(n)
	return e
}

// Pos is the line and column of n, 0 and 0 when n has none. A block
// mapping is where its first key is (the library's token for it is the
// first ':'), a flow mapping where its '{' is.
func Pos(n ast.Node) (line, col int) {
	switch m := n.(type) {
	case nil:
		return 0, 0
	case *ast.MappingValueNode:
		if !m.IsFlowStyle {
			return Pos(m.Key)
		}
	case *ast.MappingNode:
		if m.IsFlowStyle && m.Start != nil && m.Start.Position != nil {
			return m.Start.Position.Line, m.Start.Position.Column
		}
		if len(m.Values) > 0 {
			return Pos(m.Values[0].Key)
		}
	}
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return tk.Position.Line, tk.Position.Column
	}
	return 0, 0
}

// Wrap places every error joined in err in file: errors of the YAML
// library keep their token's line and column, with the library's message
// (a Go type in it said in words, and the key named); an *Error gets the
// file's name; anything else is about the file as a whole.
func Wrap(file string, err error) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var errs []error
		for _, e := range j.Unwrap() {
			errs = append(errs, Wrap(file, e))
		}
		return errors.Join(errs...)
	}
	var own *Error
	if errors.As(err, &own) {
		placed := *own
		placed.File = file
		return &placed
	}
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &Error{File: file, Msg: message(ye)}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Col = tk.Position.Line, tk.Position.Column
		}
		return e
	}
	return &Error{File: file, Msg: err.Error()}
}

// message is the library's message, except where it names Go types, which
// the author of the file never saw: those say what was wanted in words and
// which key it was for.
func message(e yaml.Error) string {
	tk := e.GetToken()
	switch e := e.(type) {
	case *yaml.TypeError:
		return fmt.Sprintf("%swant %s, got %s", keyOf(tk), words(e.DstType), value(tk))
	case *yaml.OverflowError:
		return fmt.Sprintf("%s%s is too large for %s", keyOf(tk), e.SrcNum, words(e.DstType))
	case *yaml.UnexpectedNodeTypeError:
		return keyOf(tk) + e.GetMessage()
	}
	return e.GetMessage()
}

// keyOf is "key: " when tk is the value of a mapping entry, found through
// the token before it (the ':'), so that a message says which key.
func keyOf(tk *token.Token) string {
	if tk == nil || tk.Prev == nil || tk.Prev.Type != token.MappingValueType || tk.Prev.Prev == nil {
		return ""
	}
	return tk.Prev.Prev.Value + ": "
}

func value(tk *token.Token) string {
	switch {
	case tk == nil:
		return "something else"
	case tk.Type == token.SequenceStartType || tk.Type == token.SequenceEntryType:
		return "a list"
	case tk.Type == token.MappingStartType:
		return "a mapping"
	}
	return strconv.Quote(tk.Value)
}

// words says a Go type as the file's author thinks of it.
func words(t reflect.Type) string {
	if t == nil {
		return "another value"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return words(t.Elem())
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

// File is a parsed YAML file of one document.
type File struct {
	Name string
	// AST is the file as parsed, comments included, for a caller that
	// changes a part of it and prints it again (ast.File's String).
	AST *ast.File
	// Body is the document's top node, nil when the file has no document
	// (empty, or comments only).
	Body ast.Node
	dec  *yaml.Decoder
}

// Parse parses data, named file in errors. More than one document is an
// error: every file of agentlab is one.
func Parse(file string, data []byte) (f *File, err error) {
	// The parser is not hardened against every malformed input; a panic
	// in it must become an error for this file, not stop a Policy Server.
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, &Error{File: file, Msg: fmt.Sprintf("the YAML parser failed: %v", r)}
		}
	}()
	a, err := parser.ParseBytes(data, parser.ParseComments)
	if err != nil {
		return nil, Wrap(file, err)
	}
	// The decoder reads nothing itself: it decodes nodes of a, and learns
	// each anchor as it decodes it, before any alias (YAML defines an
	// anchor before its aliases, and Decode goes in file order), so the
	// file is parsed once.
	f = &File{Name: file, AST: a, dec: yaml.NewDecoder(bytes.NewReader(nil), yaml.DisallowUnknownField())}
	for _, doc := range a.Docs {
		body := doc.Body
		if body == nil || body.Type() == ast.CommentType {
			continue
		}
		if f.Body != nil {
			e := &Error{File: file, Msg: "more than one YAML document: the file is one document"}
			e.Line, e.Col = Pos(body)
			if doc.Start != nil && doc.Start.Position != nil {
				e.Line, e.Col = doc.Start.Position.Line, doc.Start.Position.Column
			}
			return nil, e
		}
		if err := f.check(body, nil); err != nil {
			return nil, err
		}
		f.Body = body
	}
	return f, nil
}

// check refuses what the library would read wrongly without a word:
//   - an alias inside the anchor it names (a: &x {b: *x}): the value would
//     contain itself, and the library loops on it for ever;
//   - a number written otherwise than the library writes it back (0011,
//     0x1F, 1_000, +5): decoded into a string it changes (0011 is the
//     octal 9, so "9"), and a hex secret or a name made of digits must not
//     change silently. Quoted, it is text as written.
func (f *File) check(n ast.Node, open []string) error {
	switch t := n.(type) {
	case *ast.IntegerNode:
		if text, canon := t.GetToken().Value, fmt.Sprint(t.Value); text != canon {
			return f.Errorf(t, "%s: write it in quotes if it is text (a secret, a name), or as %s if it is a number", text, canon)
		}
	case *ast.AnchorNode:
		return f.check(t.Value, append(open, t.Name.GetToken().Value))
	case *ast.AliasNode:
		if name := t.Value.GetToken().Value; slices.Contains(open, name) {
			return f.Errorf(t, "alias *%s is inside the anchor &%s it names: its value would contain itself", name, name)
		}
	case *ast.TagNode:
		return f.check(t.Value, open)
	case *ast.MappingNode:
		for _, v := range t.Values {
			if err := f.check(v, open); err != nil {
				return err
			}
		}
	case *ast.MappingValueNode:
		if err := f.check(t.Key, open); err != nil {
			return err
		}
		return f.check(t.Value, open)
	case *ast.SequenceNode:
		for _, v := range t.Values {
			if err := f.check(v, open); err != nil {
				return err
			}
		}
	}
	return nil
}

// Decode decodes n, a node of f (f.Body for the whole document), into v,
// strictly: a key v has no field for is an error. Anchors and aliases
// resolve across the file when its parts are decoded in file order, one by
// one (to report a problem in each, where the library stops at its first).
func (f *File) Decode(n ast.Node, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = f.Errorf(n, "the YAML decoder failed: %v", r)
		}
	}()
	if n == nil {
		return nil
	}
	err = f.dec.DecodeFromNode(n, v)
	var ye yaml.Error
	var own *Error
	if err != nil && !errors.As(err, &ye) && !errors.As(err, &own) {
		return f.Errorf(n, "%v", err) // no place of its own: the closest known
	}
	return Wrap(f.Name, err)
}

// DecodeEach decodes the document, a mapping, into the struct v pointed
// to, each item of its list fields on its own: the library stops at the
// first problem, and a file's author wants to see one in every item. A key
// v has no field for is an error, as in Decode.
func (f *File) DecodeEach(v any) error {
	rv := reflect.ValueOf(v).Elem()
	if _, ok := Deref(f.Body).(ast.MapNode); !ok || rv.Kind() != reflect.Struct {
		return f.Decode(f.Body, v) // the library says what is wrong
	}
	fields := map[string]reflect.Value{}
	for i := range rv.NumField() {
		name, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			fields[name] = rv.Field(i)
		}
	}
	var errs []error
	for _, e := range Entries(f.Body) {
		key := KeyText(e.Key)
		fv, ok := fields[key]
		if !ok {
			errs = append(errs, f.Errorf(e.Key, "unknown field %q", key)) // the library's words
			continue
		}
		// Item by item when the value is a list as written: an anchor on
		// the list itself must be decoded with it, to be known to aliases.
		seq, isSeq := e.Value.(*ast.SequenceNode)
		if fv.Kind() != reflect.Slice || !isSeq {
			target := fv.Addr().Interface()
			if fv.Kind() == reflect.Pointer {
				// The library leaves a nil pointer nil when given its
				// address: decode into a new value (a null stays nil).
				if _, null := Deref(e.Value).(*ast.NullNode); null {
					continue
				}
				fv.Set(reflect.New(fv.Type().Elem()))
				target = fv.Interface()
			}
			if err := f.Decode(e.Value, target); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		items := seq.Values // as written: an item's anchor is decoded with it
		list := reflect.MakeSlice(fv.Type(), len(items), len(items))
		for i, it := range items {
			if err := f.Decode(it, list.Index(i).Addr().Interface()); err != nil {
				errs = append(errs, err)
			}
		}
		fv.Set(list)
	}
	return errors.Join(errs...)
}

// Errorf is a problem at node n of f (the file as a whole when n is nil).
func (f *File) Errorf(n ast.Node, format string, a ...any) error {
	e := &Error{File: f.Name, Msg: fmt.Sprintf(format, a...)}
	e.Line, e.Col = Pos(n)
	return e
}

// Decode parses data and decodes its document into v strictly. A file with
// no document leaves v as it is.
func Decode(file string, data []byte, v any) error {
	f, err := Parse(file, data)
	if err != nil {
		return err
	}
	return f.Decode(f.Body, v)
}

// Deref is the node an anchor or a tag is written on; other nodes are
// themselves. Aliases stay: their place is where they are written.
func Deref(n ast.Node) ast.Node {
	for range 100 { // a bound, as anchors may nest
		switch t := n.(type) {
		case *ast.AnchorNode:
			n = t.Value
		case *ast.TagNode:
			n = t.Value
		default:
			return n
		}
	}
	return n
}

// Lookup finds key in mapping m: the key's node and its value's (Deref'd);
// nils when m is no mapping or has no such key.
func Lookup(m ast.Node, key string) (k, v ast.Node) {
	mn, ok := Deref(m).(ast.MapNode)
	if !ok {
		return nil, nil
	}
	for it := mn.MapRange(); it.Next(); {
		if KeyText(it.Key()) == key {
			return it.Key(), Deref(it.Value())
		}
	}
	return nil, nil
}

// Entries are the key/value pairs of mapping m in file order: empty, not
// nil, for an empty mapping ({}); nil when m is no mapping.
func Entries(m ast.Node) []*ast.MappingValueNode {
	mn, ok := Deref(m).(ast.MapNode)
	if !ok {
		return nil
	}
	out := []*ast.MappingValueNode{}
	for it := mn.MapRange(); it.Next(); {
		out = append(out, it.KeyValue())
	}
	return out
}

// Items are the elements of sequence n (Deref'd); nil when n is no sequence.
func Items(n ast.Node) []ast.Node {
	s, ok := Deref(n).(*ast.SequenceNode)
	if !ok {
		return nil
	}
	out := make([]ast.Node, len(s.Values))
	for i, v := range s.Values {
		out[i] = Deref(v)
	}
	return out
}

// KeyText is a mapping key as text: its scalar value, unquoted.
func KeyText(k ast.Node) string {
	k = Deref(k)
	if s, ok := k.(ast.ScalarNode); ok {
		if v := s.GetValue(); v != nil {
			if str, ok := v.(string); ok {
				return str
			}
		}
	}
	if tk := k.GetToken(); tk != nil {
		return tk.Value
	}
	return ""
}

// Scalar is the text of a scalar node (a string, a number, true, null...)
// and true; "" and false for a list, a mapping or an alias.
func Scalar(n ast.Node) (string, bool) {
	n = Deref(n)
	if n == nil {
		return "", false
	}
	switch n.Type() {
	case ast.StringType, ast.IntegerType, ast.FloatType, ast.BoolType, ast.NullType, ast.InfinityType, ast.NanType, ast.LiteralType:
	default:
		return "", false
	}
	if s, ok := n.(*ast.StringNode); ok {
		return s.Value, true
	}
	if l, ok := n.(*ast.LiteralNode); ok {
		return l.Value.Value, true
	}
	return n.GetToken().Value, true
}
