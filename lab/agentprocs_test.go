package lab

import (
	"testing"

	"github.com/agentlab/agentlab/trace"
)

// TestAgentProcsStartedBy: summary.json names each agent process's real
// parent, from the Process Create rows its supervisor recorded.
func TestAgentProcsStartedBy(t *testing.T) {
	created := func(name string, pid int, parent string, ppid int) trace.Event {
		return trace.Event{Op: trace.OpProcessCreate, Process: &trace.Process{Name: name, PID: pid, Parent: parent, ParentPID: ppid}}
	}
	socket := func(name string, pid int, role string) trace.Event {
		return trace.Event{Op: trace.OpConnect, Proc: name, PID: pid, Role: role}
	}
	tests := []struct {
		name    string
		evs     []trace.Event
		started []ProcInfo
		want    map[int]string
	}{
		{
			name: "IIS: WAS starts w3wp.exe, which starts LLAWP.exe",
			evs: []trace.Event{
				created("w3wp.exe", 11, "svchost.exe", 10), created("LLAWP.exe", 12, "w3wp.exe", 11),
				socket("w3wp.exe", 11, "hla"), socket("LLAWP.exe", 12, "llawp"), socket("w3wp.exe", 11, "hla"),
			},
			started: []ProcInfo{{Name: "svchost.exe", PID: 10}},
			want:    map[int]string{11: "svchost.exe", 12: "w3wp.exe"},
		},
		{
			name:    "no Process Create row: the web server's worker",
			evs:     []trace.Event{socket("LLAWP.exe", 12, "llawp")},
			started: []ProcInfo{{Name: "w3wp.exe", PID: 11}},
			want:    map[int]string{12: "w3wp.exe"},
		},
		{
			name:    "the lab's own processes are not listed again",
			evs:     []trace.Event{socket("httpd", 20, "hla"), created("httpd", 21, "httpd", 20), socket("httpd", 21, "hla")},
			started: []ProcInfo{{Name: "httpd", PID: 20}},
			want:    map[int]string{21: "httpd"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[int]string{}
			for _, p := range agentProcs(tt.evs, tt.started, "w3wp.exe") {
				if _, dup := got[p.PID]; dup {
					t.Errorf("pid %d listed twice", p.PID)
				}
				got[p.PID] = p.StartedBy
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			for pid, by := range tt.want {
				if got[pid] != by {
					t.Errorf("pid %d started by %q, want %q", pid, got[pid], by)
				}
			}
		})
	}
}
