package conf

import (
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultAgentWaitTime is how long a worker waits for the LLAWP when
// AgentWaitTime is absent.
const DefaultAgentWaitTime = Seconds(5 * time.Second)

// WebAgent is WebAgent.conf, one per web server instance (DOMAIN.md
// section 1). The file paths in it are resolved against the directory of
// the WebAgent.conf when they are relative, so that a lab can be moved
// as a whole; the values as written are in File.
type WebAgent struct {
	HostConfigFile    string // where SmHost.conf is
	AgentConfigObject string // which ACO to download
	EnableWebAgent    bool   // NO (the default): loaded but passive
	ServerPath        string // unique per web server instance; names the IPC endpoint
	LocalConfigFile   string
	LoadPlugin        []string
	AgentIdFile       string
	Locale            string
	AgentWaitTime     Seconds // how long a worker waits for the LLAWP to come up

	Lines WebAgentLines
	File  *File
}

// WebAgentLines has the 1-based line each WebAgent field was read from; 0
// means the key is absent.
type WebAgentLines struct {
	HostConfigFile, AgentConfigObject, EnableWebAgent, ServerPath, LocalConfigFile int
	LoadPlugin                                                                     []int
	AgentIdFile, Locale, AgentWaitTime                                             int
}

// ParseWebAgent reads WebAgent.conf's contents; path is used in errors and
// to resolve relative file paths.
func ParseWebAgent(path string, data []byte) (*WebAgent, error) {
	f, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	return webAgentFrom(f)
}

// ReadWebAgent reads and parses the WebAgent.conf at path.
func ReadWebAgent(path string) (*WebAgent, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, readError(path, err)
	}
	return ParseWebAgent(path, data)
}

func webAgentFrom(f *File) (*WebAgent, error) {
	w := &WebAgent{AgentWaitTime: DefaultAgentWaitTime, File: f}
	r := &fields{f: f}
	l := &w.Lines
	r.str("HostConfigFile", &w.HostConfigFile, &l.HostConfigFile, true, "the agent reads its bootstrap servers and shared secret from that SmHost.conf")
	r.str("AgentConfigObject", &w.AgentConfigObject, &l.AgentConfigObject, true, "the agent names the ACO it downloads with it")
	r.yesNo("EnableWebAgent", &w.EnableWebAgent, &l.EnableWebAgent)
	r.str("ServerPath", &w.ServerPath, &l.ServerPath, false, "")
	r.str("LocalConfigFile", &w.LocalConfigFile, &l.LocalConfigFile, false, "")
	for _, e := range f.All("LoadPlugin") {
		w.LoadPlugin = append(w.LoadPlugin, e.Value)
		l.LoadPlugin = append(l.LoadPlugin, e.Line)
	}
	r.str("AgentIdFile", &w.AgentIdFile, &l.AgentIdFile, false, "")
	r.str("LOCALE", &w.Locale, &l.Locale, false, "")
	r.seconds("AgentWaitTime", &w.AgentWaitTime, &l.AgentWaitTime)
	if err := r.err(); err != nil {
		return nil, err
	}
	dir := filepath.Dir(f.Path())
	for _, p := range []*string{&w.HostConfigFile, &w.LocalConfigFile, &w.AgentIdFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return w, nil
}

// NewWebAgent lays out a fresh WebAgent.conf for path in the vendor's style
// from w's fields (w.File and w.Lines are ignored; empty optional fields are
// left out) and returns it parsed back. File paths are written as given.
// Write it with File.WriteFile.
func NewWebAgent(path string, w WebAgent) (*WebAgent, error) {
	switch {
	case strings.TrimSpace(w.HostConfigFile) == "":
		return nil, &Error{File: path, Msg: "no SmHost.conf path for HostConfigFile"}
	case strings.TrimSpace(w.AgentConfigObject) == "":
		return nil, &Error{File: path, Msg: "no agent configuration object for AgentConfigObject"}
	}
	var b builder
	b.comment("# WebAgent.conf - configuration file for the Web Agent")
	b.comment("#")
	b.comment("# Written by agentlab in the vendor's layout. Keys are case-insensitive;")
	b.comment("# the agent reads this file when it starts.")
	b.comment("#")
	b.entry("HostConfigFile", w.HostConfigFile)
	b.entry("AgentConfigObject", w.AgentConfigObject)
	b.entry("EnableWebAgent", yesNo(w.EnableWebAgent))
	optional := func(key, value string) {
		if value != "" {
			b.entry(key, value)
		}
	}
	optional("ServerPath", w.ServerPath)
	optional("LocalConfigFile", w.LocalConfigFile)
	for _, p := range w.LoadPlugin {
		b.entry("LoadPlugin", p)
	}
	optional("AgentIdFile", w.AgentIdFile)
	optional("LOCALE", w.Locale)
	if w.AgentWaitTime != 0 && w.AgentWaitTime != DefaultAgentWaitTime {
		b.entry("AgentWaitTime", secondsString(w.AgentWaitTime))
	}
	b.comment(eofMarker)
	data, err := b.bytes(path)
	if err != nil {
		return nil, err
	}
	return ParseWebAgent(path, data)
}
