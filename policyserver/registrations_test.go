package policyserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/agentlab/atomicfile"
)

func TestCheckAdmin(t *testing.T) {
	s := seedStore(t)
	for _, c := range []struct {
		user, pw string
		ok       bool
		why      string
	}{
		{"siteminder", "siteminder", true, ""},
		{"siteminder", "SiteMinder", false, "wrong password"},
		{"admin", "siteminder", false, `unknown administrator "admin"`},
	} {
		err := s.CheckAdmin(c.user, c.pw)
		if c.ok != (err == nil) || (err != nil && (!errors.Is(err, ErrBadAdmin) || !strings.Contains(err.Error(), c.why))) {
			t.Errorf("CheckAdmin(%q, %q) = %v", c.user, c.pw, err)
		}
	}
	noAdmin, err := ParseStore("store.yaml", []byte(base[strings.Index(base, "session_key"):]))
	if err != nil {
		t.Fatal(err)
	}
	if err := noAdmin.CheckAdmin("siteminder", "siteminder"); !errors.Is(err, ErrBadAdmin) {
		t.Errorf("store without admin: %v", err)
	}
}

func TestRegisterHost(t *testing.T) {
	for _, file := range []bool{false, true} {
		t.Run(fmt.Sprintf("file=%v", file), func(t *testing.T) {
			s, err := ParseStore("store.yaml", []byte(base))
			if err != nil {
				t.Fatal(err)
			}
			if file {
				if err := s.UseRegistrations(filepath.Join(t.TempDir(), "registrations.yaml")); err != nil {
					t.Fatal(err)
				}
			}
			th, err := s.RegisterHost(t.Context(), "trust_wa2", "hco.smps1", false, nil)
			if err != nil || len(th.Secret) != SharedSecretLen || th.HCO != "hco.smps1" {
				t.Fatalf("register: %+v, %v", th, err)
			}
			got, ok := s.TrustedHost("trust_wa2")
			if !ok || !bytes.Equal(got.Secret, th.Secret) {
				t.Errorf("lookup: %+v, %v", got, ok)
			}
			// A second registration needs -o.
			if _, err := s.RegisterHost(t.Context(), "trust_wa2", "hco.smps1", false, []byte("x")); !errors.Is(err, ErrHostExists) || !strings.Contains(err.Error(), "use -o to overwrite") {
				t.Errorf("re-register without overwrite: %v", err)
			}
			if got, _ := s.TrustedHost("trust_wa2"); !bytes.Equal(got.Secret, th.Secret) {
				t.Error("a refused registration changed the secret")
			}
			// So does one over a host of the store itself.
			if _, err := s.RegisterHost(t.Context(), "trust_wa1", "hco.smps1", false, nil); !errors.Is(err, ErrHostExists) {
				t.Errorf("register over a store host: %v", err)
			}
			th2, err := s.RegisterHost(t.Context(), "trust_wa1", "hco.smps1", true, []byte("given secret"))
			if err != nil || string(th2.Secret) != "given secret" {
				t.Fatalf("overwrite: %+v, %v", th2, err)
			}
			if got, _ := s.TrustedHost("trust_wa1"); string(got.Secret) != "given secret" {
				t.Errorf("overwritten store host: %+v", got)
			}
			if _, err := s.RegisterHost(t.Context(), "trust_wa3", "hco.nope", false, nil); !errors.Is(err, ErrUnknownHCO) {
				t.Errorf("unknown HCO: %v", err)
			}
			if _, err := s.RegisterHost(t.Context(), "trust wa3", "hco.smps1", false, nil); !errors.Is(err, ErrBadHostName) {
				t.Errorf("bad name: %v", err)
			}
			// The caller owns what it got.
			got.Secret[0] ^= 0xff
			if again, _ := s.TrustedHost("trust_wa2"); !bytes.Equal(again.Secret, th.Secret) {
				t.Error("TrustedHost returned the store's own secret slice")
			}
		})
	}
}

func TestRegistrationsShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registrations.yaml")
	smps1, smps2 := seedStore(t), seedStore(t)
	for _, s := range []*Store{smps1, smps2} {
		if err := s.UseRegistrations(path); err != nil {
			t.Fatal(err)
		}
	}
	// Registered through smps2, known to smps1 at once.
	th, err := smps2.RegisterHost(t.Context(), "trust_wa1", "hco.smps1", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := smps1.TrustedHost("trust_wa1")
	if !ok || !bytes.Equal(got.Secret, th.Secret) {
		t.Fatalf("smps1 does not see smps2's registration: %+v, %v", got, ok)
	}
	// smps1 refuses a second registration it has not looked up yet either.
	if _, err := smps1.RegisterHost(t.Context(), "trust_wa1", "hco.smps1", false, nil); !errors.Is(err, ErrHostExists) {
		t.Errorf("smps1 re-register: %v", err)
	}
	// An overwrite through smps1 reaches smps2.
	th2, err := smps1.RegisterHost(t.Context(), "trust_wa1", "hco.both", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := smps2.TrustedHost("trust_wa1"); !bytes.Equal(got.Secret, th2.Secret) || got.HCO != "hco.both" {
		t.Errorf("smps2 after overwrite: %+v", got)
	}
	// A third server started later reads the file.
	smps3 := seedStore(t)
	if err := smps3.UseRegistrations(path); err != nil {
		t.Fatal(err)
	}
	if _, ok := smps3.TrustedHost("trust_wa1"); !ok {
		t.Error("smps3 does not load the file")
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "# agentlab trusted-host registrations") || !strings.Contains(string(data), "hco: hco.both") {
		t.Errorf("file:\n%s", data)
	}
	// The lock file stays (removing it is what made two holders possible),
	// but no one holds it.
	unlock, err := lockFile(t.Context(), path+".lock")
	if err != nil {
		t.Errorf("the lock is still held after the registrations: %v", err)
	} else {
		unlock()
	}
	// Removing the file forgets the registrations (a lab reset).
	os.Remove(path)
	if _, ok := smps1.TrustedHost("trust_wa1"); ok {
		t.Error("registration survived the removal of the file")
	}
}

func TestRegistrationsConcurrent(t *testing.T) {
	// Two servers registering at once lose none of each other's hosts.
	path := filepath.Join(t.TempDir(), "registrations.yaml")
	stores := []*Store{seedStore(t), seedStore(t)}
	for _, s := range stores {
		if err := s.UseRegistrations(path); err != nil {
			t.Fatal(err)
		}
	}
	const each = 20
	var wg sync.WaitGroup
	for i, s := range stores {
		for j := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.RegisterHost(t.Context(), fmt.Sprintf("host_%d_%d", i, j), "hco.smps1", false, nil); err != nil {
					t.Error(err)
				}
			}()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.TrustedHost("host_0_0")
			}()
		}
	}
	wg.Wait()
	for _, s := range stores {
		for i := range stores {
			for j := range each {
				if _, ok := s.TrustedHost(fmt.Sprintf("host_%d_%d", i, j)); !ok {
					t.Errorf("host_%d_%d lost", i, j)
				}
			}
		}
	}
}

func TestRegistrationsBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registrations.yaml")
	os.WriteFile(path, []byte("trusted_hosts:\n  - name: h\n    secrett: ab\n"), 0o600)
	s := seedStore(t)
	if err := s.UseRegistrations(path); err == nil || !strings.Contains(err.Error(), path+":3:5: unknown field \"secrett\"") {
		t.Errorf("err = %v", err)
	}
	os.WriteFile(path, []byte("trusted_hosts:\n  - name: h\n    secret: \"0011\"\n    hco: hco.smps1\n"), 0o600)
	if err := s.UseRegistrations(path); err != nil {
		t.Fatal(err)
	}
	// A broken edit keeps the hosts already known; registering reports it.
	// Written as a new file (a rename), so the change shows by the file's
	// identity whatever the clock's resolution.
	if err := atomicfile.WriteFile(path, []byte("trusted_hosts: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.TrustedHost("h"); !ok {
		t.Error("a broken file made the server forget its hosts")
	}
	if _, err := s.RegisterHost(t.Context(), "h2", "hco.smps1", false, nil); err == nil {
		t.Error("registering over a broken file succeeded")
	}
}

// TestLockFile: a lock file left by a server that died does not block (the
// kernel released its lock); a lock another holder has makes the wait end
// with an error naming the file when the context ends; a released lock can
// be taken again.
func TestLockFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registrations.yaml.lock")
	if err := os.WriteFile(path, []byte("left by a crashed server\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockFile(t.Context(), path)
	if err != nil {
		t.Fatalf("a lock file nobody holds blocks: %v", err)
	}
	// Another holder: flock(2) locks belong to an open file, so a second
	// open of the same file in this process contends like another process.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, path); err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second holder: %v, want a deadline error naming %s", err, path)
	}
	unlock()
	again, err := lockFile(t.Context(), path)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	again()
}

// regChildEnv makes the test binary a registering Policy Server process for
// TestRegistrationsManyProcesses: "path first count".
const regChildEnv = "AGENTLAB_TEST_REGISTRATIONS_CHILD"

// TestRegistrationsManyProcesses: many Policy Server processes sharing one
// registrations file register at the same moment, each several hosts; the
// file ends with every host and the secret its process gave. The processes
// are this test binary run again, released together by closing their
// standard input, so that they contend for the lock from the first write.
func TestRegistrationsManyProcesses(t *testing.T) {
	if spec := os.Getenv(regChildEnv); spec != "" {
		registerAsChild(t, spec)
		return
	}
	const procs, each = 24, 8
	path := filepath.Join(t.TempDir(), "registrations.yaml")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	type child struct {
		cmd   *exec.Cmd
		go_   io.WriteCloser
		out   bytes.Buffer
		first int
	}
	children := make([]*child, procs)
	for i := range children {
		c := &child{first: i * each}
		c.cmd = exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRegistrationsManyProcesses$", "-test.count=1")
		c.cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", regChildEnv, path, c.first, each))
		c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
		var err error
		if c.go_, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children[i] = c
	}
	start := time.Now()
	for _, c := range children {
		c.go_.Close() // go
	}
	for _, c := range children {
		if err := c.cmd.Wait(); err != nil {
			t.Errorf("registering process %d: %v\n%s", c.first/each, err, c.out.String())
		}
	}
	elapsed := time.Since(start)
	s := seedStore(t)
	if err := s.UseRegistrations(path); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for n := range procs * each {
		name := childHost(n)
		th, ok := s.TrustedHost(name)
		if !ok {
			lost++
			continue
		}
		if !bytes.Equal(th.Secret, childSecret(name)) {
			t.Errorf("%s has the secret %x, not its process's", name, th.Secret)
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d registrations lost", lost, procs*each)
	}
	if got := len(s.reg.snap.Load().hosts); got != procs*each {
		t.Errorf("the file has %d hosts, want %d", got, procs*each)
	}
	t.Logf("%d processes registered %d hosts each (%d writes under the lock) in %s", procs, each, procs*each, elapsed)
}

func childHost(n int) string { return fmt.Sprintf("host_%03d", n) }

func childSecret(name string) []byte { return []byte("secret of " + name) }

// registerAsChild is one process of TestRegistrationsManyProcesses: it
// waits for its standard input to close, then registers its hosts.
func registerAsChild(t *testing.T, spec string) {
	var path string
	var first, count int
	if _, err := fmt.Sscan(spec, &path, &first, &count); err != nil {
		t.Fatalf("%s=%q: %v", regChildEnv, spec, err)
	}
	s := seedStore(t)
	if err := s.UseRegistrations(path); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, os.Stdin) // until the parent says go
	for n := first; n < first+count; n++ {
		name := childHost(n)
		if _, err := s.RegisterHost(t.Context(), name, "hco.smps1", false, childSecret(name)); err != nil {
			t.Fatal(err)
		}
	}
}
