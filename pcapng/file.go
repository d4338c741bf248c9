package pcapng

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"

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

// Save writes the pcapng to path through a temporary file in the same
// folder: a rendering that fails halfway leaves no file that Wireshark
// would open as a truncated capture.
func Save(path string, evs []trace.Event, hosts *trace.Hosts) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	bw := bufio.NewWriter(f)
	if err := Write(bw, evs, hosts); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
