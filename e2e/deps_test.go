package e2e

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// renderers are the packages that make a run's outputs from its trace:
// only agentlab links them (issue 11).
var renderers = []string{"procmon", "narrative", "report", "pcapng", "chart", "trace/tracetest"}

// TestProcessesLinkNoRenderer: the processes of a lab (Policy Server, web
// server, LLAWP, registration) record traces and never render them, so
// none of them links a renderer, the page template or the chart library.
// html/template comes into hla and llawp with gRPC (golang.org/x/net/trace)
// and go-plugin (net/rpc), and hla's own pages use it; none of ours may
// bring it otherwise.
func TestProcessesLinkNoRenderer(t *testing.T) {
	t.Parallel()
	const module = "github.com/agentlab/agentlab/"
	tests := []struct {
		cmd string
		// template says whether html/template may be linked at all, and
		// templateBy which of our packages may import it.
		template   bool
		templateBy []string
	}{
		{cmd: "smps"},
		{cmd: "smreghost"},
		{cmd: "hla", template: true, templateBy: []string{module + "hla"}},
		{cmd: "llawp", template: true},
	}
	for _, tc := range tests {
		t.Run(tc.cmd, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "../cmd/"+tc.cmd).Output()
			if err != nil {
				t.Fatalf("go list -deps ./cmd/%s: %v", tc.cmd, err)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				pkg, imports, _ := strings.Cut(line, " ")
				for _, r := range renderers {
					if pkg == module+r {
						t.Errorf("%s links the renderer %s", tc.cmd, pkg)
					}
				}
				switch {
				case strings.HasPrefix(pkg, "github.com/guptarohit/asciigraph"):
					t.Errorf("%s links the chart library %s", tc.cmd, pkg)
				case pkg == "html/template" && !tc.template:
					t.Errorf("%s links html/template", tc.cmd)
				case strings.HasPrefix(pkg, module) && slices.Contains(strings.Fields(imports), "html/template") && !slices.Contains(tc.templateBy, pkg):
					t.Errorf("%s: %s imports html/template", tc.cmd, pkg)
				}
			}
		})
	}
}
