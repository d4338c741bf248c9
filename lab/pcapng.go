package lab

import (
	"fmt"
	"os"

	"github.com/agentlab/agentlab/pcapng"
	"github.com/agentlab/agentlab/trace"
)

// PcapngFile is the run's connections as a capture file for Wireshark,
// rendered from trace.jsonl (agentlab pcap does the same from any trace).
const PcapngFile = "trace.pcapng"

// RegistrationDir is the run's subfolder for smreghost's registration:
// its trace, trace.jsonl and trace.pcapng.
const RegistrationDir = "registration"

// writePcapng renders merged events to path, named by the lab's hosts
// map: the same names the processes resolved and recorded.
func (r *Run) writePcapng(path string, evs []trace.Event) error {
	hosts, err := r.Lab.HostsMap()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := pcapng.Save(path, evs, hosts); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// PcapngPath is the run's trace.pcapng, or "" when the run wrote none (a
// run clears the previous run's file as it starts).
func (r *Run) PcapngPath() string {
	p := r.path(PcapngFile)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}
