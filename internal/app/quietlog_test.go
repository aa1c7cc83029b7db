package app

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A failure repeated a thousand times is said once, then once per period
// with the count, and its end once (the outbox relay wrote nine lines a
// second while PostgreSQL was down).
func TestQuietLogSaysRepeatedFailuresOnce(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	q := &quietLog{every: 50 * time.Millisecond}
	for range 1000 {
		q.fail(log, "Outbox relay failed; retrying", "error", "connection refused")
	}
	if n := strings.Count(buf.String(), "Outbox relay failed"); n != 1 {
		t.Fatalf("%d lines for 1000 failures in a burst; want 1:\n%s", n, buf.String())
	}
	time.Sleep(60 * time.Millisecond)
	q.fail(log, "Outbox relay failed; retrying", "error", "connection refused")
	if !strings.Contains(buf.String(), "failures_since_last_said=1000") {
		t.Fatalf("the second line does not count the failures between:\n%s", buf.String())
	}
	q.ok(log, "Outbox relay works again")
	q.ok(log, "Outbox relay works again")
	if n := strings.Count(buf.String(), "works again"); n != 1 {
		t.Fatalf("%d recovery lines; want 1:\n%s", n, buf.String())
	}
}
