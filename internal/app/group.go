package app

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// groupCommit applies in one ledger transaction the batches that several
// partitions hand in at about the same time.
//
// Each partition applies its commands in order, one batch after the other,
// and waits for a batch's commit before it fetches the next. Under single
// requests a partition's batch holds about one command per waiting client,
// two or three in all, and every ledger transaction pays its round trips,
// statements and commit for those few. Here a batch that arrives while
// writers transactions are already running waits in a queue; the next
// transaction to start takes everything queued, up to max commands. Each
// partition still sees its own batch applied whole or not at all: when a
// merged transaction fails, every batch of it is applied again on its own,
// and each partition gets its own outcome and handles it as before. The
// order of a partition's commands is kept: its batches never overlap, and
// within a merged transaction they keep their order.
//
// Beside running transactions that hold fewer than spread commands in all,
// a second one (and any beyond it, up to writers) starts only once spread
// commands wait: under single requests the batches that arrive during one
// transaction go together into the next, rather than into two small ones
// side by side. Beside a large transaction (a bulk batch, a backlog) the
// next starts at once, so that nothing waits for it with a writer idle.
type groupCommit struct {
	apply   func(context.Context, []bus.Command) ([]postgres.Applied, error)
	max     int // commands per merged transaction (a batch is never split)
	writers int // transactions at once, at most
	spread  int // commands, running or waiting, that start one more transaction

	mu      sync.Mutex
	queue   []*groupEntry
	waiting int           // commands in queue
	running int           // transactions applying
	runCmds int           // commands in the transactions applying
	freed   chan struct{} // closed (and replaced) when a transaction ends

	// queued, when set, is called with the queue's length after each
	// arrival (tests use it to know when batches wait).
	queued func(int)
}

// groupEntry is one partition's batch, waiting or being applied.
type groupEntry struct {
	cmds    []bus.Command
	applied []postgres.Applied
	err     error
	done    chan struct{}
}

func newGroupCommit(apply func(context.Context, []bus.Command) ([]postgres.Applied, error),
	writers, max int) *groupCommit {
	return &groupCommit{apply: apply, max: max, writers: writers, spread: groupSpread(max),
		freed: make(chan struct{})}
}

// groupSpread is the spread of a group commit of max commands per
// transaction: an eighth of it, at least one.
func groupSpread(max int) int {
	if max < 8 {
		return 1
	}
	return max / 8
}

// Apply applies cmds, in order, in one ledger transaction that may also hold
// other partitions' batches, and returns what the ledger returned for them.
func (g *groupCommit) Apply(ctx context.Context, cmds []bus.Command) ([]postgres.Applied,
	error) {
	e := &groupEntry{cmds: cmds, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, e)
	g.waiting += len(cmds)
	n := len(g.queue)
	g.mu.Unlock()
	if g.queued != nil {
		g.queued(n)
	}
	for {
		// A batch already applied returns at once, rather than starting a
		// transaction for other partitions' batches first.
		select {
		case <-e.done:
			return e.applied, e.err
		default:
		}
		g.mu.Lock()
		// Beside a small transaction, the batches wait to go together
		// into the next; beside a large one (a bulk batch, a backlog) they
		// do not wait for it.
		start := len(g.queue) > 0 && (g.running == 0 ||
			g.running < g.writers && (g.waiting >= g.spread || g.runCmds >= g.spread))
		if !start {
			// This batch is being applied by another caller, or waits for
			// a transaction to end.
			freed := g.freed
			g.mu.Unlock()
			select {
			case <-e.done:
				return e.applied, e.err
			case <-freed:
			}
			continue
		}
		group, size := g.take()
		g.running++
		g.runCmds += size
		g.mu.Unlock()
		g.runTaken(ctx, group, size)
	}
}

// runTaken runs group, of size commands, and then gives its place back,
// even when applying it panics.
func (g *groupCommit) runTaken(ctx context.Context, group []*groupEntry, size int) {
	defer func() {
		g.mu.Lock()
		g.running--
		g.runCmds -= size
		close(g.freed)
		g.freed = make(chan struct{})
		g.mu.Unlock()
	}()
	g.run(ctx, group)
}

// take removes from the head of the queue the batches of the next
// transaction (at least one, then as many as fit in max commands) and
// returns them with their number of commands. g.mu is held.
func (g *groupCommit) take() ([]*groupEntry, int) {
	n, size := 0, 0
	for n < len(g.queue) && (n == 0 || size+len(g.queue[n].cmds) <= g.max) {
		size += len(g.queue[n].cmds)
		n++
	}
	group := make([]*groupEntry, n)
	copy(group, g.queue)
	g.queue = append(g.queue[:0], g.queue[n:]...)
	g.waiting -= size
	return group, size
}

// run applies group in one transaction or, when that fails and the group
// holds several batches, each batch in its own.
func (g *groupCommit) run(ctx context.Context, group []*groupEntry) {
	defer func() {
		for _, e := range group {
			close(e.done)
		}
	}()
	// What a batch answers when applying panics before it has an outcome.
	for _, e := range group {
		e.err = errors.New("ledger transaction did not finish")
	}
	if len(group) == 1 {
		e := group[0]
		e.applied, e.err = g.apply(ctx, e.cmds)
		return
	}
	var all []bus.Command
	for _, e := range group {
		all = append(all, e.cmds...)
	}
	applied, err := g.apply(ctx, all)
	switch {
	case err == nil && len(applied) == len(all):
		for _, e := range group {
			e.applied, applied = applied[:len(e.cmds):len(e.cmds)], applied[len(e.cmds):]
			e.err = nil
		}
	case err == nil:
		// Committed, but not one result per command: applying the batches
		// again would answer their commands as replays. Each partition gets
		// the error and handles it as a failed batch.
		err = fmt.Errorf("ledger answered %d results for %d commands", len(applied), len(all))
		for _, e := range group {
			e.err = err
		}
	default:
		for _, e := range group {
			e.applied, e.err = g.apply(ctx, e.cmds)
		}
	}
}
