// Package chsink copies ledger events from the bus into ClickHouse, where
// package reporting reads them.
//
// The sink reads the events stream through a durable consumer of its own,
// inserts each batch in one insert and acknowledges the batch only after
// ClickHouse took it. When ClickHouse is down, the batch is handed back to
// the bus and tried again with a growing pause: the events wait in the
// stream and nothing is lost. A batch inserted and then delivered again (a
// crash before the acknowledgement) is not stored twice: reporting.
// InsertEvents leaves out the events ClickHouse holds already, so that the
// hourly sums the reports read count each event once (see "Exactly once" in
// reporting/schema.go).
//
// Erasure needs no operator: when the ledger's member_erased event
// (reporting.KindMemberErased) comes through, the sink notes the member
// before it stores the batch and then has ClickHouse rewrite the member's
// reference in the stored events (reporting.HandleErasures), and it does the
// same for an event of an erased member that arrives late with the old
// reference. It does not wait for the rewrite, which ClickHouse finishes in
// the background and resumes after a restart; the report totals do not
// change.
package chsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/reporting"
)

// Defaults of a Sink.
const (
	// DefaultDurable is the name of the sink's consumer on the events
	// stream. Every sink process of a deployment shares it, so that they
	// split the events between them.
	DefaultDurable = "reporting-clickhouse"

	// DefaultBatchSize and DefaultMaxWait shape the inserts: up to 5,000
	// events, or what arrived within a second. ClickHouse prefers few large
	// inserts to many small ones.
	DefaultBatchSize = 5000
	DefaultMaxWait   = time.Second

	// DefaultInsertTimeout bounds one insert.
	DefaultInsertTimeout = 30 * time.Second
)

// Pauses between attempts to migrate the schema while ClickHouse is down.
const (
	migrateRetryMin = 500 * time.Millisecond
	migrateRetryMax = 30 * time.Second
)

// Sink copies ledger events from a bus to a ClickHouse database. Set the
// fields before Run; the zero values take the defaults.
type Sink struct {
	Bus  *natsbus.Bus
	Conn driver.Conn
	Log  *slog.Logger

	Durable       string
	BatchSize     int
	MaxWait       time.Duration
	InsertTimeout time.Duration

	// afterInsert, when set, runs after each successful insert, before the
	// batch is acknowledged; tests use it to crash at that point.
	afterInsert func()
}

// Run copies events from b to conn with the default settings until ctx is
// done; see Sink.Run.
func Run(ctx context.Context, b *natsbus.Bus, conn driver.Conn, log *slog.Logger) error {
	s := &Sink{Bus: b, Conn: conn, Log: log}
	return s.Run(ctx)
}

// Run brings the ClickHouse schema up to date (reporting.Migrate, retried
// until ClickHouse answers) and then copies events until ctx is done, when
// it returns nil. It returns an error when the bus connection is closed or
// the consumer cannot be set up; the events not yet acknowledged are
// delivered again to the next Run.
//
// A failed insert is retried without end, pausing between attempts as
// natsbus.ConsumeEvents does; an event that ClickHouse can never hold
// (reporting.CheckEvent) is logged at Error and dropped for this consumer
// (terminated), so that it cannot block the others.
func (s *Sink) Run(ctx context.Context) error {
	if s.Bus == nil || s.Conn == nil {
		return errors.New("clickhouse sink: no bus or no connection")
	}
	s.defaults()

	if err := s.migrate(ctx); err != nil {
		return err
	}
	s.Log.Info("Reporting sink started", "durable", s.Durable, "batch_size", s.BatchSize,
		"max_wait", s.MaxWait)
	return s.Bus.ConsumeEvents(ctx, s.Durable, s.BatchSize, s.MaxWait, s.handle)
}

func (s *Sink) defaults() {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Durable == "" {
		s.Durable = DefaultDurable
	}
	if s.BatchSize <= 0 {
		s.BatchSize = DefaultBatchSize
	}
	if s.MaxWait <= 0 {
		s.MaxWait = DefaultMaxWait
	}
	if s.InsertTimeout <= 0 {
		s.InsertTimeout = DefaultInsertTimeout
	}
}

// migrate applies the schema, waiting for ClickHouse as long as ctx lasts.
// It returns nil only when the schema is in place.
func (s *Sink) migrate(ctx context.Context) error {
	delay := migrateRetryMin
	for {
		err := reporting.Migrate(ctx, s.Conn)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("clickhouse sink: migrate: %w", ctx.Err())
		}
		s.Log.Warn("ClickHouse schema not applied; retrying", "retry_in", delay, "error", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("clickhouse sink: migrate: %w", ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, migrateRetryMax)
	}
}

// handle inserts one batch. An error hands the batch back to the bus.
func (s *Sink) handle(ctx context.Context, batch []*natsbus.EventDelivery) error {
	evs := make([]bus.Event, 0, len(batch))
	for _, d := range batch {
		if err := reporting.CheckEvent(d.Event); err != nil {
			s.Log.Error("Event dropped from reporting", "event_id", d.Event.ID,
				"stream_seq", d.Seq, "subject", d.Subject, "error", err)
			if err := d.Term(); err != nil {
				return err // The whole batch comes back; it is checked again.
			}
			continue
		}
		evs = append(evs, d.Event)
	}
	if len(evs) == 0 {
		return nil
	}

	ictx, cancel := context.WithTimeout(ctx, s.InsertTimeout)
	defer cancel()
	start := time.Now()
	if err := reporting.RecordErasures(ictx, s.Conn, evs); err != nil {
		return fmt.Errorf("insert into clickhouse: %w", err)
	}
	if err := reporting.InsertEvents(ictx, s.Conn, evs); err != nil {
		return fmt.Errorf("insert into clickhouse: %w", err)
	}
	erased, err := reporting.HandleErasures(ictx, s.Conn, evs)
	if err != nil {
		return fmt.Errorf("erase members in clickhouse: %w", err)
	}
	for program, members := range erased {
		s.Log.Info("Erasure applied to the stored events", "program", program,
			"members", len(members))
	}
	s.Log.Debug("Events copied to ClickHouse", "events", len(evs),
		"took", time.Since(start))
	if s.afterInsert != nil {
		s.afterInsert()
	}
	return nil
}
