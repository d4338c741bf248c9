package conf

import (
	"fmt"
	"os"
	"strings"
)

// Checked is what an agent would use from a WebAgent.conf and the
// SmHost.conf it names, or from an SmHost.conf alone.
type Checked struct {
	WebAgent *WebAgent // nil when an SmHost.conf was checked alone
	SmHost   *SmHost
	// Identity opened the shared secret (IdentityFor).
	Identity Identity
}

// Check reads path as a WebAgent.conf (it has HostConfigFile) or an
// SmHost.conf, follows a WebAgent.conf to its SmHost.conf, and checks that
// the shared secret opens for the SmHost.conf's host (IdentityFor: a lab's
// folder names its host). Every error names the file and line.
func Check(path string) (*Checked, error) {
	f, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := &Checked{}
	smPath := path
	if _, _, ok := f.Get("hostconfigfile"); ok {
		if out.WebAgent, err = webAgentFrom(f); err != nil {
			return nil, err
		}
		smPath = out.WebAgent.HostConfigFile
		if _, err := os.Stat(smPath); err != nil {
			return nil, &Error{File: path, Line: out.WebAgent.Lines.HostConfigFile, Msg: fmt.Sprintf("HostConfigFile %s: %v", smPath, rootCause(err))}
		}
		if f, err = ReadFile(smPath); err != nil {
			return nil, err
		}
	} else if _, _, ok := f.Get("hostname"); !ok {
		if _, _, ok := f.Get("sharedsecret"); !ok {
			return nil, &Error{File: path, Msg: "neither a WebAgent.conf (no HostConfigFile) nor an SmHost.conf (no hostname or sharedsecret)"}
		}
	}
	if out.SmHost, err = smHostFrom(f); err != nil {
		return nil, err
	}
	if out.Identity, err = IdentityFor(smPath); err != nil {
		return nil, err
	}
	if _, err := out.SmHost.Secret(out.Identity.ID); err != nil {
		return nil, err
	}
	return out, nil
}

func rootCause(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// String is the report `agentlab conf check` prints.
func (c *Checked) String() string {
	var b strings.Builder
	line := func(label, value string, n int) {
		if n > 0 {
			fmt.Fprintf(&b, "  %-28s %-40s (line %d)\n", label, value, n)
		} else {
			fmt.Fprintf(&b, "  %-28s %s\n", label, value)
		}
	}
	if w := c.WebAgent; w != nil {
		fmt.Fprintf(&b, "%s (WebAgent.conf)\n", w.File.Path())
		line("agent configuration object", w.AgentConfigObject, w.Lines.AgentConfigObject)
		line("EnableWebAgent", yesNo(w.EnableWebAgent), w.Lines.EnableWebAgent)
		line("HostConfigFile", w.HostConfigFile, w.Lines.HostConfigFile)
		if w.ServerPath != "" {
			line("ServerPath", w.ServerPath, w.Lines.ServerPath)
		}
		line("AgentWaitTime", secondsString(w.AgentWaitTime)+" s", w.Lines.AgentWaitTime)
	}
	s := c.SmHost
	fmt.Fprintf(&b, "%s (SmHost.conf)\n", s.File.Path())
	line("trusted host", s.HostName, s.Lines.HostName)
	kind := "sealed to this host"
	switch id := c.Identity; {
	case strings.HasPrefix(s.SharedSecret, PlainPrefix):
		kind = "plain (hand-written lab)"
	case id.From == HostIDEnv:
		kind = fmt.Sprintf("sealed to %s ($%s)", id.ID, HostIDEnv)
	case id.From != "":
		kind = fmt.Sprintf("sealed to lab host %s (%s)", id.ID, id.From)
	}
	line("shared secret", kind, s.Lines.SharedSecret)
	line("host configuration object", s.HostConfigObject, s.Lines.HostConfigObject)
	line("request timeout", secondsString(s.RequestTimeout)+" s", s.Lines.RequestTimeout)
	line("FIPS mode", string(s.FIPSMode), s.Lines.FIPSMode)
	line("dynamic HCO", yesNo(s.EnableDynamicHCO), s.Lines.EnableDynamicHCO)
	fmt.Fprintf(&b, "  bootstrap servers, tried in order (after the HCO arrives, its own list counts):\n")
	for i, p := range s.PolicyServers {
		n := 0
		if i < len(s.Lines.PolicyServers) {
			n = s.Lines.PolicyServers[i]
		}
		fmt.Fprintf(&b, "    %d. %-38s ports accounting %s, authentication %s, authorization %s (line %d)\n",
			i+1, p.Addr(), portText(p.AccountingPort), portText(p.AuthenticationPort), portText(p.AuthorizationPort), n)
	}
	if c.WebAgent != nil {
		fmt.Fprintf(&b, "The agent will fetch HCO %s from the first bootstrap server that answers, reset that connection,\n"+
			"then open sockets to every server the HCO lists and download ACO %s.\n", s.HostConfigObject, c.WebAgent.AgentConfigObject)
	}
	return b.String()
}

func portText(p int) string {
	if p == 0 {
		return "none"
	}
	return fmt.Sprint(p)
}
