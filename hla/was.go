package hla

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentlab/agentlab/trace"
)

// RapidFail is WAS's rapid-fail protection: an application pool whose
// workers fail MaxCrashes times within Interval is stopped, and HTTP.sys
// answers 503 for it until an administrator starts it again (IIS's
// rapidFailProtectionMaxCrashes and rapidFailProtectionInterval).
type RapidFail struct {
	// MaxCrashes: 0 means IIS's default, 5; negative turns the protection off.
	MaxCrashes int
	// Interval: 0 means IIS's default, 5 minutes.
	Interval time.Duration
}

func (r RapidFail) limits() (int, time.Duration) {
	n, d := r.MaxCrashes, r.Interval
	if n == 0 {
		n = 5
	}
	if d <= 0 {
		d = 5 * time.Minute
	}
	return n, d
}

// RunWAS runs the IIS model's parent, WAS (in svchost.exe), until ctx
// ends. Like HTTP.sys it owns the listening socket, so that requests wait
// in its backlog while a worker starts; like WAS it starts the
// application pool's worker, w3wp.exe (this binary again, which does its
// bootstrap and HCO phase and launches its own LLAWP), and starts a new
// one when it dies, until rapid-fail protection stops the pool.
func RunWAS(ctx context.Context, cfg ParentConfig) error {
	cfg.model = ModelIIS
	// An application pool runs one w3wp.exe (maxProcesses=1, no web
	// garden), whatever --workers says: that flag counts httpd children.
	cfg.Workers = 1
	// The LLAWP.exe of a w3wp.exe that dies outlives it for a moment:
	// as the tree's subreaper, WAS becomes its parent then, and sees and
	// records its end (reapOrphan) where nobody else could.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		cfg.Log.Warn().Err(err).Msg("Cannot become the child subreaper: the LLAWP.exe of a dead w3wp.exe will exit unrecorded")
	}
	return runParent(ctx, cfg)
}

// reapOrphan waits for the LLAWP.exe of a w3wp.exe that died, now WAS's
// child (RunWAS made WAS the subreaper), and records its Process Exit
// with its real status. The LLAWP leaves on its own once it sees its
// owner gone; if WAS stops first, it is told to stop.
func (p *parent) reapOrphan(ctx context.Context, llawp, owner trace.Process) {
	orphan, err := os.FindProcess(llawp.PID)
	if err != nil {
		return
	}
	p.orphans.Add(1)
	go func() {
		defer p.orphans.Done()
		stop := context.AfterFunc(ctx, func() { orphan.Signal(syscall.SIGTERM) })
		defer stop()
		ps, err := orphan.Wait()
		if err != nil {
			// Not WAS's child: gone already, or no subreaper.
			p.log.Debug().Err(err).Int("llawp_pid", llawp.PID).Msg("LLAWP of a dead worker not reaped")
			return
		}
		llawp.Exit = trace.ExitOf(ps)
		llawp.Exit.Action = fmt.Sprintf("left on its own: its owner %s (pid %d) is gone", owner.Name, owner.PID)
		p.cfg.Recorder.ProcessExit(llawp)
	}()
}

// rapidFail counts a w3wp.exe death against rapid-fail protection. It
// returns true when the pool is now stopped: nothing restarts the worker,
// and the 503 responder answers on the socket, as HTTP.sys does for a
// stopped application pool. Called by run's loop only.
func (p *parent) rapidFail(c *child, proc trace.Process) bool {
	maxCrashes, interval := p.cfg.RapidFail.limits()
	if maxCrashes < 0 {
		return false
	}
	now := time.Now()
	kept := p.crashes[:0]
	for _, t := range p.crashes {
		if now.Sub(t) < interval {
			kept = append(kept, t)
		}
	}
	p.crashes = append(kept, now)
	if len(p.crashes) < maxCrashes {
		return false
	}
	p.log.Error().Int("child_pid", c.pid).Int("failures", len(p.crashes)).Dur("interval", interval).
		Msg("Rapid-fail protection: the application pool is stopped; HTTP answers 503")
	p.exited(proc, c.cmd.ProcessState, true, fmt.Sprintf(
		"rapid-fail protection: %d worker failures within %s, so WAS stops the application pool; HTTP answers 503 Service Unavailable",
		len(p.crashes), interval))
	select {
	case <-p.poolStopped:
	default:
		close(p.poolStopped)
	}
	return true
}

// unavailableBody is what HTTP.sys sends for a stopped application pool.
const unavailableBody = "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"\"http://www.w3.org/TR/html4/strict.dtd\">\r\n" +
	"<HTML><HEAD><TITLE>Service Unavailable</TITLE>\r\n" +
	"<META HTTP-EQUIV=\"Content-Type\" Content=\"text/html; charset=us-ascii\"></HEAD>\r\n" +
	"<BODY><h2>Service Unavailable</h2>\r\n<hr><p>HTTP Error 503. The service is unavailable.</p>\r\n</BODY></HTML>\r\n"

// serveUnavailable is the 503 responder: once rapid-fail protection has
// stopped the application pool, it answers every request on the socket
// with 503 until ctx ends. It accepts on a listener of its own made from
// the children's descriptor: the parent's first listener shares that
// descriptor's open file, which handing it to the children left in
// blocking mode (see inheritable); net.FileListener sets it back to
// non-blocking, and no worker is left to mind. A responder that fails is
// logged, and the parent goes on: nothing else serves that socket anyway.
func (p *parent) serveUnavailable(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-p.poolStopped:
	}
	l, err := net.FileListener(p.lf)
	if err != nil {
		p.log.Error().Err(err).Msg("Cannot answer 503 on the listening socket")
		<-ctx.Done()
		return nil
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=us-ascii")
			w.Header().Set("Server", "Microsoft-HTTPAPI/2.0")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, unavailableBody)
		}),
	}
	defer context.AfterFunc(ctx, func() { srv.Close() })()
	p.log.Info().Int("pid", os.Getpid()).Str("addr", p.addr).Msg("Answering 503 Service Unavailable: the application pool is stopped")
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
		p.log.Error().Err(err).Msg("503 responder stopped")
		<-ctx.Done()
	}
	return nil
}
