package app

import (
	"log/slog"
	"sync"
	"time"
)

// quietLog says a failure that repeats (every 200 ms, say, while the
// database is down) once when it starts, then once a minute with how many
// times it happened meanwhile, and once when it stops: an hour's outage is
// some sixty lines, not tens of thousands.
type quietLog struct {
	mu      sync.Mutex
	failing bool
	said    time.Time
	count   int
	every   time.Duration // a minute when zero
}

// fail notes one failure, and logs it when due.
func (q *quietLog) fail(log *slog.Logger, msg string, args ...any) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.count++
	every := q.every
	if every == 0 {
		every = time.Minute
	}
	if q.failing && time.Since(q.said) < every {
		return
	}
	if q.failing {
		args = append(args, "failures_since_last_said", q.count)
	}
	log.Warn(msg, args...)
	q.failing, q.said, q.count = true, time.Now(), 0
}

// ok notes a success, and logs msg when it ends a run of failures.
func (q *quietLog) ok(log *slog.Logger, msg string, args ...any) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.failing {
		return
	}
	log.Info(msg, append(args, "failures_since_last_said", q.count)...)
	q.failing, q.count = false, 0
}
