package conf

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSmHostVendor(t *testing.T) {
	h, err := ParseSmHost("SmHost.conf", []byte(vendorSmHost))
	if err != nil {
		t.Fatal(err)
	}
	want := SmHost{
		HostName:         "trust_wa1",
		SharedSecret:     "{RC2}mJ3Vw8bq2nBQ1E0k7yQ2zB9Yp8tQ5d0hJ1Xx4WvZ3c6pDz5Qq1tq9w==",
		SharedSecretTime: 0,
		EnableDynamicHCO: false,
		HostConfigObject: "hco.smps1",
		PolicyServers: []PolicyServer{
			{"smps2.shared.lab", 44441, 44442, 44443},
			{"smps1.shared.lab", 44441, 44442, 44443},
		},
		RequestTimeout: Seconds(60 * time.Second),
		CryptoProvider: "ETPKI",
		FIPSMode:       FIPSCompat,
		Lines: SmHostLines{
			HostName: 1, SharedSecret: 2, SharedSecretTime: 3, EnableDynamicHCO: 4, HostConfigObject: 5,
			PolicyServers:  []int{7, 8},
			RequestTimeout: 9, CryptoProvider: 10, FIPSMode: 11,
		},
	}
	if h.File == nil || string(h.File.Bytes()) != vendorSmHost {
		t.Errorf("File does not give back the input")
	}
	h.File = nil
	if !reflect.DeepEqual(*h, want) {
		t.Errorf("got  %+v\nwant %+v", *h, want)
	}
}

const minimalSmHost = "hostname=\"h\"\nsharedsecret=\"{PLAIN}s\"\nhostconfigobject=\"hco\"\npolicyserver=\"ps\"\n"

func TestParseSmHostAccepts(t *testing.T) {
	tests := []struct {
		name, extra string
		check       func(*SmHost) bool
	}{
		{"defaults", "", func(h *SmHost) bool {
			return h.RequestTimeout == Seconds(60*time.Second) && h.CryptoProvider == "ETPKI" && h.FIPSMode == FIPSCompat &&
				!h.EnableDynamicHCO && h.SharedSecretTime == 0 &&
				reflect.DeepEqual(h.PolicyServers, []PolicyServer{{"ps", 44441, 44442, 44443}}) &&
				h.Lines.RequestTimeout == 0 && h.Lines.FIPSMode == 0
		}},
		{"dynamic hco YES", `enabledynamichco="YES"`, func(h *SmHost) bool { return h.EnableDynamicHCO && h.Lines.EnableDynamicHCO == 5 }},
		{"dynamic hco lower case", `EnableDynamicHCO="yes"`, func(h *SmHost) bool { return h.EnableDynamicHCO }},
		{"dynamic hco NO", `enabledynamichco="NO"`, func(h *SmHost) bool { return !h.EnableDynamicHCO && h.Lines.EnableDynamicHCO == 5 }},
		{"fips MIGRATE", `fipsmode="MIGRATE"`, func(h *SmHost) bool { return h.FIPSMode == FIPSMigrate }},
		{"fips only lower case", `fipsmode="only"`, func(h *SmHost) bool { return h.FIPSMode == FIPSOnly }},
		{"request timeout", `requesttimeout="15"`, func(h *SmHost) bool { return h.RequestTimeout.D() == 15*time.Second }},
		{"request timeout unquoted", `requesttimeout = 30 # seconds`, func(h *SmHost) bool { return h.RequestTimeout.D() == 30*time.Second }},
		{"secret time", `sharedsecrettime="1492214400"`, func(h *SmHost) bool { return h.SharedSecretTime == 1492214400 }},
		{"crypto provider", `cryptoprovider="OTHER"`, func(h *SmHost) bool { return h.CryptoProvider == "OTHER" }},
		{"authorization port only", `policyserver="ps2,0,0,44443"`, func(h *SmHost) bool {
			return len(h.PolicyServers) == 2 && h.PolicyServers[1] == PolicyServer{"ps2", 0, 0, 44443} &&
				reflect.DeepEqual(h.Lines.PolicyServers, []int{4, 5})
		}},
		{"last single key wins", `hostname="h2"`, func(h *SmHost) bool { return h.HostName == "h2" && h.Lines.HostName == 5 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseSmHost("SmHost.conf", []byte(minimalSmHost+tt.extra+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(h) {
				t.Errorf("unexpected %+v", *h)
			}
		})
	}
}

func TestParseSmHostRejects(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no hostname", strings.Replace(minimalSmHost, "hostname=\"h\"\n", "", 1),
			`SmHost.conf: no hostname="..." line: smreghost writes it; register this host again with smreghost`},
		{"no sharedsecret", strings.Replace(minimalSmHost, "sharedsecret=\"{PLAIN}s\"\n", "", 1),
			`SmHost.conf: no sharedsecret="..." line: smreghost writes it; register this host again with smreghost`},
		{"no hostconfigobject", strings.Replace(minimalSmHost, "hostconfigobject=\"hco\"\n", "", 1),
			`SmHost.conf: no hostconfigobject="..." line: smreghost writes it; register this host again with smreghost`},
		{"no policyserver", strings.Replace(minimalSmHost, "policyserver=\"ps\"\n", "# policyserver=\"ps\"\n", 1),
			`SmHost.conf: no policyserver="..." line: the agent needs at least one Policy Server to fetch its HCO from`},
		{"empty file", "", `SmHost.conf: no hostname="..." line: smreghost writes it; register this host again with smreghost`},
		{"empty hostname", strings.Replace(minimalSmHost, `hostname="h"`, `hostname="  "`, 1),
			`SmHost.conf:1: hostname is empty: smreghost writes it; register this host again with smreghost`},
		{"bad policyserver", minimalSmHost + "policyserver=\"ps2,44441,44442\"\n",
			`SmHost.conf:5: policy server "ps2,44441,44442": want host,accounting,authentication,authorization ports, got 3 fields`},
		{"policyserver bad port", minimalSmHost + "policyserver=\"ps2,1,2,70000\"\n",
			`SmHost.conf:5: policy server "ps2,1,2,70000": port "70000" is not a number from 0 to 65535`},
		{"policyserver all ports 0", minimalSmHost + "policyserver=\"ps2,0,0,0\"\n",
			`SmHost.conf:5: policy server "ps2,0,0,0": every port is 0 (none)`},
		{"policyserver empty", minimalSmHost + "policyserver=\"\"\n", `SmHost.conf:5: policy server "": empty host name`},
		{"request timeout not a number", minimalSmHost + "requesttimeout=\"60s\"\n",
			`SmHost.conf:5: requesttimeout must be a whole number of seconds from 1 to 2147483647, got "60s"`},
		{"request timeout zero", minimalSmHost + "requesttimeout=\"0\"\n",
			`SmHost.conf:5: requesttimeout must be a whole number of seconds from 1 to 2147483647, got "0"`},
		{"request timeout huge", minimalSmHost + "requesttimeout=\"99999999999999999999\"\n",
			`SmHost.conf:5: requesttimeout must be a whole number of seconds from 1 to 2147483647, got "99999999999999999999"`},
		{"fipsmode", minimalSmHost + "fipsmode=\"FIPS\"\n", `SmHost.conf:5: fipsmode must be COMPAT, MIGRATE or ONLY, got "FIPS"`},
		{"enabledynamichco", minimalSmHost + "enabledynamichco=\"TRUE\"\n", `SmHost.conf:5: enabledynamichco must be YES or NO, got "TRUE"`},
		{"sharedsecrettime", minimalSmHost + "sharedsecrettime=\"-1\"\n", `SmHost.conf:5: sharedsecrettime must be a whole number from 0 to 2147483647, got "-1"`},
		{"syntax error", minimalSmHost + "requesttimeout=\"60\n", `SmHost.conf:5: unterminated quote in the value of requesttimeout`},
		// The earliest bad line is reported, and a missing key only after.
		{"earliest line first", "fipsmode=\"X\"\nrequesttimeout=\"x\"\n", `SmHost.conf:1: fipsmode must be COMPAT, MIGRATE or ONLY, got "X"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSmHost("SmHost.conf", []byte(tt.in))
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

func TestNewSmHost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "SmHost.conf")
	h, err := NewSmHost(path, SmHost{
		HostName:         "trust_wa1",
		SharedSecret:     "{PLAIN}s3cret",
		HostConfigObject: "hco.smps1",
		PolicyServers:    []PolicyServer{{"smps2.shared.lab", 44441, 44442, 44443}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "hostname=\"trust_wa1\"\r\n" +
		"sharedsecret=\"{PLAIN}s3cret\"\r\n" +
		"sharedsecrettime=\"0\"\r\n" +
		"enabledynamichco=\"NO\"\r\n" +
		"hostconfigobject=\"hco.smps1\"\r\n" +
		"# Add additional bootstrap policy servers here for fault tolerance.\r\n" +
		"policyserver=\"smps2.shared.lab,44441,44442,44443\"\r\n" +
		"requesttimeout=\"60\"\r\n" +
		"cryptoprovider=\"ETPKI\"\r\n" +
		"fipsmode=\"COMPAT\"\r\n" +
		"# <EOF>\r\n"
	if got := string(h.File.Bytes()); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if err := h.File.WriteFile(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := ReadSmHost(path)
	if err != nil {
		t.Fatal(err)
	}
	if r.HostName != "trust_wa1" || r.Lines.PolicyServers[0] != 7 || r.File.Path() != path {
		t.Errorf("read back %+v", *r)
	}
	// A backup server added later goes with the first, before # <EOF>.
	if err := r.File.Add("policyserver", "smps1.shared.lab,44441,44442,44443"); err != nil {
		t.Fatal(err)
	}
	r2, err := ParseSmHost(path, r.File.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(r2.PolicyServers) != 2 || r2.Lines.PolicyServers[1] != 8 || r2.Lines.FIPSMode != 11 {
		t.Errorf("after Add: %+v", *r2)
	}
}

func TestNewSmHostAllFields(t *testing.T) {
	in := SmHost{
		HostName:         "trust_wa1",
		SharedSecret:     "{PLAIN}x",
		SharedSecretTime: 1492214400,
		EnableDynamicHCO: true,
		HostConfigObject: "hco.smps1",
		PolicyServers:    []PolicyServer{{"a", 0, 0, 44443}, {"b", 1, 2, 3}},
		RequestTimeout:   Seconds(15 * time.Second),
		CryptoProvider:   "X",
		FIPSMode:         FIPSOnly,
	}
	h, err := NewSmHost("SmHost.conf", in)
	if err != nil {
		t.Fatal(err)
	}
	got := *h
	got.File, got.Lines = nil, SmHostLines{}
	if !reflect.DeepEqual(got, in) {
		t.Errorf("got  %+v\nwant %+v", got, in)
	}
}

func TestNewSmHostRejects(t *testing.T) {
	ok := SmHost{HostName: "h", SharedSecret: "{PLAIN}s", HostConfigObject: "hco", PolicyServers: []PolicyServer{{"ps", 0, 0, 44443}}}
	tests := []struct {
		name string
		edit func(*SmHost)
		want string
	}{
		{"no host name", func(h *SmHost) { h.HostName = "" }, "SmHost.conf: no trusted host name for hostname"},
		{"no secret", func(h *SmHost) { h.SharedSecret = "" }, "SmHost.conf: no shared secret for sharedsecret"},
		{"no hco", func(h *SmHost) { h.HostConfigObject = " " }, "SmHost.conf: no host configuration object for hostconfigobject"},
		{"no server", func(h *SmHost) { h.PolicyServers = nil }, "SmHost.conf: no bootstrap policy server"},
		{"newline in host name", func(h *SmHost) { h.HostName = "h\npolicyserver=\"evil\"" },
			"SmHost.conf: the value of hostname has control character U+000A"},
		{"quote in hco", func(h *SmHost) { h.HostConfigObject = `a"b` },
			"SmHost.conf: the value of hostconfigobject has a quote, which the file format cannot hold"},
		{"bad server", func(h *SmHost) { h.PolicyServers = []PolicyServer{{"ps", 0, 0, 0}} },
			`SmHost.conf:7: policy server "ps,0,0,0": every port is 0 (none)`},
		{"bad fips mode", func(h *SmHost) { h.FIPSMode = "X" }, `SmHost.conf:10: fipsmode must be COMPAT, MIGRATE or ONLY, got "X"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := ok
			tt.edit(&in)
			_, err := NewSmHost("SmHost.conf", in)
			if err == nil || err.Error() != tt.want {
				t.Errorf("error %v, want %s", err, tt.want)
			}
		})
	}
}
