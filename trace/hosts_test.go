package trace

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodHosts = `# lab hosts
127.0.0.11   wa1.shared.lab wa1   # the web server
127.0.0.21	smps1.shared.lab smps1

  # indented comment
127.0.0.1:44001 smps2.shared.lab
127.0.0.1:44002 SMPS3.Shared.Lab
::1 six.shared.lab
127.0.0.11 second-name-for-wa1.shared.lab
127.0.0.99 wa1.shared.lab
`

func TestParseHosts(t *testing.T) {
	h, err := ParseHosts("hosts", []byte(goodHosts))
	if err != nil {
		t.Fatal(err)
	}
	lookups := []struct {
		name, ip string
		ok       bool
	}{
		{"wa1.shared.lab", "127.0.0.11", true},
		{"WA1", "127.0.0.11", true},
		{"smps1", "127.0.0.21", true},
		{"smps2.shared.lab", "127.0.0.1", true},
		{"smps3.shared.lab", "127.0.0.1", true},
		{"six.shared.lab", "::1", true},
		{"second-name-for-wa1.shared.lab", "127.0.0.11", true},
		{"nowhere.shared.lab", "", false},
		{"#", "", false},
	}
	for _, tc := range lookups {
		ip, ok := h.Lookup(tc.name)
		if ip != tc.ip || ok != tc.ok {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tc.name, ip, ok, tc.ip, tc.ok)
		}
	}
	names := []struct{ addr, want string }{
		{"127.0.0.11:5000", "wa1.shared.lab"}, // first name of the first entry
		{"127.0.0.11", "wa1.shared.lab"},
		{"127.0.0.21:44443", "smps1.shared.lab"},
		{"127.0.0.1:44001", "smps2.shared.lab"},
		{"127.0.0.1:44002", "SMPS3.Shared.Lab"},
		{"[::ffff:127.0.0.1]:44001", "smps2.shared.lab"},
		{"[::ffff:127.0.0.21]:1", "smps1.shared.lab"},
		{"127.0.0.1:50000", ""}, // an ip:port entry names that one socket only
		{"[::1]:80", "six.shared.lab"},
		{"127.0.0.99:1", "wa1.shared.lab"},
		{"10.0.0.1:1", ""},
		{"garbage", ""},
		{"", ""},
	}
	for _, tc := range names {
		if got := h.Name(tc.addr); got != tc.want {
			t.Errorf("Name(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestParseHostsErrors(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"address only", "127.0.0.1 a\n127.0.0.2\n", "lab.hosts:2: "},
		{"address only with comment", "127.0.0.2   # nothing\n", "lab.hosts:1: "},
		{"not an ip", "# c\n\nsmps1 127.0.0.1\n", "lab.hosts:3: \"smps1\" is not an IP"},
		{"bad port", "127.0.0.1:99999 smps1\n", "lab.hosts:1: "},
		{"name with colon", "127.0.0.1 a:b\n", "lab.hosts:1: \"a:b\" is not a host name"},
		{"name with slash", "127.0.0.1 ok\n127.0.0.1 a/b\n", "lab.hosts:2: "},
		{"line too long", "127.0.0.1 a\n127.0.0.1 " + strings.Repeat("x", 70000) + "\n", "lab.hosts:2: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHosts("lab.hosts", []byte(tc.data))
			if err == nil {
				t.Fatalf("no error, got %v", h)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %q, want prefix %q", err, tc.want)
			}
		})
	}
}

func TestParseHostsEmpty(t *testing.T) {
	for _, data := range []string{"", "\n\n", "# only a comment\n", "   \t\n"} {
		h, err := ParseHosts("h", []byte(data))
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if _, ok := h.Lookup("localhost"); ok {
			t.Errorf("%q: empty map knows localhost", data)
		}
		if len(h.Bytes()) != 0 {
			t.Errorf("%q: Bytes() = %q", data, h.Bytes())
		}
	}
}

func TestLoadHosts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	if err := os.WriteFile(path, []byte("127.0.0.1 x\nbad\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadHosts(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":2: ") {
		t.Errorf("LoadHosts error %v, want the path and line 2", err)
	}
	if _, err := LoadHosts(filepath.Join(dir, "missing")); err == nil {
		t.Error("LoadHosts of a missing file: no error")
	}
	if err := os.WriteFile(path, []byte(goodHosts), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := LoadHosts(path)
	if err != nil {
		t.Fatal(err)
	}
	if ip, _ := h.Lookup("smps1"); ip != "127.0.0.21" {
		t.Errorf("Lookup = %q", ip)
	}
}

func TestHostsBytesRoundTrip(t *testing.T) {
	h, err := ParseHosts("hosts", []byte(goodHosts))
	if err != nil {
		t.Fatal(err)
	}
	h2, err := ParseHosts("again", h.Bytes())
	if err != nil {
		t.Fatalf("re-parsing Bytes(): %v\n%s", err, h.Bytes())
	}
	if string(h2.Bytes()) != string(h.Bytes()) {
		t.Errorf("Bytes() changed on a round trip:\n%s\n---\n%s", h.Bytes(), h2.Bytes())
	}
	for _, addr := range []string{"127.0.0.11:1", "127.0.0.1:44001", "[::1]:2", "127.0.0.21:3"} {
		if h.Name(addr) != h2.Name(addr) {
			t.Errorf("Name(%q): %q before, %q after", addr, h.Name(addr), h2.Name(addr))
		}
	}
}

func TestNewHosts(t *testing.T) {
	h, err := NewHosts(map[string][]string{
		"127.0.0.11":      {"wa1.shared.lab"},
		"127.0.0.1:44001": {"smps1.shared.lab", "smps1"},
		"127.0.0.12":      {"dup.shared.lab"},
		"127.0.0.13":      {"dup.shared.lab"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Name("127.0.0.1:44001"); got != "smps1.shared.lab" {
		t.Errorf("Name = %q", got)
	}
	if ip, _ := h.Lookup("smps1"); ip != "127.0.0.1" {
		t.Errorf("Lookup(smps1) = %q", ip)
	}
	// Map iteration is random; the result must not be.
	for range 20 {
		h2, _ := NewHosts(map[string][]string{"127.0.0.12": {"dup.shared.lab"}, "127.0.0.13": {"dup.shared.lab"}})
		if ip, _ := h2.Lookup("dup.shared.lab"); ip != "127.0.0.12" {
			t.Fatalf("duplicate name resolves to %q, want the first address in order", ip)
		}
	}

	bad := []map[string][]string{
		{"127.0.0.1": nil},
		{"127.0.0.1": {}},
		{"127.0.0.1": {""}},
		{"127.0.0.1": {"two words"}},
		{"127.0.0.1": {"new\nline"}},
		{"127.0.0.1": {"not#comment"}},
		{"wa1": {"x"}},
	}
	for _, entries := range bad {
		if _, err := NewHosts(entries); err == nil {
			t.Errorf("NewHosts(%v): no error", entries)
		}
	}
}

func TestResolve(t *testing.T) {
	h, err := loadHostsData(t, goodHosts)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in, want string
		unknown  string // the name an *UnknownHostError names
		err      string // any other error
	}{
		{in: "smps1.shared.lab:44443", want: "127.0.0.21:44443"},
		{in: "SMPS1:44443", want: "127.0.0.21:44443"},
		{in: "smps2.shared.lab:44001", want: "127.0.0.1:44001"},
		{in: "six.shared.lab:80", want: "[::1]:80"},
		{in: "127.0.0.5:80", want: "127.0.0.5:80"},
		{in: "[::1]:80", want: "[::1]:80"},
		{in: ":8080", want: ":8080"},
		// Names the map lacks are refused, never looked up: .invalid
		// cannot exist in DNS (RFC 2606), so an answer from DNS is
		// impossible and a DNS error would not be an *UnknownHostError.
		{in: "nowhere.invalid:44443", unknown: "nowhere.invalid"},
		{in: "example.com:80", unknown: "example.com"},
		{in: "localhost:80", unknown: "localhost"},
		{in: "no-port", err: `address "no-port"`},
		{in: "", err: `address ""`},
	}
	for _, tc := range tests {
		got, err := h.Resolve(tc.in)
		var unknown *UnknownHostError
		switch {
		case tc.unknown != "":
			if !errors.As(err, &unknown) || unknown.Name != tc.unknown || unknown.File != h.file {
				t.Errorf("Resolve(%q) = %q, %v; want an UnknownHostError for %s in %s", tc.in, got, err, tc.unknown, h.file)
			} else if !strings.Contains(err.Error(), h.file) {
				t.Errorf("Resolve(%q): %q does not name the hosts file", tc.in, err)
			}
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Resolve(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.err)
			}
		case err != nil || got != tc.want:
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// loadHostsData writes data as a hosts file and loads it, so that the map
// knows its file as a lab's does.
func loadHostsData(t *testing.T, data string) (*Hosts, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), RunHostsFile)
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return LoadHosts(path)
}

// With no hosts file at all, only addresses resolve, and the error says
// which flag gives the file.
func TestResolveWithoutHostsFile(t *testing.T) {
	var none *Hosts
	built, err := NewHosts(map[string][]string{"127.0.0.21": {"smps1.shared.lab"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*Hosts{none, built} {
		if got, err := h.Resolve("127.0.0.9:1"); err != nil || got != "127.0.0.9:1" {
			t.Errorf("Resolve of an address = %q, %v", got, err)
		}
		_, err := h.Resolve("smps2.shared.lab:44443")
		var unknown *UnknownHostError
		if !errors.As(err, &unknown) || unknown.File != "" {
			t.Fatalf("Resolve of an unknown name: %v, want an UnknownHostError with no file", err)
		}
		if want := "smps2.shared.lab: not in any hosts file; pass --hosts"; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error %q, want it to start %q", err, want)
		}
	}
}

func TestNilHosts(t *testing.T) {
	var h *Hosts
	if _, ok := h.Lookup("x"); ok {
		t.Error("nil Hosts knows a name")
	}
	if h.Name("127.0.0.1:1") != "" {
		t.Error("nil Hosts names an address")
	}
	if _, err := h.Resolve("x:1"); err == nil {
		t.Error("nil Hosts resolved a name")
	}
	if h.Bytes() != nil {
		t.Error("nil Hosts has bytes")
	}
}

func FuzzParseHosts(f *testing.F) {
	f.Add([]byte(goodHosts))
	f.Add([]byte("127.0.0.1:44001 a\n::ffff:10.0.0.1 b c\n"))
	f.Add([]byte("bad\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHosts("fuzz", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("error without the file name: %v", err)
			}
			return
		}
		// What Bytes writes must read back the same.
		h2, err := ParseHosts("again", h.Bytes())
		if err != nil {
			t.Fatalf("Bytes() does not parse: %v\n%q", err, h.Bytes())
		}
		if string(h2.Bytes()) != string(h.Bytes()) {
			t.Fatalf("round trip changed the map")
		}
		for _, e := range h.order {
			ip, ok := h.Lookup(e.names[0])
			if !ok || ip != h2.byName[strings.ToLower(e.names[0])] {
				t.Fatalf("Lookup(%q) = %q, %v", e.names[0], ip, ok)
			}
			h.Name(e.addr)
			// A name in the map is never unknown (a name like "[x" may
			// still not split as host:port).
			var unknown *UnknownHostError
			if _, err := h.Resolve(e.names[0] + ":1"); errors.As(err, &unknown) {
				t.Fatalf("Resolve(%q): %v", e.names[0], err)
			}
		}
	})
}
