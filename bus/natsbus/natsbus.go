// Package natsbus carries Puntos commands, results and ledger events over
// NATS JetStream, following the conventions of package bus: a command stream
// split into partitions by member, an events stream, a dead-letter stream and
// core-NATS subjects on which results are announced.
//
// The command stream keeps messages under limits retention (by age) rather
// than as a work queue, so that the server can rebuild its de-duplication
// window from the stored messages after a restart: a retry of a command that
// was already consumed is still recognised as a duplicate.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
)

// Defaults applied by Connect to the zero fields of Config.
const (
	DefaultName          = "puntos"
	DefaultPartitions    = 8
	DefaultReplicas      = 1
	DefaultAckWait       = 30 * time.Second
	DefaultMaxDeliver    = 10
	DefaultRetryDelay    = 200 * time.Millisecond
	DefaultMaxRetryDelay = 30 * time.Second
	DefaultCommandMaxAge = 7 * 24 * time.Hour
	DefaultEventMaxAge   = 30 * 24 * time.Hour
)

// DuplicateWindow is how long the streams remember a message id: a command
// or event published again within it is dropped by the server.
const DuplicateWindow = 24 * time.Hour

const (
	// stallWait bounds how long an async publish waits for room when too
	// many acknowledgements are outstanding.
	stallWait = 5 * time.Second

	// asyncAckTimeout bounds the wait for the acknowledgement of one async
	// publish, so that a lost acknowledgement turns into an error.
	asyncAckTimeout = 30 * time.Second

	// settleTimeout bounds the acknowledgements sent after a batch.
	settleTimeout = 10 * time.Second
)

// Config tells Connect where the server is and how the streams are shaped.
// Every process of one deployment must use the same Partitions and
// Namespace.
type Config struct {
	// URL is the server, or several comma-separated servers of a cluster,
	// for example nats://127.0.0.1:4222.
	URL string

	// Name is the connection name the server shows; default "puntos".
	Name string

	// Partitions is the number of command partitions; default 8.
	Partitions int

	// Replicas is the number of copies of each stream; default 1, use 3 in
	// a cluster.
	Replicas int

	// AckWait is how long a fetched command may stay unacknowledged before
	// the server delivers it again; default 30s.
	AckWait time.Duration

	// MaxDeliver is how many times a command is handed to a consumer; when
	// the last attempt fails it goes to the dead-letter stream. Default 10.
	MaxDeliver int

	// OnDeadLetter, when set, is called each time DeadLetter stores a
	// command on the dead-letter stream, whatever set it aside (the ledger's
	// refusal, MaxDeliver failed attempts, a line that is not a command),
	// and not when the server already held that copy.
	OnDeadLetter func()

	// RetryDelay is the pause after a failed batch before its partition is
	// fetched again. It doubles with every delivery up to MaxRetryDelay.
	// Defaults 200ms and 30s.
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration

	// CommandMaxAge is how long the command stream keeps a command,
	// consumed or not; default 7 days, never less than DuplicateWindow.
	CommandMaxAge time.Duration

	// EventMaxAge is how long the events stream keeps an event, read or
	// not; default 30 days, never less than DuplicateWindow. A consumer of
	// the events (the reporting sink) that stays away longer than this
	// misses the events that aged out, so it should comfortably outlast the
	// longest outage of ClickHouse one expects to ride out.
	EventMaxAge time.Duration

	// Namespace, when not empty, is put in front of every stream name and
	// subject, so that several test runs can share one server. It may hold
	// letters, digits, '-' and '_'.
	Namespace string

	// UseStreams makes Connect take the streams as they are, for a tool
	// that reads or mends what a running platform holds: it fails when a
	// stream does not exist and changes nothing of their configuration
	// (whose retention and replicas are the platform's, not the tool's).
	UseStreams bool
}

// withDefaults fills the zero fields of c and checks the others.
func (c Config) withDefaults() (Config, error) {
	if strings.TrimSpace(c.URL) == "" {
		return c, errors.New("no NATS URL")
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.MaxRetryDelay == 0 {
		c.MaxRetryDelay = DefaultMaxRetryDelay
	}
	if c.CommandMaxAge == 0 {
		c.CommandMaxAge = DefaultCommandMaxAge
	}
	if c.EventMaxAge == 0 {
		c.EventMaxAge = DefaultEventMaxAge
	}

	switch {
	case c.Partitions < 1:
		return c, fmt.Errorf("partitions %d: must be at least 1", c.Partitions)
	case c.Replicas < 1:
		return c, fmt.Errorf("replicas %d: must be at least 1", c.Replicas)
	case c.AckWait < time.Second:
		return c, fmt.Errorf("ack wait %s: must be at least 1s", c.AckWait)
	case c.MaxDeliver < 1:
		return c, fmt.Errorf("max deliver %d: must be at least 1", c.MaxDeliver)
	case c.RetryDelay < 0 || c.MaxRetryDelay < c.RetryDelay:
		return c, fmt.Errorf("retry delays %s and %s: need 0 <= delay <= max",
			c.RetryDelay, c.MaxRetryDelay)
	case c.CommandMaxAge < DuplicateWindow:
		return c, fmt.Errorf("command max age %s: must be at least %s",
			c.CommandMaxAge, DuplicateWindow)
	case c.EventMaxAge < DuplicateWindow:
		return c, fmt.Errorf("event max age %s: must be at least %s",
			c.EventMaxAge, DuplicateWindow)
	}
	for _, r := range c.Namespace {
		ok := r == '-' || r == '_' || (r >= '0' && r <= '9') ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !ok {
			return c, fmt.Errorf("namespace %q: only letters, digits, '-' and '_'", c.Namespace)
		}
	}
	return c, nil
}

// Bus is a connection to NATS with the Puntos streams in place. It is safe
// for concurrent use.
type Bus struct {
	cfg Config
	log *slog.Logger
	nc  *nats.Conn
	js  jetstream.JetStream

	// Stream names and the subject prefix, after Namespace.
	cmdStream, evtStream, deadStream string
	prefix                           string

	// spared counts, by command stream sequence, the deliveries of a
	// command that were handed back because of an outage (ErrUnavailable)
	// and so do not count against MaxDeliver. It lives in this process only.
	sparedMu sync.Mutex
	spared   map[uint64]uint64

	// atomicStreams names the streams that take atomic batches (atomic.go);
	// atomicSlots bounds the batches open at once; atomicStored counts the
	// messages stored in atomic batches.
	atomicStreams map[string]bool
	atomicSlots   chan struct{}
	atomicStored  atomic.Uint64

	// deadHandle is the dead-letter stream, once DeadLettered has found it.
	deadHandle atomic.Pointer[jetstream.Stream]

	// gather queues single commands behind their partition's message on
	// its way (gather.go).
	gather gatherQueues

	// results routes the results announced on core NATS to their waiters
	// (results.go).
	results resultWaiters
}

// Connect connects to cfg.URL and makes sure the command, event and
// dead-letter streams exist with the configured shape. Once connected, the
// client reconnects forever; the first connection is tried only once. A nil
// log means slog.Default().
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*Bus, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("nats config: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}

	b := &Bus{
		cfg:        cfg,
		log:        log,
		cmdStream:  bus.CommandStream,
		evtStream:  bus.EventStream,
		deadStream: bus.DeadStream,
		spared:     map[uint64]uint64{},

		atomicStreams: map[string]bool{},
		atomicSlots:   make(chan struct{}, atomicInflight),
	}
	if cfg.Namespace != "" {
		b.cmdStream = cfg.Namespace + "_" + bus.CommandStream
		b.evtStream = cfg.Namespace + "_" + bus.EventStream
		b.deadStream = cfg.Namespace + "_" + bus.DeadStream
		b.prefix = cfg.Namespace + "."
	}

	// Connect, logging the connection's ups and downs.
	b.nc, err = nats.Connect(cfg.URL,
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS reconnected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("NATS asynchronous error", "subject", subject, "error", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}

	b.js, err = jetstream.New(b.nc, jetstream.WithPublishAsyncTimeout(asyncAckTimeout))
	if err != nil {
		b.nc.Close()
		return nil, fmt.Errorf("open jetstream: %w", err)
	}

	// Create the streams, or bring their configuration up to date.
	ensure := b.ensureStreams
	if cfg.UseStreams {
		ensure = b.useStreams
	}
	if err := ensure(ctx); err != nil {
		b.nc.Close()
		return nil, err
	}
	log.Info("NATS connected", "url", b.nc.ConnectedUrlRedacted(),
		"server", b.nc.ConnectedServerVersion(), "partitions", cfg.Partitions,
		"command_stream", b.cmdStream, "atomic_batches", b.atomicStreams[b.cmdStream])
	return b, nil
}

// ensureStreams creates or updates the three streams. The command and
// event streams take atomic batches when the server knows them. Discard
// marks that earlier versions left among the dead letters are moved to
// subjects of their own (moveMarks).
func (b *Bus) ensureStreams(ctx context.Context) error {
	atomic := serverAtLeast(b.nc.ConnectedServerVersion(), atomicMinVersion)
	streams := []jetstream.StreamConfig{{
		Name:        b.cmdStream,
		Description: "Puntos commands, partitioned by member",
		Subjects:    []string{b.prefix + bus.CommandSubjects},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      b.cfg.CommandMaxAge,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
		Duplicates:  DuplicateWindow,

		AllowAtomicPublish: atomic,
	}, {
		// Events age out after EventMaxAge: long enough for the reporting
		// sink to catch up after an outage of ClickHouse.
		Name:        b.evtStream,
		Description: "Puntos ledger events, published after commit",
		Subjects:    []string{b.prefix + bus.EventSubjects},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      b.cfg.EventMaxAge,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
		Duplicates:  DuplicateWindow,

		AllowAtomicPublish: atomic,
	}, {
		Name:        b.deadStream,
		Description: "Puntos commands that could not be applied",
		Subjects:    []string{b.prefix + bus.DeadSubjects},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
		Duplicates:  DuplicateWindow,
	}}
	for _, sc := range streams {
		st, err := b.createOrUpdateStream(ctx, sc)
		if err != nil {
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		}
		b.atomicStreams[sc.Name] = st.CachedInfo().Config.AllowAtomicPublish
		if sc.Name == b.deadStream && st.CachedInfo().State.Msgs > 0 {
			// Marks an earlier version left among the letters would count as
			// letters waiting; the bus works all the same if they stay.
			if err := b.moveMarks(ctx); err != nil {
				b.log.Warn("Discard marks not moved; they count as dead letters waiting "+
					"until a later start moves them", "error", err)
			}
		}
	}
	return nil
}

// A stream whose store the server could not make is refused with the
// code of every refused creation and a fixed sentence; the server writes
// the cause only to its own log.
const (
	createFailedCode = 10049
	storeFailed      = "error creating store for stream"
)

// storeRetryDelays are the pauses before each new try of a stream whose
// store the server could not make.
var storeRetryDelays = []time.Duration{100 * time.Millisecond, 400 * time.Millisecond,
	time.Second}

// createOrUpdateStream creates or updates one stream. A store the server
// could not make is tried again a few times: on a busy server it can be
// a passing failure (the server's log says which), and a platform that
// refused to start for it would need someone to start it again.
func (b *Bus) createOrUpdateStream(ctx context.Context, sc jetstream.StreamConfig) (jetstream.Stream, error) {
	for try := 0; ; try++ {
		st, err := b.js.CreateOrUpdateStream(ctx, sc)
		var apiErr *jetstream.APIError
		if err == nil || !errors.As(err, &apiErr) || apiErr.ErrorCode != createFailedCode ||
			apiErr.Description != storeFailed {
			return st, err
		}
		if try == len(storeRetryDelays) {
			return nil, fmt.Errorf("%w (tried %d times; the NATS server's log names the cause)",
				err, try+1)
		}
		b.log.Warn("NATS could not make the store of a stream; trying again",
			"stream", sc.Name, "error", err, "in", storeRetryDelays[try])
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (then %w)", err, ctx.Err())
		case <-time.After(storeRetryDelays[try]):
		}
	}
}

// useStreams checks that the three streams exist, as they are.
func (b *Bus) useStreams(ctx context.Context) error {
	for _, name := range []string{b.cmdStream, b.evtStream, b.deadStream} {
		st, err := b.js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		b.atomicStreams[name] = st.CachedInfo().Config.AllowAtomicPublish
	}
	return nil
}

// Close closes the connection after flushing what is buffered. Consume
// loops still running return an error.
func (b *Bus) Close() {
	b.nc.Close()
}

// Ping reports whether the connection is up and JetStream answers; it is
// meant for readiness probes.
func (b *Bus) Ping(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return fmt.Errorf("ping nats: connection is %s", b.nc.Status())
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("ping jetstream: %w", err)
	}
	return nil
}

// Partitions is the number of command partitions.
func (b *Bus) Partitions() int { return b.cfg.Partitions }

// AckWait is how long a fetched command may stay unsettled before the
// server delivers it again; a handler that works longer should call
// Delivery.InProgress well within it.
func (b *Bus) AckWait() time.Duration { return b.cfg.AckWait }

// commandSubject, eventSubject, deadSubject and resultSubject are the bus
// subjects with the namespace in front.
func (b *Bus) commandSubject(p int) string { return b.prefix + bus.CommandSubject(p) }

func (b *Bus) deadSubject(p int) string { return b.prefix + bus.DeadSubject(p) }

func (b *Bus) resultSubject(source, txn string) string {
	return b.prefix + bus.ResultSubject(source, txn)
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
