package policyserver

import "fmt"

// DescriptorHeadroom is what a Policy Server needs besides one descriptor
// per agent connection: listeners, logs, the trace, the control and
// metrics endpoints, the spare for refusals, the Go runtime's own, and
// connections still closing.
const DescriptorHeadroom = 64

// CheckDescriptors compares the process's descriptor limit (RLIMIT_NOFILE)
// with maxConns: "" when it is enough, or a warning for the log. A limit
// below the connection limit is the vendor's "socket error 24": the
// server runs out of descriptors before it reaches MaxConnections.
func CheckDescriptors(maxConns int) string {
	cur, hard, err := descriptorLimit()
	if err != nil {
		return fmt.Sprintf("could not read the descriptor limit to check --max-conns %d against it: %v", maxConns, err)
	}
	return descriptorWarning(maxConns, cur, hard)
}

func descriptorWarning(maxConns int, cur, hard uint64) string {
	need := uint64(maxConns) + DescriptorHeadroom
	if cur >= need {
		return ""
	}
	room := 0
	if cur > DescriptorHeadroom {
		room = int(cur - DescriptorHeadroom)
	}
	return fmt.Sprintf("--max-conns %d needs about %d file descriptors (one per connection and %d for the server itself), "+
		"but this process may open %d (RLIMIT_NOFILE; hard limit %d): past about %d connections accepts fail with "+
		"too many open files (socket error 24) and new connections are refused; raise the limit (ulimit -n) or lower --max-conns",
		maxConns, need, DescriptorHeadroom, cur, hard, room)
}
