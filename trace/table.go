package trace

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Filter keeps the events a reader wants to see.
type Filter func(Event) bool

// SocketOps keeps the operations Process Monitor shows (TCP ...).
func SocketOps(e Event) bool { return strings.HasPrefix(e.Op, "TCP ") }

// Between keeps events on connections from host to any of servers, seen
// from host's side: the seed's filter `ip.src_host == wa1.shared.lab &&
// ip.dst_host == smps1.shared.lab || ip.dst_host == smps2.shared.lab`.
func Between(host string, servers ...string) Filter {
	return func(e Event) bool {
		if !strings.EqualFold(e.LocalHost, host) {
			return false
		}
		for _, s := range servers {
			if strings.EqualFold(e.RemoteHost, s) {
				return true
			}
		}
		return false
	}
}

// All keeps events that pass every filter.
func All(fs ...Filter) Filter {
	return func(e Event) bool {
		for _, f := range fs {
			if !f(e) {
				return false
			}
		}
		return true
	}
}

// WriteTable renders events as Process Monitor's network view: Time of Day,
// Process Name, PID, Operation, Path (local -> remote, host names), Length.
func WriteTable(w io.Writer, evs []Event, keep Filter) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(tableHeader, "\t"))
	for _, e := range evs {
		if keep != nil && !keep(e) {
			continue
		}
		fmt.Fprintln(tw, strings.Join(tableRow(e), "\t"))
	}
	return tw.Flush()
}

// tableHeader and tableRow are the Process Monitor view's columns, shared
// by the text table and report.html so that both show the same rows.
var tableHeader = []string{"Time of Day", "Process Name", "PID", "Operation", "Path", "Length"}

func tableRow(e Event) []string {
	path := Endpoint(e.LocalHost, e.Local) + " -> " + Endpoint(e.RemoteHost, e.Remote)
	return []string{e.T.Local().Format("15:04:05.000000"), e.Proc, strconv.Itoa(e.PID), e.Op, path, strconv.Itoa(e.Len)}
}
