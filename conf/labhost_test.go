package conf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// labFolder writes what a lab's out folder holds for its web server host:
// an SmHost.conf sealed to host, a WebAgent.conf naming it and, when
// labHost is not empty, a LabHost.conf.
func labFolder(t *testing.T, host, labHost string) string {
	t.Helper()
	dir := t.TempDir()
	sealed, err := SealSecret([]byte("the secret"), host)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := NewSmHost(filepath.Join(dir, "SmHost.conf"), SmHost{
		HostName: "trust_wa1", SharedSecret: sealed, HostConfigObject: "hco.smps1",
		PolicyServers: []PolicyServer{{Host: "smps1.shared.lab", AuthorizationPort: AuthorizationPort}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sm.File.WriteFile(filepath.Join(dir, "SmHost.conf"), 0o600); err != nil {
		t.Fatal(err)
	}
	wa, err := NewWebAgent(filepath.Join(dir, "WebAgent.conf"), WebAgent{HostConfigFile: "SmHost.conf", AgentConfigObject: "aco.wa1", EnableWebAgent: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := wa.File.WriteFile(filepath.Join(dir, "WebAgent.conf"), 0o644); err != nil {
		t.Fatal(err)
	}
	if labHost != "" {
		if err := WriteLabHost(dir, labHost); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLabHostRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := ReadLabHost(dir); ok || err != nil {
		t.Fatalf("ReadLabHost of a folder without one: %v, %v", ok, err)
	}
	if err := WriteLabHost(dir, "wa1.shared.lab"); err != nil {
		t.Fatal(err)
	}
	host, ok, err := ReadLabHost(dir)
	if host != "wa1.shared.lab" || !ok || err != nil {
		t.Errorf("ReadLabHost = %q, %v, %v", host, ok, err)
	}
	if err := WriteLabHost(dir, `a"b`); err == nil {
		t.Error("WriteLabHost wrote a name with a quote")
	}
}

func TestReadLabHostErrors(t *testing.T) {
	tests := []struct{ name, data, want string }{
		{"no host line", "# nothing\n", LabHostFile + `: no host="..." line`},
		{"empty host", "\nhost=\"\"\n", LabHostFile + ":2: host is empty"},
		{"bad line", "host=\"wa1\n", LabHostFile + ":1: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, LabHostFile), []byte(tt.data), 0o644)
			_, _, err := ReadLabHost(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestIdentityFor(t *testing.T) {
	machine, err := HostIdentity()
	if err != nil {
		t.Fatal(err)
	}
	withFile := labFolder(t, "wa1.shared.lab", "wa1.shared.lab")
	without := labFolder(t, "wa1.shared.lab", "")
	tests := []struct {
		name, env, dir string
		want           Identity
	}{
		{"the lab's file", "", withFile, Identity{ID: "wa1.shared.lab", From: filepath.Join(withFile, LabHostFile)}},
		{"the variable first", "wa2.shared.lab", withFile, Identity{ID: "wa2.shared.lab", From: HostIDEnv}},
		{"this machine", "", without, Identity{ID: machine}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(HostIDEnv, tt.env)
			got, err := IdentityFor(filepath.Join(tt.dir, "SmHost.conf"))
			if err != nil || got != tt.want {
				t.Errorf("IdentityFor = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// A lab's folder checks as it is; the same SmHost.conf without its
// LabHost.conf, or checked as another host, does not.
func TestCheckLabFolder(t *testing.T) {
	withFile := labFolder(t, "wa1.shared.lab", "wa1.shared.lab")
	without := labFolder(t, "wa1.shared.lab", "")
	tests := []struct {
		name, env, file string
		wantErr         error
		wantReport      string
	}{
		{"WebAgent.conf", "", filepath.Join(withFile, "WebAgent.conf"), nil, "sealed to lab host wa1.shared.lab (" + filepath.Join(withFile, LabHostFile) + ")"},
		{"SmHost.conf", "", filepath.Join(withFile, "SmHost.conf"), nil, "trust_wa1"},
		{"as the lab host", "wa1.shared.lab", filepath.Join(without, "WebAgent.conf"), nil, "sealed to wa1.shared.lab ($" + HostIDEnv + ")"},
		{"copied without LabHost.conf", "", filepath.Join(without, "WebAgent.conf"), ErrSecretIncorrect, ""},
		{"as another host", "another.host", filepath.Join(withFile, "SmHost.conf"), ErrSecretIncorrect, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(HostIDEnv, tt.env)
			res, err := Check(tt.file)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Check: %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := res.String(); !strings.Contains(s, tt.wantReport) {
				t.Errorf("the report lacks %q:\n%s", tt.wantReport, s)
			}
		})
	}
}
