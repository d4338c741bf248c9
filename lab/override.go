package lab

import "time"

// WebServerFlags are agentlab run's flags that override a lab's web server;
// a zero value leaves the lab's setting.
type WebServerFlags struct {
	Model, MPM          string
	Workers             int
	MaxRequestsPerChild int
	ACOFromLLAWP        bool
	HealthPoll          time.Duration
	AgentCache          string
}

// Override applies the flags that were given to the lab's web server. An
// Apache web server with no number of children gets 3, as hla's
// --workers does.
func (w *WebServer) Override(f WebServerFlags) {
	if f.Model != "" {
		w.Model = f.Model
	}
	if f.MPM != "" {
		w.MPM = f.MPM
	}
	if f.Workers > 0 {
		w.Workers = f.Workers
	}
	if f.MaxRequestsPerChild > 0 {
		w.MaxRequestsPerChild = f.MaxRequestsPerChild
	}
	if f.ACOFromLLAWP {
		w.ACOFromLLAWP = true
	}
	if f.HealthPoll > 0 {
		w.HealthPoll = Duration(f.HealthPoll)
	}
	if f.AgentCache != "" {
		w.AgentCache = f.AgentCache
	}
	if w.Model == "apache" && w.Workers == 0 {
		w.Workers = 3
	}
}
