package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/policyserver/pstest"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// deadPort is a loopback port nobody listens on.
func deadPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return p
}

func smHost(t *testing.T, secret, hco string, ports ...int) *conf.SmHost {
	t.Helper()
	var ps []conf.PolicyServer
	for _, p := range ports {
		ps = append(ps, conf.PolicyServer{Host: "127.0.0.1", AuthorizationPort: p})
	}
	sm, err := conf.NewSmHost(filepath.Join(t.TempDir(), "SmHost.conf"), conf.SmHost{
		HostName: "trust_wa1", SharedSecret: conf.PlainPrefix + secret, HostConfigObject: hco, PolicyServers: ps,
	})
	if err != nil {
		t.Fatal(err)
	}
	return sm
}

func TestRun(t *testing.T) {
	port := pstest.Start(t, "trust_wa1", []byte("s3cret")).Port
	dead := deadPort(t)
	cases := []struct {
		name    string
		sm      *conf.SmHost
		wantErr []string
		skipped int
	}{
		{"first server answers", smHost(t, "s3cret", "hco.smps1", port), nil, 0},
		{"a server down is skipped", smHost(t, "s3cret", "hco.smps1", dead, port), nil, 1},
		{"every server down names each", smHost(t, "s3cret", "hco.smps1", dead, dead),
			[]string{"no policy server", "SmHost.conf:7", "SmHost.conf:8", "refused"}, 2},
		{"wrong secret", smHost(t, "nope", "hco.smps1", port),
			[]string{"3154", "register this host again with smreghost"}, 1},
		{"unknown HCO", smHost(t, "s3cret", "hco.nope", port), []string{"hco.nope", "FAILURE"}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			rec := trace.NewRecorder(&buf, trace.Options{Proc: "w3wp.exe"})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := Run(ctx, Config{SmHost: c.sm, Recorder: rec})
			if len(c.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if res.HCO.Name != "hco.smps1" || res.HCO.MinSocketsPerPort != 2 || string(res.Secret) != "s3cret" {
					t.Errorf("result %+v", res.HCO)
				}
				// The bootstrap connection ends with an RST, never a FIN.
				if !strings.Contains(buf.String(), `"op":"TCP Reset"`) || strings.Contains(buf.String(), `"op":"TCP Disconnect","conn"`) {
					t.Errorf("the bootstrap connection was not reset:\n%s", buf.String())
				}
			} else {
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range c.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
			}
			if res != nil && len(res.Skipped) != c.skipped {
				t.Errorf("%d servers skipped, want %d: %v", len(res.Skipped), c.skipped, res.Skipped)
			}
		})
	}
}

// closingServer accepts and closes every connection at once, as a Policy
// Server at its connection limit does.
func closingServer(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().(*net.TCPAddr).Port
}

// A failed bootstrap's error lets the caller test why each server failed.
func TestRunErrorsAreTyped(t *testing.T) {
	named := smHost(t, "s3cret", "hco.smps1", 44443)
	named.PolicyServers[0].Host = "smps2.shared.invalid"
	tests := []struct {
		name string
		sm   *conf.SmHost
		is   func(error) bool
		want string
	}{
		{"server at its connection limit", smHost(t, "s3cret", "hco.smps1", closingServer(t)),
			func(err error) bool { return errors.Is(err, tli.ErrClosedBeforeHello) }, "Connection limit of N exceeded"},
		{"name in no hosts file", named,
			func(err error) bool { var u *trace.UnknownHostError; return errors.As(err, &u) }, "smps2.shared.invalid: not in any hosts file; pass --hosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := Run(ctx, Config{SmHost: tt.sm, Recorder: trace.NewRecorder(nil, trace.Options{})})
			if err == nil || !tt.is(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run: %v; want an error that says %q and that the caller can test", err, tt.want)
			}
		})
	}
}

func TestBootstrapServer(t *testing.T) {
	cases := []struct {
		in, want string
		bad      bool
	}{
		{"smps2.shared.lab", "smps2.shared.lab,44441,44442,44443", false},
		{"smps2.shared.lab:44443", "smps2.shared.lab,44441,44442,44443", false},
		{"127.0.0.1:9000", "127.0.0.1,0,0,9000", false},
		{"host:0", "", true},
		{"host:x", "", true},
		{"a,b", "", true},
		{"", "", true},
	}
	for _, c := range cases {
		got, err := BootstrapServer(c.in)
		if (err != nil) != c.bad {
			t.Errorf("%q: err %v", c.in, err)
			continue
		}
		if err == nil && got.String() != c.want {
			t.Errorf("%q: %s, want %s", c.in, got, c.want)
		}
	}
}

func TestRegister(t *testing.T) {
	port := pstest.Start(t, "", nil).Port
	dir := t.TempDir()
	file := filepath.Join(dir, "SmHost.conf")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg := Registration{Server: "127.0.0.1:" + strconv.Itoa(port), AdminUser: "siteminder", AdminPassword: "siteminder",
		TrustedHost: "trust_wa1", HCO: "hco.smps1", File: file, HostID: "wa1.shared.lab"}

	bad := reg
	bad.AdminPassword = "wrong"
	if _, err := Register(ctx, bad); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("wrong admin password: %v", err)
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatal("a refused registration wrote SmHost.conf")
	}
	if _, err := Register(ctx, reg); err != nil {
		t.Fatal(err)
	}
	// What was written opens on this host and bootstraps.
	back, err := conf.ReadSmHost(file)
	if err != nil {
		t.Fatal(err)
	}
	if back.HostName != "trust_wa1" || !strings.HasPrefix(back.SharedSecret, conf.SealedPrefix) {
		t.Errorf("SmHost.conf: %+v", back)
	}
	if _, err := Run(ctx, Config{SmHost: back, HostID: "wa1.shared.lab"}); err != nil {
		t.Errorf("bootstrap with the registered file: %v", err)
	}
	if _, err := back.Secret("another.host"); err == nil {
		t.Error("the secret opens on another host")
	}
	if _, err := Register(ctx, reg); err == nil || !strings.Contains(err.Error(), "-o") {
		t.Errorf("registering over an existing file without -o: %v", err)
	}
	reg.Overwrite = true
	if _, err := Register(ctx, reg); err != nil {
		t.Errorf("with -o: %v", err)
	}
}
