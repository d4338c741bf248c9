//go:build !linux

package trace

import (
	"net"
	"syscall"
)

// tcpInfoOf: only Linux's TCP_INFO is read.
func tcpInfoOf(net.Conn) *TCPInfo { return nil }

// errnoName is the errno's text where its symbolic name is not known.
func errnoName(en syscall.Errno) string { return en.Error() }
