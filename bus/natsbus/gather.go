package natsbus

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
)

// Gathering single commands. With the store syncing every write, each
// stored message waits for a disk sync of its own, and a single request
// (one REST or SOAP accrual) is one message: the command stream then took
// about as many requests a second as the disk took syncs, with the cores
// partly idle. PublishCommand now sends a command at once when nothing else
// of its partition is on its way to the server; while something is, the
// commands that arrive for that partition wait, and go together as one pack
// (publish_batch.go) as soon as the message before them is stored. Nothing
// waits for a timer: under light load every command travels alone, as
// before, and under heavy load the packs grow with the load, one message
// and one sync for many requests.
//
// Within a partition the commands reach the stream in the order they were
// handed to PublishCommand, as before (one member's commands are always in
// one partition).

// gatherQueue holds the commands of one partition that wait for the
// message before them.
type gatherQueue struct {
	mu      sync.Mutex
	sending bool // a message of this partition is on its way
	waiting []*gathered
}

// gathered is one command waiting in a gatherQueue, and then its answer.
type gathered struct {
	cmd  bus.Command
	msg  *nats.Msg
	done chan struct{} // closed once dup and err are set
	dup  bool
	err  error
}

// gatherQueues maps a partition's subject to its queue.
type gatherQueues struct {
	mu     sync.Mutex
	queues map[string]*gatherQueue
}

func (g *gatherQueues) of(subject string) *gatherQueue {
	g.mu.Lock()
	defer g.mu.Unlock()
	q := g.queues[subject]
	if q == nil {
		if g.queues == nil {
			g.queues = map[string]*gatherQueue{}
		}
		q = &gatherQueue{}
		g.queues[subject] = q
	}
	return q
}

// gatherPublish sends m (the message of cmd) alone when its partition has
// nothing on its way, or else queues it for the next pack of its partition.
// It returns once the server has answered for it, or ctx ends; a command
// whose caller gave up may still be stored.
func (b *Bus) gatherPublish(ctx context.Context, cmd bus.Command, m *nats.Msg) (bool, error) {
	q := b.gather.of(m.Subject)
	q.mu.Lock()
	if q.sending {
		g := &gathered{cmd: cmd, msg: m, done: make(chan struct{})}
		q.waiting = append(q.waiting, g)
		q.mu.Unlock()
		select {
		case <-g.done:
			return g.dup, g.err
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	q.sending = true
	q.mu.Unlock()
	defer b.sendWaiting(q) // whatever happens to this publish, the queue moves on
	return b.publishAlone(ctx, cmd, m)
}

// sendWaiting hands the commands queued behind the message just stored to
// a goroutine that sends them, or marks the partition free when none wait.
func (b *Bus) sendWaiting(q *gatherQueue) {
	q.mu.Lock()
	group := q.waiting
	q.waiting = nil
	if len(group) == 0 {
		q.sending = false
		q.mu.Unlock()
		return
	}
	q.mu.Unlock()
	go b.sendGathered(q, group)
}

// sendGathered sends the commands of group (all of one partition, in
// order) as packs, tells each waiter its answer, then goes on with what
// queued meanwhile. No single caller's context bounds it: a caller that
// gives up does not cancel the others' commands. A panic on the way fails
// the group's commands, not the process.
func (b *Bus) sendGathered(q *gatherQueue, group []*gathered) {
	defer b.sendWaiting(q)
	dup, errs := make([]bool, len(group)), make([]error, len(group))
	defer func() {
		if r := recover(); r != nil {
			b.log.Error("Sending waiting commands failed", "commands", len(group), "panic", r)
			for i, g := range group {
				errs[i] = fmt.Errorf("publish command %s: %v", g.cmd.ID, r)
			}
		}
		for i, g := range group {
			g.dup, g.err = dup[i], errs[i]
			close(g.done)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), asyncAckTimeout)
	defer cancel()
	cmds := make([]bus.Command, len(group))
	one := make([]*nats.Msg, len(group))
	at := make([]int, len(group))
	for i, g := range group {
		cmds[i], one[i], at[i] = g.cmd, g.msg, i
	}
	subject := group[0].msg.Subject
	b.storePacked(ctx, cmds, one, map[string][]int{subject: at}, []string{subject}, dup, errs)
}
