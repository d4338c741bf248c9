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
