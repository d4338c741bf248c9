package trace

import "time"

// ConnLimit is why a Policy Server refused a connection: it already had
// Max open (its --max-conns), and said so in its log with Message, the
// vendor's words ("Connection request rejected. Connection limit of 256
// exceeded.").
type ConnLimit struct {
	Max     int    `json:"max"`
	Message string `json:"message"`
}

// QueueState is a Policy Server's request model at one moment: requests
// waiting in its queue (Depth, out of Bound), and worker threads busy out
// of Threads. On a Response, Waited is how long the request waited in the
// queue and Directory how long its worker waited on the user directory.
type QueueState struct {
	Depth     int           `json:"depth"`
	Bound     int           `json:"bound,omitempty"`
	Busy      int           `json:"busy"`
	Threads   int           `json:"threads"`
	Waited    time.Duration `json:"waited,omitempty"`
	Directory time.Duration `json:"directory,omitempty"`
}

// RequestTimeout is an agent giving up on a request: After is the
// RequestTimeout it waited, Request the call it sent (a Req constant).
type RequestTimeout struct {
	After   time.Duration `json:"after"`
	Request string        `json:"request"`
}

// RolePolicyServer is the role a Policy Server (smps) records its trace
// and logs with.
const RolePolicyServer = "policyserver"

// ServerConns walks the Policy Servers' side of a merged trace and calls
// change at each event (evs[i]) that opens or closes one of a server's
// connections, with the server (its LocalHost) and its count of open
// connections before and after. A connection counts from its TCP Accept to its first
// TCP Disconnect or TCP Reset; one the server refused at its limit
// (Event.Limit on any of its events) never counts. It is the one count
// of a server's connections that the narrative, the chart and the lab's
// figures share.
func ServerConns(evs []Event, change func(i int, server string, before, after int)) {
	refused := map[string]bool{}
	for i := range evs {
		if e := &evs[i]; e.Limit != nil && e.Conn != "" {
			refused[e.LocalHost+" "+e.Conn] = true
		}
	}
	open := map[string]int{}
	counted := map[string]bool{}
	for i := range evs {
		e := &evs[i]
		if e.Role != RolePolicyServer || e.Conn == "" {
			continue
		}
		key := e.LocalHost + " " + e.Conn
		switch {
		case e.Op == OpAccept && !counted[key] && !refused[key]:
			counted[key] = true
			open[e.LocalHost]++
			change(i, e.LocalHost, open[e.LocalHost]-1, open[e.LocalHost])
		case (e.Op == OpDisconnect || e.Op == OpReset) && counted[key]:
			delete(counted, key)
			open[e.LocalHost]--
			change(i, e.LocalHost, open[e.LocalHost]+1, open[e.LocalHost])
		}
	}
}
