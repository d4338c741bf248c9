package conf

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Entry
	}{
		{"empty file", "", nil},
		{"blank lines", "\n\r\n  \t\n", nil},
		{"comments", "# one\n   # indented\n#no space\n# <EOF>\n", nil},
		{"quoted", `hostname="trust_wa1"` + "\n", []Entry{{"hostname", "trust_wa1", 1}}},
		{"unquoted", "policyserver=smps2.shared.lab\n", []Entry{{"policyserver", "smps2.shared.lab", 1}}},
		{"unquoted trimmed", "a =  b c  \n", []Entry{{"a", "b c", 1}}},
		{"unquoted with comment", "a=b # why\n", []Entry{{"a", "b", 1}}},
		{"unquoted with tab comment", "a=b\t#why\n", []Entry{{"a", "b", 1}}},
		{"unquoted hash inside", "a=b#c\n", []Entry{{"a", "b#c", 1}}},
		{"unquoted hash first", "a=#c\n", []Entry{{"a", "#c", 1}}},
		{"unquoted empty then comment", "a= #c\n", []Entry{{"a", "", 1}}},
		{"unquoted empty", "a=\n", []Entry{{"a", "", 1}}},
		{"quoted empty", `a=""`, []Entry{{"a", "", 1}}},
		{"spaces around =", `  Key  =  "v"  `, []Entry{{"Key", "v", 1}}},
		{"comment after quote", `policyserver="h,1,2,3"   # repeatable`, []Entry{{"policyserver", "h,1,2,3", 1}}},
		{"comment right after quote", `a="b"#c`, []Entry{{"a", "b", 1}}},
		{"hash and spaces in quotes", `a=" x # y "`, []Entry{{"a", " x # y ", 1}}},
		{"equals in value", `a="b=c"`, []Entry{{"a", "b=c", 1}}},
		{"windows path", `HostConfigFile="C:\Program Files\CA\webagent\win64\config\SmHost.conf"`,
			[]Entry{{"HostConfigFile", `C:\Program Files\CA\webagent\win64\config\SmHost.conf`, 1}}},
		{"utf-8", `LOCALE="fr_FR" # français`, []Entry{{"LOCALE", "fr_FR", 1}}},
		{"tab in value", "a=\"x\ty\"", []Entry{{"a", "x\ty", 1}}},
		{"crlf", "a=\"1\"\r\n# c\r\nb=\"2\"\r\n", []Entry{{"a", "1", 1}, {"b", "2", 3}}},
		{"no final newline", "a=\"1\"\nb=\"2\"", []Entry{{"a", "1", 1}, {"b", "2", 2}}},
		{"bom", "\xef\xbb\xbfa=\"1\"\r\n", []Entry{{"a", "1", 1}}},
		{"repeated", "LoadPlugin=\"x\"\nLoadPlugin=\"y\"\n", []Entry{{"LoadPlugin", "x", 1}, {"LoadPlugin", "y", 2}}},
		{"odd key characters", "a.b-c_d:e/f=\"1\"\n", []Entry{{"a.b-c_d:e/f", "1", 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("x.conf", []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Entries(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("entries = %+v, want %+v", got, tt.want)
			}
			if got := string(f.Bytes()); got != tt.in {
				t.Errorf("Bytes() = %q, want %q", got, tt.in)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no equals", "a=\"1\"\njust words\n", `x.conf:2: no "=" in "just words": want key="value", a # comment or a blank line`},
		{"empty key", "# c\n=\"v\"\n", `x.conf:2: empty key before "="`},
		{"blank key", "  = v\n", `x.conf:1: empty key before "="`},
		{"key with space", "host name=\"x\"\r\n", `x.conf:1: key "host name" has spaces`},
		{"key with tab", "a\tb=\"x\"\n", `x.conf:1: key "a\tb" has spaces`},
		{"key with quote", "\"a\"=\"x\"\n", `x.conf:1: key "\"a\"" has a quote`},
		{"unterminated quote", "\n\nhostname=\"trust_wa1\n", `x.conf:3: unterminated quote in the value of hostname`},
		{"unterminated quote crlf", "hostname=\"trust_wa1\r\n", `x.conf:1: unterminated quote in the value of hostname`},
		{"text after quote", `a="b" c`, `x.conf:1: unexpected "c" after the closing quote of a: a comment must start with #`},
		{"second quoted value", `a="b""c"`, `x.conf:1: unexpected "\"c\"" after the closing quote of a: a comment must start with #`},
		{"quote in unquoted", `a=b"c`, `x.conf:1: the value of a has a quote but does not start with one`},
		{"nul", "a=\"1\"\nb=\"x\x00y\"\n", `x.conf:2: the line has a NUL byte`},
		{"nul in comment", "# \x00\n", `x.conf:1: the line has a NUL byte`},
		{"invalid utf-8", "a=\"1\"\r\nb=\"\xff\"\r\n", `x.conf:2: the line has invalid UTF-8`},
		{"latin-1", "# fran\xe7ais\n", `x.conf:1: the line has invalid UTF-8`},
		{"stray cr", "a=\"1\"\rb=\"2\"\n", `x.conf:1: the line has a stray carriage return`},
		{"cr at end of file", "a=\"1\"\r", `x.conf:1: the line has a stray carriage return`},
		{"control character", "a=\"\x1b[0m\"\n", `x.conf:1: the line has control character U+001B`},
		{"bom only at start", "a=\"1\"\n\xef\xbb\xbfb=\"2\"\n", `x.conf:2: key "\ufeffb" has the invisible character U+FEFF`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("x.conf", []byte(tt.in))
			if err == nil {
				t.Fatalf("parsed, entries %+v", f.Entries())
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T, want *Error", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

// vendorSmHost is SmHost.conf as smreghost writes it, with a hand-added
// backup server, a comment after a value and a key agentlab does not know.
const vendorSmHost = "hostname=\"trust_wa1\"\r\n" +
	"sharedsecret=\"{RC2}mJ3Vw8bq2nBQ1E0k7yQ2zB9Yp8tQ5d0hJ1Xx4WvZ3c6pDz5Qq1tq9w==\"\r\n" +
	"sharedsecrettime=\"0\"\r\n" +
	"enabledynamichco=\"NO\"\r\n" +
	"hostconfigobject=\"hco.smps1\"\r\n" +
	"# Add additional bootstrap policy servers here for fault tolerance.\r\n" +
	"policyserver=\"smps2.shared.lab,44441,44442,44443\"\r\n" +
	"policyserver=\"smps1.shared.lab,44441,44442,44443\"   # added by hand\r\n" +
	"requesttimeout=\"60\"\r\n" +
	"cryptoprovider=\"ETPKI\"\r\n" +
	"fipsmode=\"COMPAT\"\r\n" +
	"someFutureKey=\"kept as is\"\r\n" +
	"# <EOF>\r\n"

const vendorWebAgent = "# WebAgent.conf - configuration file for SiteMinder Web Agent\n" +
	"#\n" +
	"# Web Agent Version = 12.52, Build = 1000, Update = 1\n" +
	"#\n" +
	"#agentname=\"agent1,192.168.1.1\"\n" +
	"HostConfigFile=\"/opt/ca/webagent/config/SmHost.conf\"\n" +
	"AgentConfigObject=\"aco.wa1\"\n" +
	"EnableWebAgent=\"YES\"\n" +
	"ServerPath=\"/opt/apache2/wa1\"\n" +
	"#localconfigfile=\"/opt/ca/webagent/config/LocalConfig.conf\"\n" +
	"LoadPlugin=\"/opt/ca/webagent/bin/libHttpPlugin.so\"\n" +
	"LoadPlugin=\"/opt/ca/webagent/bin/libSAMLDataPlugin.so\"\n" +
	"\n" +
	"LOCALE=\"en-US\"\n"

func TestRoundTrip(t *testing.T) {
	for name, in := range map[string]string{
		"smhost crlf":   vendorSmHost,
		"smhost lf":     strings.ReplaceAll(vendorSmHost, "\r\n", "\n"),
		"webagent lf":   vendorWebAgent,
		"webagent crlf": strings.ReplaceAll(vendorWebAgent, "\n", "\r\n"),
		"mixed endings": "a=\"1\"\r\nb=2\n# c\r\n\n# <EOF>",
		"bom":           "\xef\xbb\xbf" + vendorSmHost,
	} {
		t.Run(name, func(t *testing.T) {
			f, err := Parse("x.conf", []byte(in))
			if err != nil {
				t.Fatal(err)
			}
			if got := string(f.Bytes()); got != in {
				t.Errorf("rewrite differs:\n got %q\nwant %q", got, in)
			}
			path := filepath.Join(t.TempDir(), "x.conf")
			if err := f.WriteFile(path, 0o600); err != nil {
				t.Fatal(err)
			}
			g, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(g.Bytes()); got != in {
				t.Errorf("file differs:\n got %q\nwant %q", got, in)
			}
			if g.Path() != path {
				t.Errorf("Path() = %q, want %q", g.Path(), path)
			}
		})
	}
}

func TestGetAll(t *testing.T) {
	f, err := Parse("SmHost.conf", []byte(vendorSmHost+"HostName=\"later\"\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v, n, ok := f.Get("HOSTCONFIGOBJECT"); !ok || v != "hco.smps1" || n != 5 {
		t.Errorf("Get(HOSTCONFIGOBJECT) = %q, %d, %v", v, n, ok)
	}
	// The last line wins for a single key, as with the agent.
	if v, n, ok := f.Get("hostname"); !ok || v != "later" || n != 14 {
		t.Errorf("Get(hostname) = %q, %d, %v", v, n, ok)
	}
	if _, n, ok := f.Get("nosuchkey"); ok || n != 0 {
		t.Errorf("Get(nosuchkey) found at line %d", n)
	}
	want := []Entry{
		{"policyserver", "smps2.shared.lab,44441,44442,44443", 7},
		{"policyserver", "smps1.shared.lab,44441,44442,44443", 8},
	}
	if got := f.All("PolicyServer"); !reflect.DeepEqual(got, want) {
		t.Errorf("All(PolicyServer) = %v, want %v", got, want)
	}
	if got := f.All("nosuchkey"); got != nil {
		t.Errorf("All(nosuchkey) = %v", got)
	}
}

// edit applies fn to in and compares the result, and checks that what was
// written parses back.
func edit(t *testing.T, in string, fn func(*File) error, want string) {
	t.Helper()
	f, err := Parse("x.conf", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(f); err != nil {
		t.Fatal(err)
	}
	got := string(f.Bytes())
	if got != want {
		t.Errorf("after edit:\n got %q\nwant %q", got, want)
	}
	g, err := Parse("x.conf", []byte(got))
	if err != nil {
		t.Fatalf("result does not parse: %v", err)
	}
	if !reflect.DeepEqual(g.Entries(), f.Entries()) {
		t.Errorf("re-parsed entries %v, model has %v", g.Entries(), f.Entries())
	}
}

func TestSet(t *testing.T) {
	set := func(k, v string) func(*File) error { return func(f *File) error { return f.Set(k, v) } }
	tests := []struct {
		name, in string
		fn       func(*File) error
		want     string
	}{
		{"in place, crlf, key spelling kept", "# c\r\nHostName=\"a\"  # why\r\nx=\"1\"\r\n# <EOF>\r\n", set("hostname", "b"),
			"# c\r\nHostName=\"b\"  # why\r\nx=\"1\"\r\n# <EOF>\r\n"},
		{"unquoted becomes quoted", "a = b # why\n", set("A", "c d"), "a = \"c d\" # why\n"},
		{"unquoted empty", "a= #c\n", set("a", "v"), "a= \"v\"#c\n"},
		{"later duplicates removed", "a=\"1\"\nb=\"x\"\na=\"2\"\nA=\"3\"\n", set("a", "9"), "a=\"9\"\nb=\"x\"\n"},
		{"new key before EOF", "a=\"1\"\r\n# <EOF>\r\n", set("b", "2"), "a=\"1\"\r\nb=\"2\"\r\n# <EOF>\r\n"},
		{"new key before EOF and blank lines", "a=\"1\"\n#  <eof> \n\n", set("b", "2"), "a=\"1\"\nb=\"2\"\n#  <eof> \n\n"},
		{"new key at end, lf", "a=\"1\"\n", set("b", "2"), "a=\"1\"\nb=\"2\"\n"},
		{"new key, no final newline", "a=\"1\"", set("b", "2"), "a=\"1\"\r\nb=\"2\"\r\n"},
		{"new key, no final newline, lf elsewhere", "# c\na=\"1\"", set("b", "2"), "# c\na=\"1\"\nb=\"2\"\n"},
		{"new key in empty file", "", set("b", "2"), "b=\"2\"\r\n"},
		{"EOF not last is not the end", "# <EOF>\na=\"1\"\n", set("b", "2"), "# <EOF>\na=\"1\"\nb=\"2\"\n"},
		{"empty value", "a=\"1\"\n", set("a", ""), "a=\"\"\n"},
		{"value with hash", "a=\"1\"\n", set("a", "x # y"), "a=\"x # y\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { edit(t, tt.in, tt.fn, tt.want) })
	}
}

func TestAdd(t *testing.T) {
	add := func(k, v string) func(*File) error { return func(f *File) error { return f.Add(k, v) } }
	tests := []struct {
		name, in string
		fn       func(*File) error
		want     string
	}{
		{"after the last of its key", vendorSmHost, add("PolicyServer", "smps3.shared.lab,0,0,44443"),
			strings.Replace(vendorSmHost, "# added by hand\r\n", "# added by hand\r\nPolicyServer=\"smps3.shared.lab,0,0,44443\"\r\n", 1)},
		{"new key before EOF", vendorSmHost, add("LoadPlugin", "x"),
			strings.Replace(vendorSmHost, "# <EOF>", "LoadPlugin=\"x\"\r\n# <EOF>", 1)},
		{"last line without newline", "LoadPlugin=\"x\"", add("LoadPlugin", "y"), "LoadPlugin=\"x\"\r\nLoadPlugin=\"y\"\r\n"},
		{"keeps lf", "a=\"1\"\nb=\"2\"\n", add("a", "3"), "a=\"1\"\na=\"3\"\nb=\"2\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { edit(t, tt.in, tt.fn, tt.want) })
	}
}

func TestDel(t *testing.T) {
	var n int
	del := func(k string) func(*File) error { return func(f *File) error { n = f.Del(k); return nil } }
	edit(t, vendorSmHost, del("POLICYSERVER"), strings.Replace(vendorSmHost,
		"policyserver=\"smps2.shared.lab,44441,44442,44443\"\r\npolicyserver=\"smps1.shared.lab,44441,44442,44443\"   # added by hand\r\n", "", 1))
	if n != 2 {
		t.Errorf("Del removed %d lines, want 2", n)
	}
	edit(t, vendorSmHost, del("nosuchkey"), vendorSmHost)
	if n != 0 {
		t.Errorf("Del removed %d lines, want 0", n)
	}
	// A comment that mentions the key is not an entry.
	edit(t, "#a=\"1\"\na=\"2\"\n", del("a"), "#a=\"1\"\n")
}

func TestSetRefusesUnwritable(t *testing.T) {
	f, err := Parse("x.conf", []byte(vendorSmHost))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ key, value, want string }{
		{"a", "x\"y", `x.conf: the value of a has a quote, which the file format cannot hold`},
		{"hostname", "x\r\npolicyserver=evil", `x.conf: the value of hostname has a stray carriage return`},
		{"hostname", "x\npolicyserver=evil", `x.conf: the value of hostname has control character U+000A`},
		{"a", "\x00", `x.conf: the value of a has a NUL byte`},
		{"a", "\xff", `x.conf: the value of a has invalid UTF-8`},
		{"", "v", `x.conf: empty key before "="`},
		{"a b", "v", `x.conf: key "a b" has spaces`},
		{"a=b", "v", `x.conf: key "a=b" has "=" or starts with "#"`},
		{"#a", "v", `x.conf: key "#a" has "=" or starts with "#"`},
	} {
		for _, fn := range []func(string, string) error{f.Set, f.Add} {
			if err := fn(tt.key, tt.value); err == nil || err.Error() != tt.want {
				t.Errorf("Set/Add(%q, %q) = %v, want %s", tt.key, tt.value, err, tt.want)
			}
		}
	}
	if got := string(f.Bytes()); got != vendorSmHost {
		t.Errorf("refused edits changed the file: %q", got)
	}
}

func TestErrorString(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{File: "a.conf", Line: 3, Msg: "bad"}, "a.conf:3: bad"},
		{Error{File: "a.conf", Msg: "bad"}, "a.conf: bad"},
		{Error{Line: 3, Msg: "bad"}, "line 3: bad"},
		{Error{Msg: "bad"}, "bad"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestReadFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "SmHost.conf")
	for name, read := range map[string]func(string) error{
		"ReadFile":     func(p string) error { _, err := ReadFile(p); return err },
		"ReadSmHost":   func(p string) error { _, err := ReadSmHost(p); return err },
		"ReadWebAgent": func(p string) error { _, err := ReadWebAgent(p); return err },
	} {
		err := read(path)
		want := path + ": cannot read the file: no such file or directory"
		if err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %s", name, err, want)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: error does not wrap fs.ErrNotExist", name)
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "SmHost.conf")
	if err := os.WriteFile(path, []byte("old=\"1\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Parse(path, []byte(vendorSmHost))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFile(path, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != vendorSmHost {
		t.Errorf("file = %q", got)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	// No temporary file is left behind.
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d files, want 1", len(ents))
	}
	// A directory that does not exist gives an error naming the path.
	bad := filepath.Join(dir, "missing", "SmHost.conf")
	if err := f.WriteFile(bad, 0o600); err == nil || !strings.HasPrefix(err.Error(), bad+": cannot write the file: ") {
		t.Errorf("WriteFile into a missing directory: %v", err)
	}
}

func TestErrorf(t *testing.T) {
	f, err := Parse("SmHost.conf", []byte(vendorSmHost))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Errorf(7, "%s unreachable", "smps2").Error(); got != "SmHost.conf:7: smps2 unreachable" {
		t.Errorf("Errorf = %q", got)
	}
}
