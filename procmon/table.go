// Package procmon renders recorded events as Process Monitor's view: its
// network and process rows (Time of Day, Process Name, PID, Operation,
// Path, Result, Detail), and its Filter dialog (conditions that include
// and exclude rows), for agentlab run's text report, report.html and
// agentlab procmon.
package procmon

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/agentlab/agentlab/trace"
)

// Select keeps the events a view shows (the rows come from them, then
// go through the view's Filter).
type Select func(trace.Event) bool

// SocketOps keeps the operations Process Monitor shows as Network
// Activity (TCP ...).
func SocketOps(e trace.Event) bool { return strings.HasPrefix(e.Op, "TCP ") }

// ProcessOps keeps Process Monitor's Process and Thread Activity that a
// trace has: Process Create and Process Exit.
func ProcessOps(e trace.Event) bool {
	return (e.Op == trace.OpProcessCreate || e.Op == trace.OpProcessExit) && e.Process != nil
}

// ProcmonOps keeps every operation the view can show: network and process
// activity.
func Ops(e trace.Event) bool { return SocketOps(e) || ProcessOps(e) }

// Between keeps events on connections from host to any of servers, seen
// from host's side: the seed's filter `ip.src_host == wa1.shared.lab &&
// ip.dst_host == smps1.shared.lab || ip.dst_host == smps2.shared.lab`.
func Between(host string, servers ...string) Select {
	return func(e trace.Event) bool {
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
func All(fs ...Select) Select {
	return func(e trace.Event) bool {
		for _, f := range fs {
			if !f(e) {
				return false
			}
		}
		return true
	}
}

// Process Monitor's columns, named as its view and its Filter dialog name
// them, in the order of its default layout.
const (
	ColTimeOfDay   = "Time of Day"
	ColProcessName = "Process Name"
	ColPID         = "PID"
	ColOperation   = "Operation"
	ColPath        = "Path"
	ColResult      = "Result"
	ColDetail      = "Detail"
)

// Header and tableRow are the Process Monitor view's columns, shared by
// the text table and report.html (Rows) so that both show the same rows.
var Header = []string{ColTimeOfDay, ColProcessName, ColPID, ColOperation, ColPath, ColResult, ColDetail}

// Operations are Process Monitor's network and process operations. A
// trace records TCP Reset for a connection the socket closed with an RST;
// Process Monitor has no such operation and shows it as TCP Disconnect.
// TCP Reconnect (a SYN sent again), TCP Retransmit and UDP are not seen
// from a socket's system calls, nor threads and image loads from a
// supervisor's exec and wait: no trace has them, a filter may name them.
var Operations = []string{"TCP Connect", "TCP Accept", "TCP Send", "TCP Receive", "TCP Disconnect",
	"TCP Reconnect", "TCP Retransmit", "UDP Send", "UDP Receive",
	trace.OpProcessCreate, "Process Start", trace.OpProcessExit, "Thread Create", "Thread Exit", "Load Image"}

// procmonOp is the Operation column of a socket event.
func procmonOp(e *trace.Event) string {
	if e.Op == trace.OpReset {
		return trace.OpDisconnect
	}
	return e.Op
}

// ResultSuccess is Process Monitor's Result of an operation that worked.
const ResultSuccess = "SUCCESS"

// procmonResult is the Result column: SUCCESS, or for a connect that
// failed, the Windows status the error maps to, named as Process Monitor
// names statuses (STATUS_CONNECTION_REFUSED is shown CONNECTION REFUSED).
func procmonResult(e *trace.Event) string {
	if e.Op != trace.OpConnect || e.Conn != "" {
		return ResultSuccess
	}
	switch e.Errno {
	case "ECONNREFUSED":
		return "CONNECTION REFUSED"
	case "ETIMEDOUT":
		return "IO TIMEOUT"
	case "EHOSTUNREACH":
		return "HOST UNREACHABLE"
	case "ENETUNREACH":
		return "NETWORK UNREACHABLE"
	case "ECONNRESET":
		return "CONNECTION RESET"
	case "ECONNABORTED":
		return "CONNECTION ABORTED"
	case "EADDRINUSE":
		return "ADDRESS ALREADY EXISTS"
	case "ECANCELED":
		return "CANCELLED"
	}
	return "UNSUCCESSFUL"
}

// TimeOfDayLayout is Process Monitor's Time of Day: seconds to 100 ns. It
// follows the system's clock format, 12 or 24 hours; the view keeps the
// 24-hour clock of WA.log, the steps and Wireshark's time of day, so that
// one time reads the same in each.
const TimeOfDayLayout = "15:04:05.0000000"

// seqPos is where one end of a connection is in each direction: the bytes
// it has sent and read so far.
type seqPos struct{ sent, read int }

// procmonDetail is the Detail column as Process Monitor writes it for the
// operation, with the fields a trace can fill truthfully. Left out: connid
// and a send's startime and endtime, which are Windows' own counters, and
// on a trace with no TCP_INFO (not recorded on Linux) a connect's options.
func procmonDetail(e *trace.Event, pos seqPos) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Length: %d", e.Len)
	switch e.Op {
	case trace.OpConnect, trace.OpAccept:
		if e.Conn == "" {
			break // no socket: no options, no sequence number
		}
		if t := e.TCP; t != nil {
			fmt.Fprintf(&b, ", mss: %d, sackopt: %d, tsopt: %d, wsopt: %d", t.MSS, b2i(t.SACK), b2i(t.Timestamps), b2i(t.WindowScaling))
			if t.RcvWindow > 0 {
				fmt.Fprintf(&b, ", rcvwin: %d", t.RcvWindow)
			}
			fmt.Fprintf(&b, ", rcvwinscale: %d, sndwinscale: %d", t.RcvWindowScale, t.SndWindowScale)
		}
		fmt.Fprintf(&b, ", seqnum: %d", 0) // the SYN's
	case trace.OpSend:
		fmt.Fprintf(&b, ", seqnum: %d", relSeq(pos.sent))
	case trace.OpReceive:
		fmt.Fprintf(&b, ", seqnum: %d", relSeq(pos.read))
	case trace.OpDisconnect, trace.OpReset:
		// The FIN or RST of the end that closed: ours after the bytes
		// we sent, the peer's after the bytes we read.
		if e.Peer {
			fmt.Fprintf(&b, ", seqnum: %d", relSeq(pos.read))
		} else {
			fmt.Fprintf(&b, ", seqnum: %d", relSeq(pos.sent))
		}
	}
	switch {
	case e.Op == trace.OpReset && e.Peer:
		b.WriteString(", reset: RST received")
	case e.Op == trace.OpReset:
		b.WriteString(", reset: RST sent")
	case e.Op == trace.OpDisconnect && e.Peer:
		b.WriteString(", closed by peer: FIN received")
	}
	return b.String()
}

// relSeq is the sequence number, relative to the end's initial one as
// Wireshark shows it, of the byte at offset off of what an end sends: its
// SYN takes number 0. trace.pcapng's packets count so too (pcapng's test
// TestProcmonSeqnumIsPcapng holds the two together).
func relSeq(off int) uint32 { return uint32(off) + 1 }

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}

func tableRow(e *trace.Event, pos seqPos) []string {
	if ProcessOps(*e) {
		return processRow(e)
	}
	path := trace.Endpoint(e.LocalHost, e.Local) + " -> " + trace.Endpoint(e.RemoteHost, e.Remote)
	return []string{e.T.Local().Format(TimeOfDayLayout), e.Proc, strconv.Itoa(e.PID), procmonOp(e), path,
		procmonResult(e), procmonDetail(e, pos)}
}

// processRow is a Process Create or Process Exit as Process Monitor shows
// it: a Process Create is the parent's row, its Path the child's image and
// its Detail the child's PID and command line; a Process Exit is the
// exiting process's row, its Detail the exit status and the process's
// times and peak working set.
func processRow(e *trace.Event) []string {
	p := e.Process
	path, detail := "", ""
	switch e.Op {
	case trace.OpProcessCreate:
		path = p.Image
		detail = fmt.Sprintf("PID: %d, Command line: %s", p.PID, p.CommandLine)
	case trace.OpProcessExit:
		x := p.Exit
		if x == nil {
			x = &trace.Exit{Code: -1}
		}
		detail = fmt.Sprintf("Exit Status: %d", x.Code)
		if x.Signal != "" {
			detail += " (" + x.Status() + ")"
		}
		detail += fmt.Sprintf(", User Time: %.7f seconds, Kernel Time: %.7f seconds", x.UserTime.Seconds(), x.KernelTime.Seconds())
		if x.PeakRSS > 0 {
			detail += ", Peak Working Set: " + thousands(x.PeakRSS)
		}
	}
	return []string{e.T.Local().Format(TimeOfDayLayout), e.Proc, strconv.Itoa(e.PID), e.Op, path, ResultSuccess, detail}
}

// thousands writes n with a comma every three digits, as Process Monitor
// writes byte counts.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// Row is one row of the view: its cells in Header's order, and the trace
// operation it shows (report.html marks resets by it).
type Row struct {
	Cells []string
	Op    string
}

// Rows renders the socket events of evs that keep selects (nil:
// all) and f lets through. The sequence numbers are counted over every
// event of evs, whatever is shown.
func Rows(evs []trace.Event, keep Select, f Filter) []Row {
	ends := map[trace.End]*seqPos{}
	var rows []Row
	for i := range evs {
		e := &evs[i]
		if !Ops(*e) {
			continue
		}
		var pos seqPos
		if e.Conn != "" {
			k := trace.EndOf(e)
			p := ends[k]
			if p == nil {
				p = &seqPos{}
				ends[k] = p
			}
			pos = *p
			switch e.Op {
			case trace.OpSend:
				p.sent += e.Len
			case trace.OpReceive:
				p.read += e.Len
			}
		}
		if keep != nil && !keep(*e) {
			continue
		}
		cells := tableRow(e, pos)
		if f.Keep(cells) {
			rows = append(rows, Row{Cells: cells, Op: e.Op})
		}
	}
	return rows
}

// WriteTable renders evs as Process Monitor's network view: Time of Day,
// Process Name, PID, Operation, Path (local -> remote, host names),
// Result and Detail. keep selects the events (nil: every socket
// operation), f is the view's filter; limit > 0 prints that many rows at
// most. It returns how many rows the view has.
func WriteTable(w io.Writer, evs []trace.Event, keep Select, f Filter, limit int) (int, error) {
	rows := Rows(evs, keep, f)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(Header, "\t"))
	for i, r := range rows {
		if limit > 0 && i == limit {
			break
		}
		fmt.Fprintln(tw, strings.Join(r.Cells, "\t"))
	}
	return len(rows), tw.Flush()
}

// WriteTableFile renders the trace file tracePath as WriteTable does,
// every process's socket operations through f. Addresses the events do
// not name are named by hostsFile, or with "" by the run's hosts file
// next to the trace when there is one.
func WriteTableFile(w io.Writer, tracePath, hostsFile string, f Filter) error {
	evs, hosts, err := trace.ReadRunFile(tracePath, hostsFile)
	if err != nil {
		return err
	}
	for i := range evs {
		e := &evs[i]
		if e.LocalHost == "" {
			e.LocalHost = hosts.Name(e.Local)
		}
		if e.RemoteHost == "" {
			e.RemoteHost = hosts.Name(e.Remote)
		}
	}
	_, err = WriteTable(w, evs, nil, f, 0)
	return err
}
