package ipc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/agentlab/agentlab/procname"
)

// LaunchConfig says how an owner starts the LLAWP.
type LaunchConfig struct {
	// Path is the llawp binary.
	Path string
	// Name, when set, is its argv[0]: the product's name, which ps -ef
	// and /proc/PID/cmdline show (procname).
	Name string
	Args []string
	// Env is added to the owner's environment; it wins over the owner's
	// own values.
	Env []string
	// Stderr receives the LLAWP's standard error as is (go-plugin also
	// parses it into Logger); nil for none.
	Stderr io.Writer
	// Logger receives go-plugin's logs and the LLAWP's stderr lines.
	Logger zerolog.Logger
	// StartTimeout bounds the start up to the handshake; 0 means 1 minute.
	// A deadline on Launch's context shortens it. A cancel of the context
	// takes effect only when go-plugin's start returns: it holds the
	// client's lock until then, and Kill needs it.
	StartTimeout time.Duration
	// SocketDir is where the LLAWP makes its unix socket; "" is the
	// system's temporary folder.
	SocketDir string
}

// Owner is the HLA process that launched the LLAWP: the one that may stop it.
type Owner struct {
	client   *plugin.Client
	cmd      *exec.Cmd
	llawp    LLAWP
	pid      int
	reattach Reattach

	exited   chan struct{}
	stop     chan struct{}
	watching sync.WaitGroup
	killOnce sync.Once
}

// exitPoll is how often the owner looks whether the LLAWP has exited:
// go-plugin only has a boolean for it.
const exitPoll = 50 * time.Millisecond

// Launch starts the LLAWP as a go-plugin plugin and connects to it. The
// kernel sends the LLAWP SIGTERM if the thread that started it dies
// (Pdeathsig), and the LLAWP watches for its owner's death on its own as
// well.
func Launch(ctx context.Context, cfg LaunchConfig) (*Owner, error) {
	if cfg.Path == "" {
		return nil, errors.New("ipc: no LLAWP binary to launch")
	}
	cmd := procname.Command(cfg.Path, cfg.Name, cfg.Args...)
	// go-plugin appends the host's environment after Cmd.Env, which would
	// make the host's values win over cfg.Env; so the environment is built
	// here and SkipHostEnv keeps go-plugin from adding it again.
	cmd.Env = append(os.Environ(), cfg.Env...)
	cmd.Env = append(cmd.Env, EnvOwnerPID+"="+strconv.Itoa(os.Getpid()))
	if cfg.SocketDir != "" {
		cmd.Env = append(cmd.Env, plugin.EnvUnixSocketDir+"="+cfg.SocketDir)
	}
	// Pdeathsig fires when the thread that forked exits. The Go runtime
	// ends a thread only when a goroutine exits locked to it, so in
	// practice this is the owner's death; the LLAWP's own watch of its
	// owner covers the rest. SIGTERM rather than SIGKILL: the LLAWP then
	// closes its Policy Server sockets (a FIN in the trace, not a silence)
	// and says in WA.log why it left.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}

	timeout := cfg.StartTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = max(time.Until(d), time.Millisecond)
	}
	stderr := cfg.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          PluginMap(nil),
		Cmd:              cmd,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     timeout,
		Stderr:           stderr,
		// What the LLAWP writes to its os.Stdout after the handshake comes
		// back over go-plugin's stdio stream; it must not reach the HLA's
		// stdout, which a lab may be reading.
		SyncStdout: io.Discard,
		SyncStderr: &lineLogger{log: cfg.Logger.With().Str("stream", "llawp stderr").Logger()},
		Logger:     HCLogger(cfg.Logger, "go-plugin"),
	})

	type result struct {
		raw any
		err error
	}
	done := make(chan result, 1)
	go func() {
		cp, err := client.Client()
		if err != nil {
			done <- result{err: err}
			return
		}
		raw, err := cp.Dispense(PluginName)
		done <- result{raw, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		// Kill waits for the start to finish, then stops what it started.
		client.Kill()
		<-done
		return nil, fmt.Errorf("ipc: launching %s: %w", cfg.Path, ctx.Err())
	}
	if res.err != nil {
		client.Kill()
		return nil, fmt.Errorf("ipc: launching %s: %w", cfg.Path, res.err)
	}
	llawp, ok := res.raw.(LLAWP)
	if !ok {
		client.Kill()
		return nil, fmt.Errorf("ipc: %s dispensed %T, not an LLAWP", cfg.Path, res.raw)
	}
	rc := client.ReattachConfig()
	if rc == nil || rc.Addr == nil {
		client.Kill()
		return nil, fmt.Errorf("ipc: %s started but gave no address", cfg.Path)
	}
	o := &Owner{
		client: client,
		cmd:    cmd,
		llawp:  llawp,
		pid:    rc.Pid,
		reattach: Reattach{
			Protocol: string(rc.Protocol), ProtocolVersion: int(Handshake.ProtocolVersion),
			Network: rc.Addr.Network(), Addr: rc.Addr.String(), PID: rc.Pid,
		},
		exited: make(chan struct{}),
		stop:   make(chan struct{}),
	}
	o.watching.Add(1)
	go o.watchExit()
	return o, nil
}

func (o *Owner) watchExit() {
	defer o.watching.Done()
	t := time.NewTicker(exitPoll)
	defer t.Stop()
	for {
		if o.client.Exited() {
			close(o.exited)
			return
		}
		select {
		case <-t.C:
		case <-o.stop:
			return
		}
	}
}

// LLAWP is the service of the launched LLAWP.
func (o *Owner) LLAWP() LLAWP { return o.llawp }

// PID is the LLAWP's process id.
func (o *Owner) PID() int { return o.pid }

// ReattachJSON is Reattach as one line of text, as the Apache model's
// parent sends it to its children.
func (o *Owner) ReattachJSON() string {
	b, _ := json.Marshal(o.reattach)
	return string(b)
}

// Exited is closed when the LLAWP process has exited, for whatever reason.
func (o *Owner) Exited() <-chan struct{} { return o.exited }

// Command is the LLAWP's binary and argv, as started.
func (o *Owner) Command() (path string, args []string) { return o.cmd.Path, o.cmd.Args }

// ExitState is the LLAWP's wait status and resource usage once Exited is
// closed; nil before. go-plugin reaps the process and sets the flag that
// closes Exited under its lock after Wait: reading after it is safe.
func (o *Owner) ExitState() *os.ProcessState {
	select {
	case <-o.exited:
		return o.cmd.ProcessState
	default:
		return nil
	}
}

// Kill stops the LLAWP: go-plugin asks it to shut down, waits 2 s, then
// kills it. It stops it for every attached worker too. Safe to call more
// than once.
func (o *Owner) Kill() {
	o.killOnce.Do(func() {
		o.client.Kill()
		close(o.stop)
		o.watching.Wait()
		select {
		case <-o.exited:
		default:
			if o.client.Exited() {
				close(o.exited)
			}
		}
	})
}

// Reattach locates a running LLAWP. It is go-plugin's ReattachConfig in a
// form that survives JSON (go-plugin's holds a net.Addr interface).
type Reattach struct {
	Protocol        string `json:"protocol"`
	ProtocolVersion int    `json:"protocol_version"`
	Network         string `json:"network"`
	Addr            string `json:"addr"`
	PID             int    `json:"pid"`
}

// ParseReattach reads Owner.ReattachJSON's output.
func ParseReattach(s string) (Reattach, error) {
	var r Reattach
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Reattach{}, fmt.Errorf("ipc: LLAWP reattach config %q: %w", s, err)
	}
	if r.Protocol != string(plugin.ProtocolGRPC) {
		return Reattach{}, fmt.Errorf("ipc: LLAWP reattach config: protocol %q, want %q", r.Protocol, plugin.ProtocolGRPC)
	}
	if r.ProtocolVersion != int(Handshake.ProtocolVersion) {
		return Reattach{}, fmt.Errorf("ipc: LLAWP reattach config: protocol version %d, this build speaks %d", r.ProtocolVersion, Handshake.ProtocolVersion)
	}
	if r.Network != "unix" && r.Network != "tcp" {
		return Reattach{}, fmt.Errorf("ipc: LLAWP reattach config: network %q, want unix or tcp", r.Network)
	}
	if r.Addr == "" {
		return Reattach{}, errors.New("ipc: LLAWP reattach config has no address")
	}
	return r, nil
}

// Attached is a worker's connection to an LLAWP that another process owns.
// It has no Kill, on purpose: only the owner may stop the LLAWP.
type Attached struct {
	LLAWP
	pid  int
	conn *grpc.ClientConn
}

// PID is the LLAWP's process id.
func (a *Attached) PID() int { return a.pid }

// Close closes this worker's connection; the LLAWP keeps running.
func (a *Attached) Close() error { return a.conn.Close() }

// Attach connects to the LLAWP described by reattachJSON (Owner.ReattachJSON)
// and checks that it answers. It dials gRPC itself rather than through a
// go-plugin client in reattach mode: that client's Kill would kill the
// LLAWP, its Close would shut the LLAWP's server down for everyone, and it
// would compete with the owner for go-plugin's single-client broker and
// stdio streams.
func Attach(ctx context.Context, reattachJSON string) (*Attached, error) {
	r, err := ParseReattach(reattachJSON)
	if err != nil {
		return nil, err
	}
	network, addr := r.Network, r.Addr
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}))
	if err != nil {
		return nil, fmt.Errorf("ipc: attach to LLAWP pid %d at %s: %w", r.PID, addr, err)
	}
	// go-plugin registers this health service in every plugin: it tells an
	// LLAWP that is up from a socket file left by one that died.
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: plugin.GRPCServiceName})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ipc: attach to LLAWP pid %d at %s: %w", r.PID, addr, err)
	}
	return &Attached{LLAWP: NewClient(conn), pid: r.PID, conn: conn}, nil
}

// lineLogger logs what the LLAWP wrote to its os.Stdout/os.Stderr after
// the handshake (go-plugin relays it): nothing should, so it is a warning.
type lineLogger struct {
	log zerolog.Logger
	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if line := bytes.TrimSpace(l.buf[:i]); len(line) > 0 {
			l.log.Warn().Msg(string(line))
		}
		l.buf = l.buf[i+1:]
	}
}
