//go:build !unix

package pool

import "net"

// peerGone cannot look at a socket without reading it here: every socket
// looks usable, and a Login on one the server closed fails instead of
// going elsewhere.
func peerGone(net.Conn) error { return nil }
