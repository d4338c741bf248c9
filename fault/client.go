package fault

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Timeout bounds one command from Client: smps's control API reads a
// request within 5 s and answers at once.
const Timeout = 5 * time.Second

// Client tells one smps to carry out faults, through the control API it
// announced (notice.Control).
type Client struct {
	// Addr is the control API's ip:port.
	Addr string
	// Name says which server in errors: "smps1.shared.lab (pid 4242)".
	Name string
	// HTTP sends the requests; nil is http.DefaultClient.
	HTTP *http.Client
}

// Apply POSTs the action and returns smps's answer. Its errors name the
// server and say whether it could not be reached, refused the command
// (with smps's one line), or answered what no smps answers.
func (c Client) Apply(ctx context.Context, a Action) (Result, error) {
	if err := a.CheckServer(); err != nil {
		return Result{}, fmt.Errorf("%s: %w", c.Name, err)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.Addr+a.ControlPath(), nil)
	if err != nil {
		return Result{}, fmt.Errorf("control API of %s at %s: %w", c.Name, c.Addr, err)
	}
	req.Header.Set(ControlHeader, "1")
	resp, err := hc.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("control API of %s at %s: %w", c.Name, c.Addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Result{}, fmt.Errorf("control API of %s at %s: reading its answer: %w", c.Name, c.Addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Result{}, fmt.Errorf("%s refused %q: %s", c.Name, a, strings.TrimSpace(string(body)))
	}
	var res Result
	if err := json.Unmarshal(body, &res); err != nil || res.Done == "" {
		return Result{}, fmt.Errorf("%s: unreadable control answer %q", c.Name, body)
	}
	return res, nil
}
