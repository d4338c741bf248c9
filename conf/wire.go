package conf

import (
	"time"

	"github.com/agentlab/agentlab/proto/tlipb"
)

// The HCO and ACO travel as protobuf messages (proto/tli.proto). Both
// directions of the mapping live here, beside the types, so that the Policy
// Server that sends them and the agent that reads them cannot drift apart.

// Proto puts a Host Configuration Object on the wire.
func (h HCO) Proto() *tlipb.HostConfig {
	out := &tlipb.HostConfig{
		Name: h.Name, EnableFailover: h.EnableFailover,
		MinSocketsPerPort: uint32(h.MinSocketsPerPort), NewSocketStep: uint32(h.NewSocketStep),
		MaxSocketsPerPort: uint32(h.MaxSocketsPerPort), RequestTimeoutSeconds: uint32(h.RequestTimeout.D() / time.Second),
		FailoverThresholdPercent: uint32(h.FailoverThreshold),
	}
	for _, p := range h.PolicyServers {
		out.PolicyServers = append(out.PolicyServers, p.proto())
	}
	for _, c := range h.Clusters {
		pc := &tlipb.Cluster{}
		for _, p := range c {
			pc.Servers = append(pc.Servers, p.proto())
		}
		out.Clusters = append(out.Clusters, pc)
	}
	return out
}

// HCOFromProto reads a Host Configuration Object off the wire and checks it:
// an agent must not build pools from an HCO it cannot use.
func HCOFromProto(m *tlipb.HostConfig) (HCO, error) {
	h := HCO{
		Name: m.GetName(), EnableFailover: m.GetEnableFailover(),
		MinSocketsPerPort: int(m.GetMinSocketsPerPort()), NewSocketStep: int(m.GetNewSocketStep()),
		MaxSocketsPerPort: int(m.GetMaxSocketsPerPort()), RequestTimeout: Seconds(time.Duration(m.GetRequestTimeoutSeconds()) * time.Second),
		FailoverThreshold: int(m.GetFailoverThresholdPercent()),
	}
	for _, p := range m.GetPolicyServers() {
		h.PolicyServers = append(h.PolicyServers, policyServerFromProto(p))
	}
	for _, c := range m.GetClusters() {
		var cl []PolicyServer
		for _, p := range c.GetServers() {
			cl = append(cl, policyServerFromProto(p))
		}
		h.Clusters = append(h.Clusters, cl)
	}
	return h, h.Validate()
}

func (p PolicyServer) proto() *tlipb.PolicyServerAddr {
	return &tlipb.PolicyServerAddr{Host: p.Host, AccountingPort: uint32(p.AccountingPort),
		AuthenticationPort: uint32(p.AuthenticationPort), AuthorizationPort: uint32(p.AuthorizationPort)}
}

func policyServerFromProto(p *tlipb.PolicyServerAddr) PolicyServer {
	return PolicyServer{Host: p.GetHost(), AccountingPort: int(p.GetAccountingPort()),
		AuthenticationPort: int(p.GetAuthenticationPort()), AuthorizationPort: int(p.GetAuthorizationPort())}
}

// Proto puts an Agent Configuration Object on the wire.
func (a ACO) Proto() *tlipb.AgentConfig {
	return &tlipb.AgentConfig{
		Name: a.Name, DefaultAgentName: a.DefaultAgentName, AgentNames: a.AgentNames,
		PsPollIntervalSeconds:       uint32(a.PSPollInterval.D() / time.Second),
		MaxResourceCacheSize:        uint32(a.MaxResourceCacheSize),
		ResourceCacheTimeoutSeconds: uint32(a.ResourceCacheTimeout.D() / time.Second),
		MaxSessionCacheSize:         uint32(a.MaxSessionCacheSize),
		LogFile:                     a.LogFile, LogFileName: a.LogFileName, LogAppend: a.LogAppend,
		LogFileSizeMb: uint32(a.LogFileSize), LogLocalTime: a.LogLocalTime,
		TraceFile: a.TraceFile, TraceFileName: a.TraceFileName, TraceFileSizeMb: uint32(a.TraceFileSize),
		TraceConfigFile: a.TraceConfigFile, AllowLocalConfig: a.AllowLocalConfig, Extra: a.Extra,
	}
}

// ACOFromProto reads an Agent Configuration Object off the wire and checks it.
func ACOFromProto(m *tlipb.AgentConfig) (ACO, error) {
	a := ACO{
		Name: m.GetName(), DefaultAgentName: m.GetDefaultAgentName(), AgentNames: m.GetAgentNames(),
		PSPollInterval:       Seconds(time.Duration(m.GetPsPollIntervalSeconds()) * time.Second),
		MaxResourceCacheSize: int(m.GetMaxResourceCacheSize()),
		ResourceCacheTimeout: Seconds(time.Duration(m.GetResourceCacheTimeoutSeconds()) * time.Second),
		MaxSessionCacheSize:  int(m.GetMaxSessionCacheSize()),
		LogFile:              m.GetLogFile(), LogFileName: m.GetLogFileName(), LogAppend: m.GetLogAppend(),
		LogFileSize: int(m.GetLogFileSizeMb()), LogLocalTime: m.GetLogLocalTime(),
		TraceFile: m.GetTraceFile(), TraceFileName: m.GetTraceFileName(), TraceFileSize: int(m.GetTraceFileSizeMb()),
		TraceConfigFile: m.GetTraceConfigFile(), AllowLocalConfig: m.GetAllowLocalConfig(), Extra: m.GetExtra(),
	}
	return a, a.Validate()
}
