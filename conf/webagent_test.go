package conf

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseWebAgentVendor(t *testing.T) {
	w, err := ParseWebAgent("/etc/wa1/WebAgent.conf", []byte(vendorWebAgent))
	if err != nil {
		t.Fatal(err)
	}
	want := WebAgent{
		HostConfigFile:    "/opt/ca/webagent/config/SmHost.conf",
		AgentConfigObject: "aco.wa1",
		EnableWebAgent:    true,
		ServerPath:        "/opt/apache2/wa1",
		LoadPlugin:        []string{"/opt/ca/webagent/bin/libHttpPlugin.so", "/opt/ca/webagent/bin/libSAMLDataPlugin.so"},
		Locale:            "en-US",
		AgentWaitTime:     Seconds(5 * time.Second),
		Lines: WebAgentLines{
			HostConfigFile: 6, AgentConfigObject: 7, EnableWebAgent: 8, ServerPath: 9,
			LoadPlugin: []int{11, 12}, Locale: 14,
		},
	}
	if string(w.File.Bytes()) != vendorWebAgent {
		t.Error("File does not give back the input")
	}
	w.File = nil
	if !reflect.DeepEqual(*w, want) {
		t.Errorf("got  %+v\nwant %+v", *w, want)
	}
}

const minimalWebAgent = "HostConfigFile=\"SmHost.conf\"\r\nAgentConfigObject=\"aco\"\r\n"

func TestParseWebAgentAccepts(t *testing.T) {
	tests := []struct {
		name, path, extra string
		check             func(*WebAgent) bool
	}{
		{"defaults and relative path", "/lab/wa1/WebAgent.conf", "", func(w *WebAgent) bool {
			return w.HostConfigFile == "/lab/wa1/SmHost.conf" && !w.EnableWebAgent && w.AgentWaitTime.D() == 5*time.Second &&
				w.LoadPlugin == nil && w.Lines.EnableWebAgent == 0
		}},
		{"relative path, relative conf", "WebAgent.conf", "", func(w *WebAgent) bool { return w.HostConfigFile == "SmHost.conf" }},
		{"relative path, relative dir", "lab/WebAgent.conf", "", func(w *WebAgent) bool { return w.HostConfigFile == "lab/SmHost.conf" }},
		{"relative with dots", "/lab/wa1/WebAgent.conf", `hostconfigfile="../shared/SmHost.conf"`, func(w *WebAgent) bool {
			return w.HostConfigFile == "/lab/shared/SmHost.conf" && w.Lines.HostConfigFile == 3
		}},
		{"other file paths resolved", "/lab/WebAgent.conf", "LocalConfigFile=\"LocalConfig.conf\"\nAgentIdFile=\"/var/wa/AgentId.dat\"", func(w *WebAgent) bool {
			return w.LocalConfigFile == "/lab/LocalConfig.conf" && w.AgentIdFile == "/var/wa/AgentId.dat" &&
				w.Lines.LocalConfigFile == 3 && w.Lines.AgentIdFile == 4
		}},
		{"enable YES", "/w/WebAgent.conf", `EnableWebAgent="YES"`, func(w *WebAgent) bool { return w.EnableWebAgent && w.Lines.EnableWebAgent == 3 }},
		{"enable lower case", "/w/WebAgent.conf", `enablewebagent="yes"`, func(w *WebAgent) bool { return w.EnableWebAgent }},
		{"wait time", "/w/WebAgent.conf", `AgentWaitTime="30"`, func(w *WebAgent) bool { return w.AgentWaitTime.D() == 30*time.Second }},
		{"locale key spelling", "/w/WebAgent.conf", `Locale="ja_JP"`, func(w *WebAgent) bool { return w.Locale == "ja_JP" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := ParseWebAgent(tt.path, []byte(minimalWebAgent+tt.extra+"\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(w) {
				t.Errorf("unexpected %+v", *w)
			}
		})
	}
}

func TestParseWebAgentRejects(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no HostConfigFile", "AgentConfigObject=\"aco\"\n",
			`WebAgent.conf: no HostConfigFile="..." line: the agent reads its bootstrap servers and shared secret from that SmHost.conf`},
		{"no AgentConfigObject", "HostConfigFile=\"SmHost.conf\"\n",
			`WebAgent.conf: no AgentConfigObject="..." line: the agent names the ACO it downloads with it`},
		{"empty AgentConfigObject", "HostConfigFile=\"SmHost.conf\"\nAgentConfigObject=\"\"\n",
			`WebAgent.conf:2: AgentConfigObject is empty: the agent names the ACO it downloads with it`},
		{"enable", minimalWebAgent + "EnableWebAgent=\"1\"\n", `WebAgent.conf:3: EnableWebAgent must be YES or NO, got "1"`},
		{"wait time", minimalWebAgent + "AgentWaitTime=\"five\"\n",
			`WebAgent.conf:3: AgentWaitTime must be a whole number of seconds from 1 to 2147483647, got "five"`},
		{"syntax", "# WebAgent.conf\nSmInitFile /etc/WebAgent.conf\n", `WebAgent.conf:2: no "=" in "SmInitFile /etc/WebAgent.conf": want key="value", a # comment or a blank line`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseWebAgent("WebAgent.conf", []byte(tt.in))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want *Error", err, err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestNewWebAgent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "WebAgent.conf")
	w, err := NewWebAgent(path, WebAgent{
		HostConfigFile:    "SmHost.conf",
		AgentConfigObject: "aco.wa1",
		ServerPath:        "/lab/wa1",
		LoadPlugin:        []string{"libHttpPlugin.so"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "# WebAgent.conf - configuration file for the Web Agent\r\n" +
		"#\r\n" +
		"# Written by agentlab in the vendor's layout. Keys are case-insensitive;\r\n" +
		"# the agent reads this file when it starts.\r\n" +
		"#\r\n" +
		"HostConfigFile=\"SmHost.conf\"\r\n" +
		"AgentConfigObject=\"aco.wa1\"\r\n" +
		"EnableWebAgent=\"NO\"\r\n" +
		"ServerPath=\"/lab/wa1\"\r\n" +
		"LoadPlugin=\"libHttpPlugin.so\"\r\n" +
		"# <EOF>\r\n"
	if got := string(w.File.Bytes()); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	if w.HostConfigFile != filepath.Join(dir, "SmHost.conf") {
		t.Errorf("HostConfigFile = %q", w.HostConfigFile)
	}
	if err := w.File.WriteFile(path, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := ReadWebAgent(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.File.Set("EnableWebAgent", "YES"); err != nil {
		t.Fatal(err)
	}
	if got := string(r.File.Bytes()); got != strings.Replace(want, `EnableWebAgent="NO"`, `EnableWebAgent="YES"`, 1) {
		t.Errorf("after Set: %q", got)
	}
}

func TestNewWebAgentAllFields(t *testing.T) {
	in := WebAgent{
		HostConfigFile:    "/lab/SmHost.conf",
		AgentConfigObject: "aco",
		EnableWebAgent:    true,
		ServerPath:        "/sp",
		LocalConfigFile:   "/lab/LocalConfig.conf",
		LoadPlugin:        []string{"a.so", "b.so"},
		AgentIdFile:       "/lab/AgentId.dat",
		Locale:            "en-US",
		AgentWaitTime:     Seconds(9 * time.Second),
	}
	w, err := NewWebAgent("/lab/WebAgent.conf", in)
	if err != nil {
		t.Fatal(err)
	}
	got := *w
	got.File, got.Lines = nil, WebAgentLines{}
	if !reflect.DeepEqual(got, in) {
		t.Errorf("got  %+v\nwant %+v", got, in)
	}
	// The default wait time is left out, as the vendor's files do.
	in.AgentWaitTime = 0
	w, err = NewWebAgent("/lab/WebAgent.conf", in)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := w.File.Get("AgentWaitTime"); ok || w.AgentWaitTime != DefaultAgentWaitTime {
		t.Errorf("AgentWaitTime written for the default: %v", w.AgentWaitTime)
	}
}

func TestNewWebAgentRejects(t *testing.T) {
	for _, tt := range []struct {
		in   WebAgent
		want string
	}{
		{WebAgent{AgentConfigObject: "aco"}, "WebAgent.conf: no SmHost.conf path for HostConfigFile"},
		{WebAgent{HostConfigFile: "SmHost.conf"}, "WebAgent.conf: no agent configuration object for AgentConfigObject"},
		{WebAgent{HostConfigFile: "SmHost.conf", AgentConfigObject: "aco", LoadPlugin: []string{"a\"b"}},
			"WebAgent.conf: the value of LoadPlugin has a quote, which the file format cannot hold"},
	} {
		if _, err := NewWebAgent("WebAgent.conf", tt.in); err == nil || err.Error() != tt.want {
			t.Errorf("error %v, want %s", err, tt.want)
		}
	}
}
