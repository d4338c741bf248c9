package policyserver

// The policy store's file format: YAML (docs/store.md) decoded strictly
// into a StoreSpec, and the model's problems placed at the line and column
// of what they are about. The model (store.go) knows nothing of this.

import (
	"errors"
	"fmt"
	"os"

	"github.com/goccy/go-yaml/ast"

	"github.com/agentlab/agentlab/labs"
	"github.com/agentlab/agentlab/yamlfile"
)

// LoadStore reads and parses a store file.
func LoadStore(path string) (*Store, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy store: %w", err)
	}
	return ParseStore(path, data)
}

// SeedStore parses the store embedded in the binaries, the seed's environment.
func SeedStore() (*Store, error) {
	return ParseStore(seedStoreName, labs.SeedStore)
}

// SeedSpec is the embedded seed store as a spec, for a caller that builds a
// variant of it with NewStore.
func SeedSpec() (*StoreSpec, error) {
	spec, _, err := parseSpec(seedStoreName, labs.SeedStore)
	return spec, err
}

const seedStoreName = "labs/seed-store.yaml"

// ParseStore parses and checks a store; name is used in error messages,
// which have the form name:line:col: message, one line per problem found.
func ParseStore(name string, data []byte) (*Store, error) {
	spec, f, err := parseSpec(name, data)
	if err != nil {
		return nil, err
	}
	s, err := NewStore(spec)
	if err != nil {
		return nil, placeProblems(f, err)
	}
	s.name = name
	return s, nil
}

// parseSpec decodes a store file, reporting a problem in every item of
// every section rather than the first one only.
func parseSpec(name string, data []byte) (*StoreSpec, *yamlfile.File, error) {
	f, err := yamlfile.Parse(name, data)
	if err != nil {
		return nil, nil, err
	}
	if f.Body == nil {
		return nil, nil, f.Errorf(nil, "the store is empty")
	}
	var spec StoreSpec
	if err := f.DecodeEach(&spec); err != nil {
		return nil, nil, err
	}
	return &spec, f, nil
}

// UnmarshalYAML reads a policy's responses, a mapping of header name to
// value template, keeping the order written.
func (hs *Headers) UnmarshalYAML(n ast.Node) error {
	if _, null := yamlfile.Deref(n).(*ast.NullNode); null {
		*hs = nil
		return nil
	}
	entries := yamlfile.Entries(n)
	if entries == nil {
		return yamlfile.Errorf(n, "responses must be a mapping of header name to value")
	}
	out := make(Headers, 0, len(entries))
	for _, e := range entries {
		name := yamlfile.KeyText(e.Key)
		v, ok := yamlfile.Scalar(e.Value)
		if !ok {
			return yamlfile.Errorf(e.Key, "the value of header %q must be a string", name)
		}
		out = append(out, Header{Name: name, Value: v})
	}
	*hs = out
	return nil
}

// placeProblems turns the model's problems into file:line:col: errors.
func placeProblems(f *yamlfile.File, err error) error {
	var errs []error
	for _, e := range splitJoined(err) {
		var p *Problem
		if !errors.As(e, &p) {
			errs = append(errs, yamlfile.Wrap(f.Name, e))
			continue
		}
		msg := p.Msg
		if p.First != nil {
			line, _ := yamlfile.Pos(nodeAt(f.Body, *p.First))
			msg += fmt.Sprintf(" (first at line %d)", line)
		}
		errs = append(errs, f.Errorf(nodeAt(f.Body, p.At), "%s", msg))
	}
	return errors.Join(errs...)
}

// nodeAt finds the node a Where is about, or the closest node above it
// that the file has: a missing key is placed at its item, a missing item at
// its section, a missing section nowhere (the file as a whole).
func nodeAt(top ast.Node, w Where) ast.Node {
	sk, sv := yamlfile.Lookup(top, w.Section)
	if sk == nil {
		return nil
	}
	n := ast.Node(sk)
	if w.Item >= 0 {
		items := yamlfile.Items(sv)
		if w.Item >= len(items) {
			return n
		}
		n, sv = items[w.Item], items[w.Item]
	}
	if w.Key == "" {
		return n
	}
	_, kv := yamlfile.Lookup(sv, w.Key)
	if kv == nil {
		return n
	}
	if w.Elem < 0 {
		return kv
	}
	if items := yamlfile.Items(kv); w.Elem < len(items) {
		return items[w.Elem]
	}
	if entries := yamlfile.Entries(kv); w.Elem < len(entries) {
		return entries[w.Elem].Key
	}
	return kv
}
