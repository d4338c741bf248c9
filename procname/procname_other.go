//go:build !linux

package procname

// set does nothing: only Linux lets a process rename itself through a
// file, and agentlab's labs run on Linux.
func set(string) error { return nil }
