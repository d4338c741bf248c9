package llawp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// DefaultOwnerPoll is how often the LLAWP looks for its owner.
const DefaultOwnerPoll = 250 * time.Millisecond

// ErrOwnerGone is OwnerWatch's answer when the owner process has died.
var ErrOwnerGone = errors.New("the owner process is gone")

// OwnerWatch ends the LLAWP when the HLA that launched it dies: go-plugin
// leaves a plugin running when its host dies, and Pdeathsig can miss (the
// owner dying before it was set, or the forking thread ending first).
// Linux gives an orphan a new parent, so a change of getppid is the sign.
type OwnerWatch struct {
	// PID is the owner's pid (ipc.OwnerPID); 0 takes the parent at start.
	PID int
	// Interval between looks; 0 means DefaultOwnerPoll.
	Interval time.Duration
	Getppid  func() int
}

// Run returns ErrOwnerGone (wrapped) when the parent is no longer the
// owner, or ctx's error.
func (w OwnerWatch) Run(ctx context.Context) error {
	getppid := w.Getppid
	if getppid == nil {
		getppid = os.Getppid
	}
	owner := w.PID
	if owner == 0 {
		owner = getppid()
	}
	every := w.Interval
	if every <= 0 {
		every = DefaultOwnerPoll
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if p := getppid(); p != owner {
			return fmt.Errorf("%w: pid %d, the parent now is %d", ErrOwnerGone, owner, p)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Dying tells a SIGTERM that Pdeathsig sent, because the owner is dying,
// from any other. Pdeathsig fires as the owner's forking thread exits,
// which can be a moment before the whole owner is gone and this process
// reparented: so it waits a little for getppid to change. It is false
// when no owner is known (PID 0).
func (w OwnerWatch) Dying() bool {
	if w.PID == 0 {
		return false
	}
	getppid := w.Getppid
	if getppid == nil {
		getppid = os.Getppid
	}
	for range 10 {
		if getppid() != w.PID {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// StopOnSIGTERM is a context that ends at the first SIGTERM, with what it
// means as its cause: ErrOwnerGone (wrapped) when w's owner is dying, since
// Pdeathsig sends that SIGTERM too; Run logs the cause as its reason to
// leave. stop ends it with no cause.
//
// SIGTERM only: go-plugin makes the plugin ignore SIGINT, because a Ctrl-C
// reaches the whole process group and the owner decides when its LLAWP
// stops.
func StopOnSIGTERM(w OwnerWatch) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	// Never undone: the owner's death can send several SIGTERMs (Pdeathsig
	// fires as each of its threads exits), and once nothing listened the
	// next would kill the LLAWP before it closes its sockets and logs why.
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-sigs:
			cause := fmt.Errorf("received signal %v", sig)
			if w.Dying() {
				cause = fmt.Errorf("%w (pid %d): %v", ErrOwnerGone, w.PID, cause)
			}
			cancel(cause)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
}
