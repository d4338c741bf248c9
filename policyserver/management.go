package policyserver

import (
	"fmt"
	"slices"
	"sync"

	"github.com/agentlab/agentlab/proto/tlipb"
)

// ManagementCommand is one command for an agent. Arg is the user
// (dirOid/userDN) for 196, the realm for 198, key material for 189-193.
type ManagementCommand struct {
	Code int
	Name string
	Arg  string
}

// NewManagementCommand fills Name from Code. The flushes of one user or
// one realm need to say which.
func NewManagementCommand(code int, arg string) (ManagementCommand, error) {
	name := CommandName(code)
	if name == "" {
		return ManagementCommand{}, fmt.Errorf("%w %d: known codes are 189 to 198", ErrUnknownCommand, code)
	}
	switch tlipb.ManagementCode(code) {
	case tlipb.ManagementCode_FLUSH_USER, tlipb.ManagementCode_FLUSH_REALM:
		if arg == "" {
			what := map[tlipb.ManagementCode]string{tlipb.ManagementCode_FLUSH_USER: "dirOid/userDN", tlipb.ManagementCode_FLUSH_REALM: "the realm"}
			return ManagementCommand{}, fmt.Errorf("management command %d %s needs an argument (%s)", code, name, what[tlipb.ManagementCode(code)])
		}
	}
	return ManagementCommand{Code: code, Name: name, Arg: arg}, nil
}

// CommandName is the vendor's name of a command code (189 to 198), ""
// for any other: agentlab's own CONFIG_CHANGED is not a command a Policy
// Server queues.
func CommandName(code int) string {
	if code < int(tlipb.ManagementCode_AFFILIATE_KEY) || code > int(tlipb.ManagementCode_FLUSH_REALM) {
		return ""
	}
	return tlipb.ManagementCode_name[int32(code)]
}

// DefaultManagementQueueLimit bounds each agent's queue: an agent that
// stops polling must not make the server grow without limit.
const DefaultManagementQueueLimit = 1000

// ManagementQueue is a bounded FIFO of commands per agent. When a queue is
// full the oldest command is dropped and counted: the newest flush is the
// one that matters. It is safe for concurrent use.
type ManagementQueue struct {
	mu     sync.Mutex
	limit  int
	agents []string
	queues map[string]*cmdRing
}

// cmdRing appends until it holds limit commands; from then on it
// overwrites the oldest. Only Drain removes, and it removes everything, so
// head stays 0 until the ring is full.
type cmdRing struct {
	buf     []ManagementCommand
	head    int
	dropped uint64
}

// NewManagementQueue makes a queue for the given agents; limit <= 0 means
// DefaultManagementQueueLimit.
func NewManagementQueue(agents []string, limit int) *ManagementQueue {
	if limit <= 0 {
		limit = DefaultManagementQueueLimit
	}
	q := &ManagementQueue{limit: limit, agents: slices.Clone(agents), queues: map[string]*cmdRing{}}
	for _, a := range agents {
		q.queues[a] = &cmdRing{}
	}
	return q
}

// Enqueue adds a command for one agent, or for every agent when agent is "".
func (q *ManagementQueue) Enqueue(agent string, cmd ManagementCommand) error {
	name := CommandName(cmd.Code)
	if name == "" {
		return fmt.Errorf("%w %d", ErrUnknownCommand, cmd.Code)
	}
	if cmd.Name == "" {
		cmd.Name = name
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if agent == "" {
		for _, a := range q.agents {
			q.queues[a].push(cmd, q.limit)
		}
		return nil
	}
	r := q.queues[agent]
	if r == nil {
		return fmt.Errorf("management: %w %q", ErrUnknownAgent, agent)
	}
	r.push(cmd, q.limit)
	return nil
}

func (r *cmdRing) push(cmd ManagementCommand, limit int) {
	if len(r.buf) < limit {
		r.buf = append(r.buf, cmd)
		return
	}
	r.buf[r.head] = cmd
	r.head = (r.head + 1) % len(r.buf)
	r.dropped++
}

// Drain returns an agent's pending commands, oldest first, and empties its
// queue. An unknown agent has none.
func (q *ManagementQueue) Drain(agent string) []ManagementCommand {
	q.mu.Lock()
	defer q.mu.Unlock()
	r := q.queues[agent]
	if r == nil || len(r.buf) == 0 {
		return nil
	}
	out := make([]ManagementCommand, 0, len(r.buf))
	out = append(out, r.buf[r.head:]...)
	out = append(out, r.buf[:r.head]...)
	r.head = 0
	r.buf = r.buf[:0]
	return out
}

// Len is the number of commands waiting for an agent.
func (q *ManagementQueue) Len(agent string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if r := q.queues[agent]; r != nil {
		return len(r.buf)
	}
	return 0
}

// Dropped counts the commands an agent lost because its queue was full.
func (q *ManagementQueue) Dropped(agent string) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if r := q.queues[agent]; r != nil {
		return r.dropped
	}
	return 0
}

// Management is the store's queue, one FIFO per agent of the store.
func (s *Store) Management() *ManagementQueue { return s.mgmt }

// Enqueue queues a command for an agent of the store, or every agent when
// agent is "".
func (s *Store) Enqueue(agent string, cmd ManagementCommand) error {
	return s.mgmt.Enqueue(agent, cmd)
}

// Drain takes an agent's pending commands, oldest first.
func (s *Store) Drain(agent string) []ManagementCommand { return s.mgmt.Drain(agent) }
