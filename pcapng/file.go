package pcapng

import (
	"fmt"
	"io"

	"github.com/agentlab/agentlab/atomicfile"
	"github.com/agentlab/agentlab/trace"
)

// Writing a capture file: from a trace file and a hosts file, through a
// temporary file, so that Wireshark never opens a half-written capture.

// FromFile renders the trace file tracePath as the pcapng file out.
// With hostsFile "" the hosts file next to the trace names the addresses
// when there is one, else only the names in the events do.
func FromFile(tracePath, hostsFile, out string) error {
	evs, hosts, err := trace.ReadRunFile(tracePath, hostsFile)
	if err != nil {
		return err
	}
	if err := Save(out, evs, hosts); err != nil {
		return fmt.Errorf("%s: %w", tracePath, err)
	}
	return nil
}

// Save writes the pcapng to path in one step (atomicfile): a rendering
// that fails halfway leaves no file that Wireshark would open as a
// truncated capture.
func Save(path string, evs []trace.Event, hosts *trace.Hosts) error {
	// A trace that cannot be rendered is the trace's error, not the
	// file's: it is returned as Write said it.
	var renderErr error
	err := atomicfile.Write(path, 0o644, func(w io.Writer) error {
		renderErr = Write(w, evs, hosts)
		return renderErr
	})
	if renderErr != nil {
		return renderErr
	}
	return err
}
