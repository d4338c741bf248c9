package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfCheckRejects: `agentlab conf check` names the file and line of
// whatever it cannot accept, and tells the user what to do about vendor
// secrets it cannot decrypt.
func TestConfCheckRejects(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "hostname=\"trust_wa1\"\r\nsharedsecret=\"{PLAIN}s3cret\"\r\nhostconfigobject=\"hco.smps1\"\r\npolicyserver=\"smps2.shared.lab,44441,44442,44443\"\r\n# <EOF>\r\n"
	cases := []struct {
		name, file, body string
		want             []string
	}{
		{"rc2 secret", "rc2.conf", strings.Replace(good, "{PLAIN}s3cret", "{RC2}AbCdEf==", 1), []string{"rc2.conf:2:", "{RC2}", "register this host again with smreghost"}},
		{"aes secret", "aes.conf", strings.Replace(good, "{PLAIN}s3cret", "{AES}AbCdEf==", 1), []string{"aes.conf:2:", "{AES}", "smreghost"}},
		{"bad port", "port.conf", strings.Replace(good, "44443", "4444x", 1), []string{"port.conf:4:", "4444x"}},
		{"no equals", "noeq.conf", "hostname=\"a\"\r\njunk line\r\n", []string{"noeq.conf:2:"}},
		{"unterminated quote", "quote.conf", "hostname=\"a\r\n", []string{"quote.conf:1:"}},
		{"no policyserver", "nops.conf", "hostname=\"a\"\nsharedsecret=\"{PLAIN}x\"\nhostconfigobject=\"h\"\n", []string{"nops.conf", "policyserver"}},
		{"missing SmHost.conf", "WebAgent.conf", "HostConfigFile=\"missing/SmHost.conf\"\nAgentConfigObject=\"aco.wa1\"\n", []string{"WebAgent.conf:1:", "SmHost.conf"}},
		{"missing file", "", "", []string{"absent.conf"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, "absent.conf")
			if c.file != "" {
				p = write(c.file, c.body)
			}
			r := runCmd(t, nil, "agentlab", "conf", "check", p)
			if r.code == 0 {
				t.Fatalf("exit 0 on a broken file; stdout:\n%s", r.stdout)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
		})
	}
	t.Run("plain secret accepted", func(t *testing.T) {
		r := runCmd(t, nil, "agentlab", "conf", "check", write("ok.conf", good))
		if r.code != 0 || !strings.Contains(r.stdout, "smps2.shared.lab:44443") || !strings.Contains(r.stdout, "trust_wa1") {
			t.Errorf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
}
