package natsbus

import (
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
)

// resultWaiters hands the results announced on core NATS to the callers
// waiting for them. One wildcard subscription per Bus receives every result
// subject; each result goes, in memory, to the waiters registered for its
// subject. Registering costs no round trip to the server, unlike a
// subscription per request, whose interest changes the server must spread
// and whose confirmation is a PING/PONG.
type resultWaiters struct {
	mu      sync.Mutex
	sub     *nats.Subscription // nil until the first waiter
	waiting map[string][]*resultWaiter
}

// resultWaiter is one caller's channel, registered under one subject or
// more. The channel is sent to and closed with resultWaiters.mu held.
type resultWaiter struct {
	ch       chan bus.Result
	subjects []string
}

// startLocked makes the wildcard subscription and waits until the server
// has it, once per Bus; a failure is returned and tried again by the next
// caller. b.results.mu must be held.
func (b *Bus) startLocked() error {
	if b.results.sub != nil {
		if b.results.sub.IsValid() {
			return nil
		}
		return errors.New("result subscription closed: " + b.nc.Status().String())
	}
	sub, err := b.nc.Subscribe(b.prefix+bus.ResultSubjects, b.deliverResult)
	if err != nil {
		return err
	}
	// The default limits drop results when the callback falls behind by
	// 65,536 messages; a busy gateway should rather queue more.
	if err := sub.SetPendingLimits(-1, 256<<20); err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	if err := b.nc.FlushTimeout(subscribeTimeout); err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	b.results.sub = sub
	b.results.waiting = map[string][]*resultWaiter{}
	return nil
}

// deliverResult is the callback of the wildcard subscription. A result
// nobody here waits for (another process's, or one that came too late) is
// not even decoded.
func (b *Bus) deliverResult(m *nats.Msg) {
	b.results.mu.Lock()
	n := len(b.results.waiting[m.Subject])
	b.results.mu.Unlock()
	if n == 0 {
		return
	}

	var r bus.Result
	if err := bus.DecodeResult(m.Data, &r); err != nil {
		b.log.Warn("Undecodable result", "subject", m.Subject, "error", err)
		return
	}
	b.results.mu.Lock()
	defer b.results.mu.Unlock()
	for _, w := range b.results.waiting[m.Subject] {
		select {
		case w.ch <- r:
		default:
			b.log.Warn("Result dropped, waiter not reading", "subject", m.Subject,
				"txn_id", r.TxnID)
		}
	}
}

// wait registers a channel of the given capacity under subjects, and
// returns it with the function that removes it and closes the channel.
func (b *Bus) wait(subjects []string, capacity int) (<-chan bus.Result, func(), error) {
	w := &resultWaiter{ch: make(chan bus.Result, capacity), subjects: subjects}
	b.results.mu.Lock()
	if err := b.startLocked(); err != nil {
		b.results.mu.Unlock()
		return nil, nil, fmt.Errorf("subscribe results: %w", err)
	}
	for _, s := range subjects {
		b.results.waiting[s] = append(b.results.waiting[s], w)
	}
	b.results.mu.Unlock()

	var once sync.Once
	return w.ch, func() { once.Do(func() { b.stopWaiting(w) }) }, nil
}

// stopWaiting removes w from every subject it waits on and closes its
// channel.
func (b *Bus) stopWaiting(w *resultWaiter) {
	b.results.mu.Lock()
	defer b.results.mu.Unlock()
	for _, s := range w.subjects {
		ws := b.results.waiting[s]
		for i, other := range ws {
			if other == w {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(b.results.waiting, s)
		} else {
			b.results.waiting[s] = ws
		}
	}
	close(w.ch)
}

// waitingSubjects is how many result subjects have a waiter, for tests.
func (b *Bus) waitingSubjects() int {
	b.results.mu.Lock()
	defer b.results.mu.Unlock()
	return len(b.results.waiting)
}

// SubscribeResult starts listening for the result of the command (source,
// txn). Call it before publishing the command, so that a fast answer is not
// missed: once it returns, every result announced for (source, txn) reaches
// the channel until unsubscribe is called, which also closes it. Several
// callers may wait for the same command (a client's retry racing the first
// attempt); each gets every result. The channel holds a few results; more,
// for a waiter that is not reading, are logged and dropped, as is a result
// that does not decode.
//
// The first call makes the Bus's one subscription to every result subject
// and waits for the server to confirm it; later calls only register in
// memory.
func (b *Bus) SubscribeResult(source, txn string) (<-chan bus.Result, func(), error) {
	return b.wait([]string{b.resultSubject(source, txn)}, resultBuffer)
}

// SubscribeResults starts listening for the results of many commands of one
// source, like SubscribeResult does for one. The channel has room for two
// results per command; a result that finds it full is logged and dropped
// (the ledger keeps it). unsubscribe stops listening and closes the channel.
func (b *Bus) SubscribeResults(source string, txns []string) (<-chan bus.Result, func(),
	error) {
	subjects := make([]string, len(txns))
	for i, txn := range txns {
		subjects[i] = b.resultSubject(source, txn)
	}
	return b.wait(subjects, 2*len(txns)+resultBuffer)
}
