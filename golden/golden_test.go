// Package golden tests every renderer byte for byte on traces recorded from
// real runs (testdata/README.md says how each was recorded): the step
// narrative, the Process Monitor view, report.html with its sequence
// diagram, trace.pcapng and the chart. A renderer that changes what it
// writes for a recorded run fails here; when the change is meant,
// `go test ./golden -update` rewrites the files, and the diff is the
// review.
package golden

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/chart"
	"github.com/agentlab/agentlab/narrative"
	"github.com/agentlab/agentlab/pcapng"
	"github.com/agentlab/agentlab/procmon"
	"github.com/agentlab/agentlab/report"
	"github.com/agentlab/agentlab/trace"
)

var update = flag.Bool("update", false, "rewrite the golden files from today's renderers")

func TestMain(m *testing.M) {
	// The renderers write local times: the goldens are in UTC, whatever
	// the machine's zone.
	time.Local = time.UTC
	os.Exit(m.Run())
}

// run is one recorded run in testdata: its merged trace.jsonl, its hosts
// file and its registration's trace, and how the lab read it.
type run struct {
	name    string
	host    string   // the web server host
	servers []string // the Policy Server hosts, in the lab's order
}

var runs = []run{
	{"seed", "wa1.shared.lab", []string{"smps1.shared.lab", "smps2.shared.lab"}},
	{"apache", "wa1.shared.lab", []string{"smps1.shared.lab", "smps2.shared.lab"}},
	{"failover", "wa1.shared.lab", []string{"smps1.shared.lab", "smps2.shared.lab"}},
	{"roundrobin", "wa1.shared.lab", []string{"smps1.shared.lab", "smps2.shared.lab", "smps3.shared.lab"}},
}

func (r run) path(name string) string { return filepath.Join("testdata", r.name, name) }

// events are the run's trace.jsonl; with the registration's trace too when
// all is set, in time order, as agentlab run --all shows them.
func (r run) events(t *testing.T, all bool) []trace.Event {
	t.Helper()
	evs, err := trace.ReadFile(r.path("trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !all {
		return evs
	}
	reg, err := trace.ReadFile(r.path("registration/trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	out := append(reg, evs...)
	slices.SortStableFunc(out, func(a, b trace.Event) int { return a.T.Compare(b.T) })
	return out
}

func (r run) hosts(t *testing.T) *trace.Hosts {
	t.Helper()
	h, err := trace.LoadHosts(r.path("hosts"))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// isAgent keeps the web server's agent processes, as the lab's steps and
// diagram do.
func isAgent(e trace.Event) bool { return e.Role == "hla" || e.Role == "llawp" }

func agents(evs []trace.Event) []trace.Event {
	var out []trace.Event
	for _, e := range evs {
		if isAgent(e) {
			out = append(out, e)
		}
	}
	return out
}

// procmonFilter is a Filter dialog with both kinds of condition, on
// columns every run has.
func procmonFilter(t *testing.T) procmon.Filter {
	t.Helper()
	var f procmon.Filter
	for _, c := range []struct {
		include bool
		text    string
	}{
		{true, "Operation is TCP Connect"},
		{true, "Operation is TCP Disconnect"},
		{true, "Process Name begins with w3wp"},
		{true, "Process Name is LLAWP"},
		{true, "Process Name is httpd"},
		{false, "Path contains smps2"},
	} {
		cond, err := procmon.ParseCondition(c.text)
		if err != nil {
			t.Fatal(err)
		}
		if c.include {
			f.Include = append(f.Include, cond)
		} else {
			f.Exclude = append(f.Exclude, cond)
		}
	}
	return f
}

// outputs renders everything the renderers make of r, by golden file name.
func (r run) outputs(t *testing.T) map[string][]byte {
	evs, all := r.events(t, false), r.events(t, true)
	hosts := r.hosts(t)
	filter := procmonFilter(t)
	seedView := procmon.All(procmon.SocketOps, procmon.Between(r.host, r.servers...))
	out := map[string][]byte{}
	render := func(name string, f func(b *bytes.Buffer) error) {
		var b bytes.Buffer
		if err := f(&b); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = b.Bytes()
	}

	// The steps, as agentlab run tells them (the agents to the servers),
	// and of every process with nothing left out, the registration too.
	render("narrative.txt", func(b *bytes.Buffer) error {
		return narrative.Write(b, narrative.Narrate(agents(evs), r.host, r.servers))
	})
	render("narrative-all.txt", func(b *bytes.Buffer) error {
		return narrative.Write(b, narrative.Narrate(all, "", nil))
	})

	// The Process Monitor view: as the seed filters, every process, and
	// through a Filter dialog as agentlab procmon reads a trace file.
	render("procmon.txt", func(b *bytes.Buffer) error {
		_, err := procmon.WriteTable(b, evs, seedView, procmon.Filter{}, 0)
		return err
	})
	render("procmon-all.txt", func(b *bytes.Buffer) error {
		_, err := procmon.WriteTable(b, all, procmon.Ops, procmon.Filter{}, 0)
		return err
	})
	render("procmon-filter.txt", func(b *bytes.Buffer) error {
		return procmon.WriteTableFile(b, r.path("trace.jsonl"), "", filter)
	})
	render("procmon-limit.txt", func(b *bytes.Buffer) error {
		n, err := procmon.WriteTable(b, evs, seedView, procmon.Filter{}, 12)
		fmt.Fprintf(b, "%d rows in all\n", n)
		return err
	})

	// report.html as agentlab run writes it, then with --all and a filter.
	render("report.html", func(b *bytes.Buffer) error {
		return report.Write(b, report.Page{Title: "golden: " + r.name, Lines: []string{"A run recorded for the golden tests."},
			Sides: []report.Side{{Label: r.name, Events: evs, Host: r.host, Servers: r.servers, Agents: isAgent, Table: seedView,
				TableWhat: fmt.Sprintf("filtered as the seed filters: %s to %s", r.host, strings.Join(r.servers, " or "))}}})
	})
	render("report-all.html", func(b *bytes.Buffer) error {
		return report.Write(b, report.Page{Title: "golden: " + r.name + ", every process", Figures: "figures\n  as agentlab compare puts them",
			Sides: []report.Side{
				{Label: r.name + " --all", Lines: []string{"every process, filtered"}, Events: all, Host: r.host, Servers: r.servers,
					Agents: isAgent, Table: procmon.Ops, Procmon: filter, TableWhat: "every process; then " + filter.String()},
				// The defaults a caller leaves: every event told, the
				// seed's filter on the table.
				{Label: r.name + " defaults", Events: evs, Host: r.host, Servers: r.servers},
			}})
	})

	render("trace.pcapng", func(b *bytes.Buffer) error { return pcapng.Write(b, evs, hosts) })
	render("registration.pcapng", func(b *bytes.Buffer) error {
		reg, err := trace.ReadFile(r.path("registration/trace.jsonl"))
		if err != nil {
			return err
		}
		return pcapng.Write(b, reg, hosts)
	})

	render("chart.txt", func(b *bytes.Buffer) error {
		return chart.Write(b, chart.CountLoad(evs, r.host, r.servers))
	})
	return out
}

// goldenName is where output name's golden file is: ".golden" before the
// extension, so that a viewer still knows report.golden.html.
func (r run) goldenName(name string) string {
	ext := filepath.Ext(name)
	return r.path(strings.TrimSuffix(name, ext) + ".golden" + ext)
}

func TestGolden(t *testing.T) {
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			outs := r.outputs(t)
			names := make([]string, 0, len(outs))
			for name := range outs {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				got, path := outs[name], r.goldenName(name)
				if *update {
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (go test ./golden -update writes it)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs from %s: %s", name, path, firstDiff(got, want))
				}
			}
		})
	}
}

// TestNarrateServerHost: seen from a Policy Server's host, nothing in a
// run is an agent: its sockets are accepted, not opened.
func TestNarrateServerHost(t *testing.T) {
	for _, r := range runs {
		for _, s := range r.servers {
			if steps := narrative.Narrate(r.events(t, true), s, nil); len(steps) != 0 {
				t.Errorf("%s: %s narrated: %q", r.name, s, steps[0].Text)
			}
		}
	}
}

// TestPcapngFromFile: agentlab pcap writes, from the trace file and the
// hosts file next to it, the bytes of the golden capture.
func TestPcapngFromFile(t *testing.T) {
	for _, r := range runs {
		out := filepath.Join(t.TempDir(), "trace.pcapng")
		if err := pcapng.FromFile(r.path("trace.jsonl"), "", out); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(r.goldenName("trace.pcapng"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: agentlab pcap's file differs from the golden capture: %s", r.name, firstDiff(got, want))
		}
	}
}

// firstDiff says where got first leaves want: the line, for text.
func firstDiff(got, want []byte) string {
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i] == want[i] {
		i++
	}
	line := bytes.Count(want[:i], []byte("\n")) + 1
	show := func(b []byte) string {
		start := bytes.LastIndexByte(b[:min(i, len(b))], '\n') + 1
		end := len(b)
		if j := bytes.IndexByte(b[start:], '\n'); j >= 0 {
			end = start + j
		}
		end = min(end, start+300)
		return fmt.Sprintf("%q", b[start:end])
	}
	return fmt.Sprintf("%d and %d bytes, first difference at byte %d (line %d):\n got: %s\nwant: %s", len(got), len(want), i, line, show(got), show(want))
}
