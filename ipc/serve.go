package ipc

import (
	"errors"
	"os"
	"strconv"
	"sync"

	"github.com/hashicorp/go-plugin"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
)

// NotLaunchedMessage is what the LLAWP says when it is run by hand.
const NotLaunchedMessage = `This is the LLAWP, the agent's low-level worker process. It is not
meant to be run by hand: the HLA (hla, playing w3wp.exe or httpd) starts it
through hashicorp/go-plugin, which hands it a handshake cookie and reads its
standard output. Start the web server (hla, or agentlab run) instead.`

// LaunchedByOwner reports whether this process was started by an owner
// through go-plugin, which sets the handshake's magic cookie.
func LaunchedByOwner() bool {
	return os.Getenv(Handshake.MagicCookieKey) == Handshake.MagicCookieValue
}

// OwnerPID is the pid of the process that launched this one, from
// EnvOwnerPID; 0 when it is not set.
func OwnerPID() int {
	pid, err := strconv.Atoi(os.Getenv(EnvOwnerPID))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// ErrOwnerShutdown is Serve's answer when the owner stopped the plugin
// (Owner.Kill asks go-plugin's controller to shut the server down).
var ErrOwnerShutdown = errors.New("the owner shut the LLAWP down")

// ErrNotLaunched is Serve's answer in a process that no owner launched.
var ErrNotLaunched = errors.New("not launched by an HLA through go-plugin")

// Server serves an LLAWP implementation as the go-plugin plugin.
type Server struct {
	impl LLAWP
	log  zerolog.Logger

	mu      sync.Mutex
	grpc    *grpc.Server
	stopped bool
}

// NewServer serves impl; go-plugin's own logs go to log.
func NewServer(impl LLAWP, log zerolog.Logger) *Server {
	return &Server{impl: impl, log: log}
}

// Serve writes go-plugin's handshake line to stdout and serves until the
// owner shuts the plugin down (ErrOwnerShutdown) or Stop is called (nil).
// Nothing else may write to stdout, before or after. From here on
// os.Stdout and os.Stderr are go-plugin's pipes to the owner: loggers must
// hold the original *os.File, taken before Serve.
//
// go-plugin also starts ignoring SIGINT here, on purpose: a Ctrl-C in a
// terminal reaches the whole process group, and the owner, not the
// plugin, decides when the LLAWP stops.
func (s *Server) Serve() error {
	if !LaunchedByOwner() {
		return ErrNotLaunched
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         PluginMap(s.impl),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			g := grpc.NewServer(opts...)
			s.mu.Lock()
			defer s.mu.Unlock()
			s.grpc = g
			if s.stopped {
				// Stop came before the server existed: it will refuse to
				// serve, and plugin.Serve returns at once.
				g.Stop()
			}
			return g
		},
		Logger: HCLogger(s.log, "go-plugin"),
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return nil
	case s.grpc == nil:
		return errors.New("ipc: go-plugin could not start serving; the reason is in the log")
	}
	s.stopped = true
	return ErrOwnerShutdown
}

// Stop ends Serve: open Watch streams end and calls in flight fail.
func (s *Server) Stop() {
	s.mu.Lock()
	g := s.grpc
	s.stopped = true
	s.mu.Unlock()
	if g != nil {
		g.Stop()
	}
}
