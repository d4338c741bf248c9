package trace

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
)

// Hosts is a lab's name resolver: the same map names addresses in traces and
// resolves host names when agents dial, so that a lab on loopback reads like
// the seed's network (wa1.shared.lab, smps1.shared.lab, ...).
//
// The file format is /etc/hosts: "address name [alias...]" with # comments.
// An address may carry a port ("127.0.0.1:44001 smps1.shared.lab") for
// machines without loopback aliases; such an entry names that one socket.
// A nil *Hosts is valid and knows no name.
//
// Names are never looked up anywhere else: a lab's names (smps1.shared.lab)
// may exist in the machine's DNS as somebody else's hosts, and a lab must
// not connect to them. Resolve refuses a name the map does not have.
type Hosts struct {
	file   string            // the file it was read from, for errors; "" when built
	byName map[string]string // lower-case name -> IP
	byIP   map[string]string // IP -> first name
	byAddr map[string]string // IP:port -> first name
	order  []hostEntry
}

type hostEntry struct {
	addr  string
	names []string
}

// ParseHosts reads a hosts file; errors name the file and line.
func ParseHosts(file string, data []byte) (*Hosts, error) {
	h := &Hosts{file: file, byName: map[string]string{}, byIP: map[string]string{}, byAddr: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if len(fields) < 2 {
			return nil, fmt.Errorf("%s:%d: want \"address name\", got %q", file, line, strings.TrimSpace(text))
		}
		if err := h.add(fields[0], fields[1:]); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", file, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		// The scanner stops on the line it could not hold (too long).
		return nil, fmt.Errorf("%s:%d: %v", file, line+1, err)
	}
	return h, nil
}

// LoadHosts reads a hosts file from disk.
func LoadHosts(path string) (*Hosts, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("hosts file: %w", err)
	}
	return ParseHosts(path, data)
}

// NewHosts builds a map from address -> names pairs, for tests and labs.
func NewHosts(entries map[string][]string) (*Hosts, error) {
	h := &Hosts{byName: map[string]string{}, byIP: map[string]string{}, byAddr: map[string]string{}}
	// Map order is random: sorting makes the first-wins rules and Bytes()
	// the same from one run to the next.
	for _, addr := range slices.Sorted(maps.Keys(entries)) {
		if err := h.add(addr, entries[addr]); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (h *Hosts) add(addr string, names []string) error {
	if len(names) == 0 {
		return fmt.Errorf("%q has no host name", addr)
	}
	// Keys are normalised (mapped IPv4 unmapped, ports without leading zeros)
	// so that Name finds them from what the socket reports.
	var ip, port string
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		ip, port = ap.Addr().String(), ap.String()
	} else if a, err := netip.ParseAddr(addr); err == nil {
		ip = a.Unmap().String()
	} else {
		return fmt.Errorf("%q is not an IP address or IP:port", addr)
	}
	for _, n := range names {
		// Names must survive Bytes() and a re-parse: no comment mark, no
		// space; ':' and '/' would read as a port or a path.
		if n == "" || strings.ContainsAny(n, ":/#") || strings.IndexFunc(n, unicode.IsSpace) >= 0 {
			return fmt.Errorf("%q is not a host name", n)
		}
	}
	// The first entry wins, for names as for addresses, as in /etc/hosts.
	for _, n := range names {
		if _, dup := h.byName[strings.ToLower(n)]; !dup {
			h.byName[strings.ToLower(n)] = ip
		}
	}
	if port != "" {
		if _, dup := h.byAddr[port]; !dup {
			h.byAddr[port] = names[0]
		}
	} else if _, dup := h.byIP[ip]; !dup {
		h.byIP[ip] = names[0]
	}
	h.order = append(h.order, hostEntry{addr: addr, names: names})
	return nil
}

// Bytes writes the map back in hosts-file form, for handing to child processes.
func (h *Hosts) Bytes() []byte {
	var b bytes.Buffer
	if h == nil {
		return nil
	}
	for _, e := range h.order {
		fmt.Fprintf(&b, "%s\t%s\n", e.addr, strings.Join(e.names, " "))
	}
	return b.Bytes()
}

// HostEntry is one line of a hosts map: an IP, or IP:port, and its names.
type HostEntry struct {
	Addr  string
	Names []string
}

// Entries lists the map's lines in order, for files that carry the names
// along with the addresses (a pcapng's name resolution block).
func (h *Hosts) Entries() []HostEntry {
	if h == nil {
		return nil
	}
	out := make([]HostEntry, 0, len(h.order))
	for _, e := range h.order {
		out = append(out, HostEntry{Addr: e.addr, Names: slices.Clone(e.names)})
	}
	return out
}

// Lookup gives the IP of a lab host name.
func (h *Hosts) Lookup(name string) (string, bool) {
	if h == nil {
		return "", false
	}
	ip, ok := h.byName[strings.ToLower(name)]
	return ip, ok
}

// UnknownHostError is a host name that no hosts file maps: agentlab never
// asks the machine's resolver (DNS) for a name, so the error says which
// file would have it.
type UnknownHostError struct {
	Name string
	// File is the hosts file that was searched; "" when there was none.
	File string
}

func (e *UnknownHostError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("%s: not in any hosts file; pass --hosts with the lab's hosts file (a run writes it as %s in its out folder, e.g. out/%s)", e.Name, RunHostsFile, RunHostsFile)
	}
	return fmt.Sprintf("%s: not in the hosts file %s (agentlab does not look names up in DNS)", e.Name, e.File)
}

// Resolve turns "name:port" into "ip:port" through the map. An IP address,
// or an empty host (":port", every address), is taken as it is; any other
// name must be in the map, or the error is an *UnknownHostError: the
// result is always something net.Dial and net.Listen use without a lookup.
func (h *Hosts) Resolve(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", hostport, err)
	}
	if host == "" {
		return hostport, nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return hostport, nil
	}
	if ip, ok := h.Lookup(host); ok {
		return net.JoinHostPort(ip, port), nil
	}
	e := &UnknownHostError{Name: host}
	if h != nil {
		e.File = h.file
	}
	return "", e
}

// Name gives the lab name of "ip:port", or "" when the map has none.
func (h *Hosts) Name(addr string) string {
	if h == nil {
		return ""
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if n, ok := h.byAddr[ap.String()]; ok {
			return n
		}
		return h.byIP[ap.Addr().String()]
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	}
	return h.byIP[host]
}

// RunHostsFile is the name of the hosts file a run keeps in its out
// folder, next to its trace.jsonl and its WebAgent.conf: the lab's names
// for the addresses in the trace, and the only way its names resolve.
const RunHostsFile = "hosts"

// RunHostsNextTo is the RunHostsFile in file's folder, or "" when there is
// none: commands given a run's file use the run's names without a flag.
func RunHostsNextTo(file string) (string, error) {
	p := filepath.Join(filepath.Dir(file), RunHostsFile)
	if _, err := os.Stat(p); err == nil {
		return p, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("hosts file: %w", err)
	}
	return "", nil
}

// loadRunHosts loads hostsFile, or with "" the run's hosts file next to
// the trace at tracePath (RunHostsNextTo); nil when there is none.
func loadRunHosts(tracePath, hostsFile string) (*Hosts, error) {
	if hostsFile == "" {
		var err error
		if hostsFile, err = RunHostsNextTo(tracePath); err != nil || hostsFile == "" {
			return nil, err
		}
	}
	return LoadHosts(hostsFile)
}

// ReadRunFile reads the trace file tracePath and the hosts that name its
// addresses: hostsFile, or with "" the run's hosts file next to the trace
// when there is one (else nil: only the names in the events name them).
// The commands that render a run's trace file (agentlab pcap, agentlab
// procmon) read it so.
func ReadRunFile(tracePath, hostsFile string) ([]Event, *Hosts, error) {
	evs, err := ReadFile(tracePath)
	if err != nil {
		return nil, nil, err
	}
	hosts, err := loadRunHosts(tracePath, hostsFile)
	if err != nil {
		return nil, nil, err
	}
	return evs, hosts, nil
}
