package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// LLAWPStatusFile is the LLAWP's status at the end of the workload, in the
// run's folder.
const LLAWPStatusFile = "llawp-status.json"

// statusPath is where a web worker answers with its LLAWP's Status (hla's
// StatusPath; lab does not import hla, DESIGN.md).
const statusPath = "agentlab/status"

// llawpView is the part of a worker's status document the report prints.
type llawpView struct {
	Proc  string `json:"proc"`
	PID   int    `json:"pid"`
	Error string `json:"error"`
	LLAWP *struct {
		PID     int    `json:"pid"`
		Phase   string `json:"phase"`
		Polls   uint64 `json:"polls"`
		Workers []struct {
			PID     int    `json:"pid"`
			Name    string `json:"name"`
			Servers []struct {
				Addr   string `json:"addr"`
				State  string `json:"state"`
				Open   int    `json:"open"`
				Opened int64  `json:"opened"`
			} `json:"servers"`
		} `json:"workers"`
	} `json:"llawp"`
}

// fetchLLAWPStatus asks the web server, once the workload is done, what
// its LLAWP sees: every registered worker with its sockets per Policy
// Server. It keeps the answer as LLAWPStatusFile.
func (r *Run) fetchLLAWPStatus(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := r.summary.WebServerURL + statusPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("LLAWP status from %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("LLAWP status from %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("LLAWP status from %s: %s", url, resp.Status)
	}
	var v llawpView
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("LLAWP status from %s: %w", url, err)
	}
	r.llawp = &v
	if err := os.WriteFile(r.path(LLAWPStatusFile), body, 0o644); err != nil {
		return err
	}
	r.llawpWritten = true
	return nil
}

// writeLLAWPStatus prints the LLAWP's view of its workers.
func (r *Run) writeLLAWPStatus(w io.Writer) {
	v := r.llawp
	if v == nil {
		return
	}
	if v.LLAWP == nil {
		fmt.Fprintf(w, "\nThe LLAWP's status, asked through %s (pid %d): %s\n", v.Proc, v.PID, v.Error)
		return
	}
	l := v.LLAWP
	fmt.Fprintf(w, "\nThe LLAWP (pid %d, %s, %d management polls) at the end of the workload, asked through %s (pid %d): %s\n",
		l.PID, l.Phase, l.Polls, v.Proc, v.PID, plural(len(l.Workers), "registered worker", "registered workers"))
	for _, wk := range l.Workers {
		var socks []string
		for _, s := range wk.Servers {
			socks = append(socks, fmt.Sprintf("%s %s, %d open (%d opened)", s.Addr, s.State, s.Open, s.Opened))
		}
		if len(socks) == 0 {
			socks = []string{"no socket report yet"}
		}
		fmt.Fprintf(w, "  %s (pid %d): %s\n", wk.Name, wk.PID, strings.Join(socks, "; "))
	}
}
