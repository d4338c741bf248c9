package conf

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// FIPSMode is the cryptography mode an agent registered with.
type FIPSMode string

const (
	FIPSCompat  FIPSMode = "COMPAT"
	FIPSMigrate FIPSMode = "MIGRATE"
	FIPSOnly    FIPSMode = "ONLY"
)

// SmHost.conf defaults, applied when a key is absent.
const (
	DefaultRequestTimeout = Seconds(60 * time.Second)
	DefaultCryptoProvider = "ETPKI"
	DefaultFIPSMode       = FIPSCompat
)

// SmHost is SmHost.conf, the bootstrap file smreghost writes when it
// registers a trusted host (DOMAIN.md section 1).
type SmHost struct {
	HostName         string // the trusted host name, sent in clear on every connection
	SharedSecret     string // as in the file; Secret decrypts it
	SharedSecretTime int    // 0: never rolled over since registration
	EnableDynamicHCO bool
	HostConfigObject string
	// PolicyServers are for bootstrap only: once the HCO arrives, its
	// server list is the one the agent uses.
	PolicyServers  []PolicyServer
	RequestTimeout Seconds
	CryptoProvider string
	FIPSMode       FIPSMode

	Lines SmHostLines
	File  *File
}

// SmHostLines has the 1-based line each SmHost field was read from, for
// errors found later (an unreachable server, a wrong secret); 0 means the
// key is absent and the field has its default.
type SmHostLines struct {
	HostName, SharedSecret, SharedSecretTime, EnableDynamicHCO, HostConfigObject int
	PolicyServers                                                                []int
	RequestTimeout, CryptoProvider, FIPSMode                                     int
}

const registerAgain = "smreghost writes it; register this host again with smreghost"

// ParseSmHost reads SmHost.conf's contents; path is used in errors.
func ParseSmHost(path string, data []byte) (*SmHost, error) {
	f, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	return smHostFrom(f)
}

// ReadSmHost reads and parses the SmHost.conf at path.
func ReadSmHost(path string) (*SmHost, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, readError(path, err)
	}
	return ParseSmHost(path, data)
}

func smHostFrom(f *File) (*SmHost, error) {
	h := &SmHost{
		RequestTimeout: DefaultRequestTimeout,
		CryptoProvider: DefaultCryptoProvider,
		FIPSMode:       DefaultFIPSMode,
		File:           f,
	}
	r := &fields{f: f}
	l := &h.Lines
	r.str("hostname", &h.HostName, &l.HostName, true, registerAgain)
	r.str("sharedsecret", &h.SharedSecret, &l.SharedSecret, true, registerAgain)
	r.count("sharedsecrettime", &h.SharedSecretTime, &l.SharedSecretTime)
	r.yesNo("enabledynamichco", &h.EnableDynamicHCO, &l.EnableDynamicHCO)
	r.str("hostconfigobject", &h.HostConfigObject, &l.HostConfigObject, true, registerAgain)
	ps := f.All("policyserver")
	if len(ps) == 0 {
		r.fail(0, `no policyserver="..." line: the agent needs at least one Policy Server to fetch its HCO from`)
	}
	for _, e := range ps {
		p, err := ParsePolicyServer(e.Value)
		if err != nil {
			r.fail(e.Line, "%s", err)
			continue
		}
		h.PolicyServers = append(h.PolicyServers, p)
		l.PolicyServers = append(l.PolicyServers, e.Line)
	}
	r.seconds("requesttimeout", &h.RequestTimeout, &l.RequestTimeout)
	r.str("cryptoprovider", &h.CryptoProvider, &l.CryptoProvider, false, "")
	if v, n, ok := f.Get("fipsmode"); ok {
		switch m := FIPSMode(strings.ToUpper(strings.TrimSpace(v))); m {
		case FIPSCompat, FIPSMigrate, FIPSOnly:
			h.FIPSMode, l.FIPSMode = m, n
		default:
			r.fail(n, "fipsmode must be COMPAT, MIGRATE or ONLY, got %q", v)
		}
	}
	if err := r.err(); err != nil {
		return nil, err
	}
	return h, nil
}

// Secret returns the shared secret, decrypted for hostID (see HostIdentity).
// Its errors point at the sharedsecret line.
func (h *SmHost) Secret(hostID string) ([]byte, error) {
	s, err := OpenSecret(h.SharedSecret, hostID)
	if err != nil {
		return nil, &Error{File: h.File.Path(), Line: h.Lines.SharedSecret, Msg: err.Error(), Err: err}
	}
	return s, nil
}

// NewSmHost lays out a fresh SmHost.conf for path the way smreghost does,
// from h's typed fields (h.File and h.Lines are ignored; zero values get the
// defaults), and returns it parsed back, so that what is written is known to
// read. h.SharedSecret must already be in its file form: see SealSecret.
// Write it with File.WriteFile.
func NewSmHost(path string, h SmHost) (*SmHost, error) {
	if h.RequestTimeout == 0 {
		h.RequestTimeout = DefaultRequestTimeout
	}
	if h.CryptoProvider == "" {
		h.CryptoProvider = DefaultCryptoProvider
	}
	if h.FIPSMode == "" {
		h.FIPSMode = DefaultFIPSMode
	}
	// Checked here so that the message speaks to the caller, not to a
	// user reading the file.
	switch {
	case strings.TrimSpace(h.HostName) == "":
		return nil, &Error{File: path, Msg: "no trusted host name for hostname"}
	case h.SharedSecret == "":
		return nil, &Error{File: path, Msg: "no shared secret for sharedsecret"}
	case strings.TrimSpace(h.HostConfigObject) == "":
		return nil, &Error{File: path, Msg: "no host configuration object for hostconfigobject"}
	case len(h.PolicyServers) == 0:
		return nil, &Error{File: path, Msg: "no bootstrap policy server"}
	}
	var w builder
	w.entry("hostname", h.HostName)
	w.entry("sharedsecret", h.SharedSecret)
	w.entry("sharedsecrettime", strconv.Itoa(h.SharedSecretTime))
	w.entry("enabledynamichco", yesNo(h.EnableDynamicHCO))
	w.entry("hostconfigobject", h.HostConfigObject)
	w.comment("# Add additional bootstrap policy servers here for fault tolerance.")
	for _, p := range h.PolicyServers {
		w.entry("policyserver", p.String())
	}
	w.entry("requesttimeout", secondsString(h.RequestTimeout))
	w.entry("cryptoprovider", h.CryptoProvider)
	w.entry("fipsmode", string(h.FIPSMode))
	w.comment(eofMarker)
	data, err := w.bytes(path)
	if err != nil {
		return nil, err
	}
	return ParseSmHost(path, data)
}
