package llawp

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// lumberjack v2.2.1 starts a goroutine per file that Close does not
	// stop (natefinch/lumberjack#56): a leak of the library, one per log
	// file, not of this package.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
}
