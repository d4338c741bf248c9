package trace

import (
	"fmt"
	"slices"
	"testing"
)

// TestServerConns: a server's connections count from accept to the first
// close, never twice, never one refused at the limit; other roles and
// servers apart.
func TestServerConns(t *testing.T) {
	ev := func(host, op, conn string) Event {
		return Event{Role: RolePolicyServer, LocalHost: host, Op: op, Conn: conn}
	}
	refused := ev("smps1", OpDisconnect, "3")
	refused.Limit = &ConnLimit{Max: 2, Message: "Connection request rejected. Connection limit of 2 exceeded."}
	agent := Event{Role: "hla", LocalHost: "wa1", Op: OpConnect, Conn: "9"}
	tests := []struct {
		name string
		evs  []Event
		want []string // "index server before->after"
	}{
		{"none", nil, nil},
		{"accept then close", []Event{ev("smps1", OpAccept, "1"), ev("smps1", OpDisconnect, "1")}, []string{"0 smps1 0->1", "1 smps1 1->0"}},
		{"a reset after a disconnect closes once", []Event{ev("smps1", OpAccept, "1"), ev("smps1", OpDisconnect, "1"), ev("smps1", OpReset, "1")}, []string{"0 smps1 0->1", "1 smps1 1->0"}},
		{"refused at the limit", []Event{ev("smps1", OpAccept, "1"), ev("smps1", OpAccept, "3"), refused}, []string{"0 smps1 0->1"}},
		{"agents and servers apart", []Event{agent, ev("smps1", OpAccept, "1"), ev("smps2", OpAccept, "1"), ev("smps2", OpAccept, "2")},
			[]string{"1 smps1 0->1", "2 smps2 0->1", "3 smps2 1->2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			ServerConns(tt.evs, func(i int, server string, before, after int) {
				got = append(got, fmt.Sprintf("%d %s %d->%d", i, server, before, after))
			})
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
