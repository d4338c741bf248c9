package conf

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	hostA = "3d1219c7c4c5404aaa1f6d2a48adfda4/wa1"
	hostB = "9b2c6fb1e0a94a4f8d1c6a3e5f7b2d10/wa2"
)

func TestSealOpen(t *testing.T) {
	secret := []byte("the shared secret \x00 with any bytes")
	v, err := SealSecret(secret, hostA)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "{AL1}") {
		t.Fatalf("sealed value %q lacks {AL1}", v)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(v, "{AL1}"))
	if err != nil || len(raw) != 12+len(secret)+16 {
		t.Fatalf("sealed value is not base64(nonce||ciphertext): %d bytes, %v", len(raw), err)
	}
	got, err := OpenSecret(v, hostA)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("OpenSecret = %q, %v", got, err)
	}
	// A random nonce: sealing twice gives different values.
	if v2, _ := SealSecret(secret, hostA); v2 == v {
		t.Error("two seals gave the same value")
	}
	_, err = OpenSecret(v, hostB)
	want := "Shared secret incorrect: this SmHost.conf was registered on another host (its secret is bound to the host that ran smreghost); register this host again with smreghost"
	if err == nil || err.Error() != want {
		t.Errorf("open on another host: %v\nwant %s", err, want)
	}
	if !errors.Is(err, ErrSecretIncorrect) {
		t.Error("error does not wrap ErrSecretIncorrect")
	}
}

// TestSealMatchesSpec opens a value sealed by hand with the documented
// construction, so that the format cannot drift from doc.go.
func TestSealMatchesSpec(t *testing.T) {
	nonce := bytes.Repeat([]byte{7}, 12)
	ct := secretAEAD(hostA).Seal(nil, nonce, []byte("s"), []byte("sharedsecret"))
	v := "{AL1}" + base64.StdEncoding.EncodeToString(append(nonce, ct...))
	if got, err := OpenSecret(v, hostA); err != nil || string(got) != "s" {
		t.Errorf("OpenSecret = %q, %v", got, err)
	}
	// The additional data is part of the format: another one fails.
	ct = secretAEAD(hostA).Seal(nil, nonce, []byte("s"), []byte("other"))
	v = "{AL1}" + base64.StdEncoding.EncodeToString(append(nonce, ct...))
	if _, err := OpenSecret(v, hostA); !errors.Is(err, ErrSecretIncorrect) {
		t.Errorf("other additional data: %v", err)
	}
}

func TestOpenSecretForms(t *testing.T) {
	again := "; register this host again with smreghost"
	tests := []struct {
		value, want, err string
	}{
		{"{PLAIN}s3cret", "s3cret", ""},
		{"{plain}s3cret", "s3cret", ""},
		{"{PLAIN}{RC2}x", "{RC2}x", ""},
		{"{PLAIN} spaces kept ", " spaces kept ", ""},
		{"{PLAIN}", "", "sharedsecret {PLAIN} is empty"},
		{"", "", "sharedsecret is empty; register this host with smreghost"},
		{"{RC2}mJ3Vw8bq2nBQ1E0k7yQ2zB9Yp8tQ5d0h", "", "sharedsecret is in the vendor's {RC2} format, which agentlab cannot decrypt" + again},
		{"{AES}AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "", "sharedsecret is in the vendor's {AES} format, which agentlab cannot decrypt" + again},
		{"{XYZ}abc", "", "sharedsecret is in an unknown {XYZ} format, which agentlab cannot decrypt" + again},
		{"s3cret", "", "sharedsecret has no {...} prefix: a plain secret must be written {PLAIN}secret, and smreghost writes an encrypted {AL1} value"},
		{"{not a prefix} s3cret", "", "sharedsecret has no {...} prefix: a plain secret must be written {PLAIN}secret, and smreghost writes an encrypted {AL1} value"},
		{"{AL1}!!!", "", "sharedsecret {AL1} value is damaged (not base64: illegal base64 data at input byte 0)" + again},
		{"{AL1}AAAA", "", "sharedsecret {AL1} value is damaged (too short)" + again},
	}
	for _, tt := range tests {
		got, err := OpenSecret(tt.value, hostA)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("OpenSecret(%q) error %v\nwant %s", tt.value, err, tt.err)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("OpenSecret(%q) = %q, %v; want %q", tt.value, got, err, tt.want)
		}
	}
}

func TestSealSecretRejects(t *testing.T) {
	if _, err := SealSecret(nil, hostA); err == nil {
		t.Error("sealed an empty secret")
	}
	if _, err := SealSecret([]byte("s"), ""); err == nil {
		t.Error("sealed for an empty host identity")
	}
}

// TestCopiedSmHost registers on host A, copies the file to host B, and
// expects the vendor's "Shared secret incorrect" at the sharedsecret line.
func TestCopiedSmHost(t *testing.T) {
	v, err := SealSecret([]byte("s3cret"), hostA)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h, err := NewSmHost(filepath.Join(dir, "a", "SmHost.conf"), SmHost{
		HostName: "trust_wa1", SharedSecret: v, HostConfigObject: "hco.smps1",
		PolicyServers: []PolicyServer{{"smps2.shared.lab", 44441, 44442, 44443}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := h.Secret(hostA); err != nil || string(s) != "s3cret" {
		t.Fatalf("Secret on the registering host = %q, %v", s, err)
	}
	copied := filepath.Join(dir, "SmHost.conf")
	if err := os.WriteFile(copied, h.File.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := ReadSmHost(copied)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Secret(hostB)
	want := copied + ":2: Shared secret incorrect: this SmHost.conf was registered on another host (its secret is bound to the host that ran smreghost); register this host again with smreghost"
	if err == nil || err.Error() != want {
		t.Errorf("Secret on another host: %v\nwant %s", err, want)
	}
	var e *Error
	if !errors.As(err, &e) || e.Line != 2 || !errors.Is(err, ErrSecretIncorrect) {
		t.Errorf("error %#v", err)
	}
}

func TestVendorSecretRejected(t *testing.T) {
	for _, prefix := range []string{"{RC2}", "{AES}"} {
		h, err := ParseSmHost("SmHost.conf", []byte(strings.Replace(vendorSmHost, "{RC2}", prefix, 1)))
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.Secret(hostA)
		want := "SmHost.conf:2: sharedsecret is in the vendor's " + prefix + " format, which agentlab cannot decrypt; register this host again with smreghost"
		if err == nil || err.Error() != want {
			t.Errorf("%s: %v\nwant %s", prefix, err, want)
		}
	}
}

func TestHostIdentity(t *testing.T) {
	t.Setenv(HostIDEnv, "lab-host-1")
	if id, err := HostIdentity(); err != nil || id != "lab-host-1" {
		t.Errorf("HostIdentity with %s = %q, %v", HostIDEnv, id, err)
	}
	t.Setenv(HostIDEnv, "")
	id, err := HostIdentity()
	if err != nil {
		t.Skipf("no machine id here: %v", err)
	}
	name, _ := os.Hostname()
	mid, _ := os.ReadFile("/etc/machine-id")
	if len(mid) == 0 {
		mid, _ = os.ReadFile("/var/lib/dbus/machine-id")
	}
	if want := strings.TrimSpace(string(mid)) + "/" + name; id != want {
		t.Errorf("HostIdentity = %q, want %q", id, want)
	}
}
