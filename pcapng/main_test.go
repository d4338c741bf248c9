package pcapng

import (
	"testing"

	"go.uber.org/goleak"
)

// The recorded-socket tests run servers and clients: none may outlive them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
