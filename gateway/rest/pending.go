package rest

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
)

// A status poll for a command the ledger has no result for asks the bus
// where the command is (Locate), and the bus answers by reading what core
// has not acknowledged yet: about 5 ms with nothing waiting, 90 ms with
// 20,000 commands waiting, and more as the backlog grows. The polls come
// when the gateway answered 202, which is when a backlog builds, so a
// gateway remembers what it answered 202 for and answers those polls
// without reading the backlog, and lets only a few searches run at once.

// answeredPending remembers the commands this gateway answered 202 for
// lately: each at least pendingKeep and at most three times that, at most
// 2 × pendingCap of them. A command it remembers was stored on the bus,
// so while the ledger has no result for it, it is waiting on its
// partition unless it was set aside as a dead letter, which two lookups
// tell.
type answeredPending struct {
	mu      sync.Mutex
	seed    maphash.Seed
	cur     map[uint64]struct{}
	prev    map[uint64]struct{}
	started time.Time // when cur was started
	now     func() time.Time
}

const (
	pendingKeep = 30 * time.Minute
	pendingCap  = 250_000
)

func newAnsweredPending(now func() time.Time) *answeredPending {
	return &answeredPending{seed: maphash.MakeSeed(), cur: map[uint64]struct{}{},
		prev: map[uint64]struct{}{}, started: now(), now: now}
}

// key is a digest of (source, txn). Two commands with the same digest
// would make a poll for one that was never sent answer pending instead of
// 404; with 64 bits and a seed of this process that does not happen.
func (p *answeredPending) key(source, txn string) uint64 {
	var h maphash.Hash
	h.SetSeed(p.seed)
	h.WriteString(source)
	h.WriteByte(0)
	h.WriteString(txn)
	return h.Sum64()
}

// rotate starts a new generation when the current one is old or full; the
// previous one is forgotten. Call with mu held.
func (p *answeredPending) rotate() {
	age := p.now().Sub(p.started)
	switch {
	case age >= 2*pendingKeep:
		// Nothing was added or asked for a whole generation: the current
		// one is past keeping too.
		p.prev, p.cur, p.started = make(map[uint64]struct{}), make(map[uint64]struct{}), p.now()
	case age >= pendingKeep || len(p.cur) >= pendingCap:
		p.prev, p.cur, p.started = p.cur, make(map[uint64]struct{}), p.now()
	}
}

// add remembers that (source, txn) was answered 202.
func (p *answeredPending) add(source, txn string) {
	k := p.key(source, txn)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rotate()
	p.cur[k] = struct{}{}
}

// has reports whether (source, txn) was answered 202 lately.
func (p *answeredPending) has(source, txn string) bool {
	k := p.key(source, txn)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rotate()
	_, inCur := p.cur[k]
	_, inPrev := p.prev[k]
	return inCur || inPrev
}

// deadChecker is a Publisher that can tell, in two lookups, whether a
// command was set aside as a dead letter (bus.DeadCommandSubject).
type deadChecker interface {
	DeadLettered(ctx context.Context, source, txn string) (bool, error)
}

// Status lookups, as counted by Options.StatusLookup.
const (
	// LookupRemembered: answered pending from what this gateway answered
	// 202 for, without reading the bus's backlog.
	LookupRemembered = "remembered"
	// LookupSearched: the bus was searched (Locate).
	LookupSearched = "searched"
	// LookupBusy: answered pending because maxSearches searches of the
	// caller (or maxSearches+1 in all) were running and none ended within
	// searchWait.
	LookupBusy = "busy"
)

const (
	// maxSearches bounds the bus searches of one caller's status polls
	// running at once in one gateway, and maxSearches+1 those of all
	// callers, so that polls during a backlog cannot take the cores the
	// ledger needs to clear it, and one caller's polls (of ids it never
	// sent, say) always leave room for another's.
	maxSearches = 2
	// searchWait bounds how long a poll waits for a search to end before
	// it answers pending.
	searchWait = time.Second
)

// whereabouts tells where the bus holds the command (source, txn) that the
// ledger has no result for: waiting (also when it cannot tell), dead-lettered
// or unknown. A command this gateway answered 202 for costs two lookups;
// any other a search of the bus, a few at a time.
func (s *Server) whereabouts(ctx context.Context, source, txn string) bus.Whereabouts {
	if d, ok := s.pub.(deadChecker); ok && s.pending.has(source, txn) {
		dead, err := d.DeadLettered(ctx, source, txn)
		if err == nil && !dead {
			s.lookup(LookupRemembered)
			return bus.Waiting
		}
		// A dead letter: the search tells whether it was sent again since.
	}
	// A caller runs at most maxSearches searches, so that a caller polling
	// in a hurry (ids it never sent, say) cannot keep the others waiting.
	wait := time.NewTimer(searchWait)
	defer wait.Stop()
	mine := s.callerSearches(source)
	select {
	case mine <- struct{}{}:
		defer func() { <-mine }()
	case <-wait.C:
		s.lookup(LookupBusy)
		return bus.Waiting
	case <-ctx.Done():
		return bus.Waiting
	}
	select {
	case s.searches <- struct{}{}:
		defer func() { <-s.searches }()
	case <-wait.C:
		s.lookup(LookupBusy)
		return bus.Waiting
	case <-ctx.Done():
		return bus.Waiting
	}
	s.lookup(LookupSearched)
	return s.onBus(ctx, source, txn)
}

// callerSearches holds the searches of source running. There is one per
// caller the gateway authenticated: its API keys and partners.
func (s *Server) callerSearches(source string) chan struct{} {
	s.searchesMu.Lock()
	defer s.searchesMu.Unlock()
	ch, ok := s.bySource[source]
	if !ok {
		if s.bySource == nil {
			s.bySource = map[string]chan struct{}{}
		}
		ch = make(chan struct{}, maxSearches)
		s.bySource[source] = ch
	}
	return ch
}

// lookup counts a status lookup.
func (s *Server) lookup(how string) {
	if s.statusLookup != nil {
		s.statusLookup(how)
	}
}
