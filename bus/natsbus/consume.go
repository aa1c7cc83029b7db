package natsbus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
)

// ErrUnavailable marks a handler error caused by an outage of something the
// handler needs (a database that does not answer), as opposed to a command
// that fails as sent. See Consume.
var ErrUnavailable = errors.New("service unavailable")

// Unavailable wraps err so that it matches ErrUnavailable; nil stays nil.
func Unavailable(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// Back-off after a failed fetch (server unreachable, consumer missing).
const (
	fetchRetryMin = 100 * time.Millisecond
	fetchRetryMax = 5 * time.Second
)

// Delivery is one command fetched from a partition by Consume. Settle it
// with Ack, Nak or Term; Consume settles the ones the handler leaves alone.
type Delivery struct {
	// Command is the decoded command.
	Command bus.Command

	// Raw is the command as it is stored on the stream: the message, or
	// the command's line of a pack.
	Raw []byte

	// Partition is the partition the command came from.
	Partition int

	// Seq is the command's sequence number in the command stream: that of
	// its message, which it shares with the other commands of a pack.
	Seq uint64

	// Index is the command's place in its pack, from 0; it is 0 for a
	// command that has a message of its own.
	Index int

	// NumDelivered counts the deliveries of this command, this one
	// included: 1 the first time, 2 on the first redelivery and so on.
	NumDelivered uint64

	receipt
	problem string // why it is not a usable command, if it is not
}

// Consume fetches the commands of one partition in batches and hands them to
// handle, until ctx is done; it then returns nil. It uses the durable
// consumer "core-p<partition>", creating or updating it, and expects to be
// the only loop on that partition.
//
// A batch holds up to batchSize commands, in stream order; Consume waits up
// to maxWait for the first one and then takes whatever else is ready. When
// handle returns nil, each delivery it did not settle is acknowledged. When
// it returns an error, each unsettled delivery is asked for again and the
// partition pauses (Config.RetryDelay, doubling per delivery), so the batch
// comes back in the same order; a delivery that has used up
// Config.MaxDeliver attempts is dead-lettered instead, with reason
// "max deliveries: " and the error.
//
// Messages that are not commands never reach handle: they are dead-lettered
// with a reason starting "undecodable". So are commands delivered more than
// MaxDeliver times (after handlers that died or overran AckWait), with
// reason "max deliveries".
//
// Commands that an earlier loop on the partition fetched and never settled
// (its process died, or lost the partition mid-batch) come back only once
// their AckWait has passed. Until they have come back and been settled,
// Consume fetches nothing newer, so that no command overtakes them.
//
// A handler error wrapped with Unavailable (it matches ErrUnavailable)
// says the batch failed for want of a service, not because of what it
// holds: its unsettled deliveries are asked for again and the partition
// pauses, but these deliveries do not count against MaxDeliver, so a long
// outage never dead-letters a command. Any other error counts: an error
// that lasts longer than the whole retry budget (about 80s with the default
// settings) dead-letters the batch.
func (b *Bus) Consume(ctx context.Context, partition int, batchSize int, maxWait time.Duration,
	handle func(ctx context.Context, batch []*Delivery) error) error {
	switch {
	case partition < 0 || partition >= b.cfg.Partitions:
		return fmt.Errorf("consume partition %d: out of range 0-%d",
			partition, b.cfg.Partitions-1)
	case batchSize < 1:
		return fmt.Errorf("consume partition %d: batch size %d", partition, batchSize)
	case maxWait <= 0:
		return fmt.Errorf("consume partition %d: max wait %s", partition, maxWait)
	}
	log := b.log.With("partition", partition)

	cons, err := b.ensureConsumer(ctx, partition, batchSize)
	if err != nil {
		return err
	}
	unsettled := b.holdBackNewer(ctx, partition, &cons, log)
	left := unsettled > 0

	fetchFailures, outages := 0, 0
	backlog := true // until a fetch says otherwise
	var held []jetstream.Msg
	var heldSince time.Time
	for ctx.Err() == nil {
		if left {
			left = b.stillLeft(ctx, partition, batchSize, &cons, log)
		}
		msgs, err := fetch(cons, batchSize, maxWait, backlog)
		backlog = len(msgs) > 1
		if left && err == nil {
			// The server hands the earlier consumer's commands back as it
			// finds their AckWaits ended, in no set order, and one it finds
			// at its next look, up to an AckWait later: applied as they
			// came, a bill could go before its member's enrollment. They
			// are gathered (until all are back, or an AckWait and a half
			// after the first; one held that long comes back again, and
			// counts once) and applied together, in stream order.
			if len(held) == 0 && len(msgs) > 0 {
				heldSince = time.Now()
			}
			held = append(held, msgs...)
			back := distinctSeqs(held)
			if len(held) == 0 || back < unsettled &&
				time.Since(heldSince) < b.cfg.AckWait+b.cfg.AckWait/2 {
				continue
			}
			msgs, held = held, nil
			unsettled -= back // stragglers, if any, wait for no more
		}
		if left {
			// Redelivered together, they may come in any order (NATS 2.9
			// hands back expired commands as it finds them).
			slices.SortStableFunc(msgs, func(a, b jetstream.Msg) int {
				return cmp.Compare(streamSeq(a), streamSeq(b))
			})
		}
		if err != nil {
			if errors.Is(err, nats.ErrConnectionClosed) {
				return fmt.Errorf("consume partition %d: %w", partition, err)
			}
			log.Warn("Fetch failed", "error", err, "fetched", len(msgs))
			if len(msgs) == 0 {
				fetchFailures++
				sleep(ctx, backoff(fetchRetryMin, fetchRetryMax, fetchFailures))
				b.recoverConsumer(ctx, partition, batchSize, err, &cons, log)
				continue
			}
		}
		fetchFailures = 0
		if len(msgs) == 0 {
			continue
		}
		if b.process(ctx, partition, msgs, batchSize, handle, log) {
			// An outage: pause the partition, longer while it lasts.
			outages++
			sleep(ctx, backoff(b.cfg.RetryDelay, b.cfg.MaxRetryDelay, outages))
		} else {
			outages = 0
		}
	}
	return nil
}

// distinctSeqs counts the commands among msgs, each once however many
// times it was delivered.
func distinctSeqs(msgs []jetstream.Msg) int {
	seen := make(map[uint64]bool, len(msgs))
	for _, m := range msgs {
		seen[streamSeq(m)] = true
	}
	return len(seen)
}

// streamSeq is a message's sequence in the command stream, 0 when its
// metadata does not say.
func streamSeq(m jetstream.Msg) uint64 {
	meta, err := m.Metadata()
	if err != nil {
		return 0
	}
	return meta.Sequence.Stream
}

// durableName is the name of the durable consumer of partition p.
func durableName(p int) string { return "core-p" + strconv.Itoa(p) }

// ensureConsumer creates or updates the durable consumer of partition p. At
// most batchSize commands are out unacknowledged, which keeps a stalled
// batch from being overtaken by later commands.
func (b *Bus) ensureConsumer(ctx context.Context, p, batchSize int) (jetstream.Consumer, error) {
	return b.consumerWithLimit(ctx, p, batchSize)
}

// consumerWithLimit creates or updates the durable consumer of partition p
// with at most limit commands out unacknowledged.
func (b *Bus) consumerWithLimit(ctx context.Context, p, limit int) (jetstream.Consumer, error) {
	cons, err := b.js.CreateOrUpdateConsumer(ctx, b.cmdStream, jetstream.ConsumerConfig{
		Durable:       durableName(p),
		Description:   "Puntos core, partition " + strconv.Itoa(p),
		FilterSubject: b.commandSubject(p),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.cfg.AckWait,
		MaxDeliver:    -1, // Consume dead-letters after Config.MaxDeliver.
		MaxAckPending: limit,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", durableName(p), err)
	}
	return cons, nil
}

// holdBackNewer looks for commands an earlier loop on partition p fetched
// and left unsettled, and answers how many there are. When there are,
// it lowers the consumer's MaxAckPending to 1: the server hands a loop the
// commands it redelivers whatever the limit, but nothing newer while one is
// out, so none is overtaken however far apart their AckWaits end.
// stillLeft restores the usual limit once they are all settled.
func (b *Bus) holdBackNewer(ctx context.Context, p int, cons *jetstream.Consumer,
	log *slog.Logger) int {
	info, err := (*cons).Info(ctx)
	if err != nil {
		log.Warn("Consumer not read; commands left unsettled by an earlier consumer may be "+
			"overtaken", "error", err)
		return 0
	}
	if info.NumAckPending == 0 {
		return 0
	}
	c, err := b.consumerWithLimit(ctx, p, 1)
	if err != nil {
		log.Warn("Consumer not limited; commands left unsettled by an earlier consumer may "+
			"be overtaken", "error", err)
		return 0
	}
	*cons = c
	log.Warn("Commands an earlier consumer fetched and left unsettled come back first; "+
		"newer ones wait for them", "unsettled", info.NumAckPending, "within", b.cfg.AckWait)
	return info.NumAckPending
}

// stillLeft reports whether commands holdBackNewer found are still out;
// once none is, it restores the consumer's usual limit.
func (b *Bus) stillLeft(ctx context.Context, p, batchSize int, cons *jetstream.Consumer,
	log *slog.Logger) bool {
	info, err := (*cons).Info(ctx)
	if err != nil || info.NumAckPending > 0 {
		return true
	}
	c, err := b.ensureConsumer(ctx, p, batchSize)
	if err != nil {
		log.Warn("Consumer's usual limit not restored; trying again", "error", err)
		return true
	}
	*cons = c
	log.Info("Commands left unsettled by an earlier consumer are settled")
	return false
}

// recoverConsumer creates the consumer again when a fetch failed because it
// is gone; other errors are left for the next fetch.
func (b *Bus) recoverConsumer(ctx context.Context, p, batchSize int, fetchErr error,
	cons *jetstream.Consumer, log *slog.Logger) {
	if !consumerLost(fetchErr) {
		return
	}
	c, err := b.ensureConsumer(ctx, p, batchSize)
	if err != nil {
		log.Warn("Consumer not recreated", "error", err)
		return
	}
	*cons = c
}

// consumerLost says whether a fetch failed because its consumer is gone:
// deleted, not found, or (once it is gone) no one answering its pull
// requests. A consumer lost with its stream cannot be made again until the
// stream is back, and the fetches in between fail with no responders, so
// those too ask for the consumer again: making it again when it is there
// changes nothing.
func consumerLost(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, nats.ErrNoResponders)
}

// fetch takes what is ready, up to size messages; when nothing is, it waits
// up to maxWait for one message and then takes what else is ready. Messages
// may come with an error.
//
// Each fetch is a pull request of its own, with a subscription made and
// dropped on the server. When commands come one at a time (the last batch
// held one, backlog false), a first look at what is ready most often finds
// nothing: fetch then starts with the wait, which returns at once when a
// message is there, and saves that request (two instead of three per
// command). Under load (batches of several) the first look usually finds
// the commands that arrived during the last batch, in one request.
func fetch(cons jetstream.Consumer, size int, maxWait time.Duration,
	backlog bool) ([]jetstream.Msg, error) {
	if backlog {
		msgs, err := drain(cons.FetchNoWait(size))
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
	}
	msgs, err := drain(cons.Fetch(1, jetstream.FetchMaxWait(maxWait)))
	if err != nil || len(msgs) == 0 || size == 1 {
		return msgs, err
	}
	more, err := drain(cons.FetchNoWait(size - 1))
	return append(msgs, more...), err
}

// drain reads a fetched batch to its end.
func drain(batch jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, batch.Error()
}

// process decodes a fetched batch, dead-letters what cannot be handled,
// calls handle with the rest and settles what handle left unsettled. It
// reports whether handle failed for an outage (ErrUnavailable).
func (b *Bus) process(ctx context.Context, p int, msgs []jetstream.Msg, size int,
	handle func(context.Context, []*Delivery) error, log *slog.Logger) (outage bool) {
	batch := make([]*Delivery, 0, len(msgs))
	for _, m := range msgs {
		for _, d := range decode(m, p) {
			switch {
			case d.problem != "":
				b.bury(ctx, d, d.problem, log)
			case b.attempts(d) > uint64(b.cfg.MaxDeliver):
				b.bury(ctx, d, "max deliveries", log)
			default:
				batch = append(batch, d)
			}
		}
	}
	// Packs can make a fetch hold more commands than a batch: hand them
	// over in batches of at most size commands, cut between messages. A
	// batch that fails takes every later one with it, untried, so that
	// all come back in order.
	//
	// A batch the handler left with naked deliveries (core's way of
	// retrying a command and those after it in order) holds back the rest
	// of the fetch too, untried and at least as long, so that no later
	// command overtakes the naked ones.
	for len(batch) > 0 {
		n := batchEnd(batch, size)
		if outage, failed := b.settleBatch(ctx, batch[:n], batch, handle, log); failed {
			return outage
		}
		if back, delay := nakedIn(batch[:n]); back && n < len(batch) {
			b.handBack(batch[n:], delay, log)
			return false
		}
		batch = batch[n:]
	}
	return false
}

// nakedIn reports whether a delivery of batch was naked, and the longest
// delay asked for.
func nakedIn(batch []*Delivery) (naked bool, delay time.Duration) {
	for _, d := range batch {
		if n, dl := d.nakedFor(); n {
			naked, delay = true, max(delay, dl)
		}
	}
	return naked, delay
}

// handBack asks for untried deliveries again after delay, in order,
// without using up attempts.
func (b *Bus) handBack(ds []*Delivery, delay time.Duration, log *slog.Logger) {
	for _, d := range ds {
		if d.settled.Load() {
			continue
		}
		if err := d.Nak(delay); err != nil {
			log.Warn("Nak failed", "stream_seq", d.Seq, "error", err)
			continue
		}
		b.spare(d)
	}
}

// batchEnd is how many of the deliveries go in the next batch: at most
// size, unless the first message alone holds more, and never part of a
// message.
func batchEnd(ds []*Delivery, size int) int {
	if len(ds) <= size {
		return len(ds)
	}
	n := size
	for n > 0 && ds[n].msg == ds[n-1].msg {
		n--
	}
	if n == 0 { // one pack larger than a batch: it goes whole
		for n = 1; n < len(ds) && ds[n].msg == ds[0].msg; n++ {
		}
	}
	return n
}

// settleBatch calls handle with batch and settles what handle left
// unsettled. rest starts with batch and holds the later deliveries of the
// fetch, which are asked for again with batch when handle fails. It
// reports whether handle failed, and whether for an outage.
func (b *Bus) settleBatch(ctx context.Context, batch, rest []*Delivery,
	handle func(context.Context, []*Delivery) error, log *slog.Logger) (outage, failed bool) {
	err := handle(ctx, batch)

	// Settle even when ctx is done, so that nothing waits for AckWait.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err == nil {
		rs := make([]*receipt, len(batch))
		for i, d := range batch {
			rs[i] = &d.receipt
		}
		if err := b.ackBatch(sctx, rs); err != nil {
			log.Error("Ack failed; the batch will be delivered again", "error", err)
		}
		b.forget(batch)
		return false, false
	}

	// An outage: hand the batch back, in order, without using up attempts.
	tried := len(batch)
	batch = rest
	if errors.Is(err, ErrUnavailable) {
		for _, d := range batch {
			if d.settled.Load() {
				continue
			}
			if nerr := d.Nak(0); nerr != nil {
				log.Warn("Nak failed", "stream_seq", d.Seq, "error", nerr)
				continue
			}
			b.spare(d)
		}
		log.Warn("Batch handed back during an outage; it does not count as an attempt",
			"size", len(batch), "error", err)
		return true, true
	}

	// Ask for the batch again, in order, and pause the partition. The
	// deliveries after it were not tried: they go back after it (the
	// server redelivers in the order of the Naks) and use up no attempt.
	var most uint64
	for _, d := range batch[:tried] {
		if d.settled.Load() {
			continue
		}
		if b.attempts(d) >= uint64(b.cfg.MaxDeliver) {
			b.bury(sctx, d, "max deliveries: "+err.Error(), log)
			continue
		}
		if nerr := d.Nak(0); nerr != nil {
			log.Warn("Nak failed", "stream_seq", d.Seq, "error", nerr)
		}
		most = max(most, b.attempts(d))
	}
	b.handBack(batch[tried:], 0, log)
	if most > 0 {
		delay := backoff(b.cfg.RetryDelay, b.cfg.MaxRetryDelay, int(most))
		log.Warn("Batch failed; retrying", "size", len(batch), "deliveries", most,
			"retry_in", delay, "error", err)
		sleep(ctx, delay)
	}
	return false, true
}

// attempts is how many deliveries of d count against MaxDeliver: all of
// them but those handed back during an outage.
func (b *Bus) attempts(d *Delivery) uint64 {
	b.sparedMu.Lock()
	defer b.sparedMu.Unlock()
	return d.NumDelivered - min(b.spared[d.Seq], d.NumDelivered)
}

// spare records that this delivery of d does not count against MaxDeliver:
// once for a message, whatever the commands of its pack.
func (b *Bus) spare(d *Delivery) {
	if p := d.pack; p != nil {
		p.mu.Lock()
		done := p.spared
		p.spared = true
		p.mu.Unlock()
		if done {
			return
		}
	}
	b.sparedMu.Lock()
	defer b.sparedMu.Unlock()
	b.spared[d.Seq]++
}

// forget drops what spare recorded for deliveries that are settled for
// good; those asked for again keep it.
func (b *Bus) forget(batch []*Delivery) {
	b.sparedMu.Lock()
	defer b.sparedMu.Unlock()
	if len(b.spared) == 0 {
		return
	}
	for _, d := range batch {
		if !d.comesBack() {
			delete(b.spared, d.Seq)
		}
	}
}

// decode turns a message into its deliveries: one, or one per command of
// a pack. A delivery's problem is not empty when it is not a usable
// command; a pack that does not hold the commands its header announces is
// one unusable delivery.
func decode(m jetstream.Msg, p int) []*Delivery {
	var seq, delivered uint64
	if meta, err := m.Metadata(); err == nil {
		seq, delivered = meta.Sequence.Stream, meta.NumDelivered
	}
	delivery := func(raw []byte, index int) *Delivery {
		d := &Delivery{receipt: receipt{msg: m, what: "command"}, Raw: raw, Partition: p,
			Seq: seq, NumDelivered: delivered, Index: index}
		d.problem = decodeCommand(raw, &d.Command)
		return d
	}
	count := m.Headers().Get(headerPack)
	if count == "" {
		return []*Delivery{delivery(m.Data(), 0)}
	}
	n, err := strconv.Atoi(count)
	var lines [][]byte
	ok := err == nil && n <= packMax
	if ok {
		lines, ok = unpack(m.Data(), n)
	}
	if !ok {
		// Whole: a pack bigger than any PublishCommands makes would cost a
		// dead letter per line.
		d := &Delivery{receipt: receipt{msg: m, what: "command"}, Raw: m.Data(), Partition: p,
			Seq: seq, NumDelivered: delivered}
		d.problem = "undecodable: a pack announcing " + count + " commands does not hold them"
		if err == nil && n > packMax {
			d.problem = "undecodable: a pack announcing " + count + " commands, more than " +
				strconv.Itoa(packMax)
		}
		return []*Delivery{d}
	}
	pk := &pack{left: n}
	ds := make([]*Delivery, n)
	for i, line := range lines {
		ds[i] = delivery(line, i)
		ds[i].pack = pk
	}
	return ds
}

// decodeCommand reads raw into c; it returns why raw is not a usable
// command, or "".
func decodeCommand(raw []byte, c *bus.Command) string {
	if err := bus.DecodeCommand(raw, c); err != nil {
		*c = bus.Command{}
		return "undecodable: " + err.Error()
	}
	if c.Kind == "" || c.Source == "" || c.TxnID == "" {
		return "undecodable: no kind, source or txn_id"
	}
	return ""
}

// bury dead-letters d and terminates it. If the dead letter cannot be
// written, d is left unsettled and comes back after AckWait.
func (b *Bus) bury(ctx context.Context, d *Delivery, reason string, log *slog.Logger) {
	if err := b.DeadLetter(ctx, d, reason); err != nil {
		log.Error("Dead-lettering failed", "stream_seq", d.Seq, "error", err)
		return
	}
	if err := d.Term(); err != nil {
		log.Error("Term failed", "stream_seq", d.Seq, "error", err)
	}
	b.forget([]*Delivery{d})
	log.Error("Command dead-lettered", "stream_seq", d.Seq, "command_id", d.Command.ID,
		"txn_id", d.Command.TxnID, "deliveries", d.NumDelivered, "reason", reason)
}

// backoff is base doubled n-1 times, at most limit.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// maxHoldsScan bounds how many stored messages Locate reads; past it,
// Locate cannot rule the command out and answers bus.Waiting.
const maxHoldsScan = 50000

// Holds reports whether the bus holds the command (source, txn) unfinished:
// waiting or dead-lettered (see Locate).
func (b *Bus) Holds(ctx context.Context, source, txn string) (bool, error) {
	where, err := b.Locate(ctx, source, txn)
	return where != bus.Unknown, err
}

// Locate tells where the bus holds the command (source, txn): on the
// command stream and not yet acknowledged by core (bus.Waiting, also when it
// cannot tell), in the dead-letter stream (bus.DeadLettered), or nowhere
// (bus.Unknown). Unknown means the bus does not know the command, unless
// core acknowledged it meanwhile: a caller should read the ledger again
// after it, and after DeadLettered too: the same command may have been sent
// again and applied since.
// Only what core has not acknowledged is read of the command stream, so the
// cost follows the backlog, not the size of the stream; the dead-letter
// stream is two lookups (the command's letters and marks), plus a read of
// the dead letters written before they had subjects of their own
// (bus.DeadCommandSubject).
func (b *Bus) Locate(ctx context.Context, source, txn string) (bus.Whereabouts, error) {
	budget := maxHoldsScan
	// A message id of the pair is its prefix and the digest's digits, no
	// more: a prefix alone would also match txn "t:x" when asked about "t".
	prefixes := []string{bus.MsgIDPrefix(source, txn), bus.LegacyMsgIDPrefix(source, txn)}
	var stream jetstream.Stream
	onStream := func(m jetstream.Msg) (bool, error) {
		h := m.Headers()
		if h.Get(headerPack) == "" {
			id := h.Get(jetstream.MsgIDHeader)
			for _, p := range prefixes {
				if len(id) == len(p)+bus.MsgIDDigits && strings.HasPrefix(id, p) {
					return true, nil
				}
			}
			return false, nil
		}
		// A pack: its commands are in its data, which the scan leaves out;
		// its keys tell whether it is worth reading.
		if !packMayHold(h.Get(headerPackKeys), source, txn) {
			return false, nil
		}
		meta, err := m.Metadata()
		if err != nil {
			return false, err
		}
		if stream == nil {
			if stream, err = b.js.Stream(ctx, b.cmdStream); err != nil {
				return false, err
			}
		}
		return packHolds(ctx, stream, meta.Sequence.Stream, source, txn)
	}
	// idle holds, by partition that had nothing left to apply, where a scan
	// of it would start.
	idle := map[int]uint64{}
	for p := 0; p < b.cfg.Partitions; p++ {
		start := uint64(1)
		cons, err := b.js.Consumer(ctx, b.cmdStream, durableName(p))
		switch {
		case err == nil:
			info, err := cons.Info(ctx)
			if err != nil {
				return bus.Waiting, fmt.Errorf("holds: consumer %s: %w", durableName(p), err)
			}
			start = info.AckFloor.Stream + 1
			if info.NumPending == 0 && info.NumAckPending == 0 {
				idle[p] = start
				continue // partition p has nothing left to apply
			}
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			// Core never consumed partition p: all of it waits.
		default:
			return bus.Waiting, fmt.Errorf("holds: consumer %s: %w", durableName(p), err)
		}
		found, err := b.scanHeaders(ctx, b.cmdStream, b.commandSubject(p), start, &budget,
			onStream)
		if err != nil || found != scanMiss {
			return bus.Waiting, err
		}
	}
	// A command set aside may have been sent again since, in a pack: the
	// server counts a consumer's pending messages a moment after it stored
	// them, so a copy stored just now may be on its partition (the dead
	// letter's, that of the command's member) while it looked idle. Before
	// answering DeadLettered, that partition is read, with a budget of its
	// own: what it holds arrived a moment ago.
	deadOrWaiting := func(partition string) (bus.Whereabouts, error) {
		p, err := strconv.Atoi(partition)
		start, ok := idle[p]
		if err != nil || !ok {
			return bus.DeadLettered, nil // read above, or not a partition of ours
		}
		budget := maxHoldsScan
		found, err := b.scanHeaders(ctx, b.cmdStream, b.commandSubject(p), start, &budget,
			onStream)
		if err != nil || found != scanMiss {
			return bus.Waiting, err
		}
		return bus.DeadLettered, nil
	}
	// A dead letter of the command is on a subject of its own, a mark on
	// another: two lookups.
	switch last, err := b.lastDead(ctx, source, txn); {
	case err != nil:
		return bus.Waiting, fmt.Errorf("holds: %w", err)
	case last != nil:
		return deadOrWaiting(last.Header.Get(HeaderPartition))
	}
	// Dead letters written before they had subjects of their own are on
	// their partition's subject: only those are read.
	var partition string
	inDead := func(m jetstream.Msg) (bool, error) {
		h := m.Headers()
		if h.Get(HeaderSource) == source && h.Get(HeaderTxn) == txn {
			partition = h.Get(HeaderPartition)
			return true, nil
		}
		return false, nil
	}
	found, err := b.scanHeaders(ctx, b.deadStream, b.prefix+bus.DeadSubjectsByPartition, 1,
		&budget, inDead)
	switch {
	case err != nil || found == scanUnsure:
		return bus.Waiting, err
	case found == scanHit:
		return deadOrWaiting(partition)
	}
	return bus.Unknown, nil
}

// DeadLettered reports whether the command (source, txn) was set aside on
// the dead-letter stream since dead letters have had subjects of their own
// (bus.DeadCommandSubject): two lookups, whatever the size of the streams.
// Locate also finds older dead letters, by reading them.
func (b *Bus) DeadLettered(ctx context.Context, source, txn string) (bool, error) {
	last, err := b.lastDead(ctx, source, txn)
	return last != nil, err
}

// SetAside reports whether cmd itself, the same request (same Hash), was
// set aside as a dead letter and the bus holds no copy of it still to be
// applied (sent again in a pack, say): whether a retry of cmd that the bus
// dropped as a duplicate, and the ledger has no result for, will never get
// one. A command never dead-lettered costs two lookups (lastDead); one
// that was costs a Locate too. When it cannot tell, it answers false with
// the error.
func (b *Bus) SetAside(ctx context.Context, cmd bus.Command) (bool, error) {
	last, err := b.lastDead(ctx, cmd.Source, cmd.TxnID)
	if err != nil || last == nil {
		return false, err
	}
	var dead bus.Command
	if err := bus.DecodeCommand(last.Data, &dead); err != nil || dead.Hash != cmd.Hash {
		return false, nil
	}
	where, err := b.Locate(ctx, cmd.Source, cmd.TxnID)
	return err == nil && where == bus.DeadLettered, err
}

// lastDead is the latest dead letter or discard mark of the command
// (source, txn) on the subjects of its own, or nil: two lookups.
func (b *Bus) lastDead(ctx context.Context, source, txn string) (*jetstream.RawStreamMsg,
	error) {
	dead, err := b.deadStreamHandle(ctx)
	if err != nil {
		return nil, err
	}
	last, err := b.lastOfCommand(ctx, dead, source, txn)
	switch {
	case err != nil:
		b.deadHandle.Store(nil) // the stream may have gone: find it again next time
		return nil, fmt.Errorf("dead letters: %w", err)
	case last != nil && last.Header.Get(HeaderSource) == source &&
		last.Header.Get(HeaderTxn) == txn:
		return last, nil
	}
	return nil, nil
}

// scan is what scanHeaders found.
type scan int

const (
	scanMiss   scan = iota // no message matched
	scanHit                // a message matched
	scanUnsure             // the budget ran out first
)

// scanHeaders reads the headers of the messages of stream (on subject, if
// not empty) from sequence start on, and reports whether one matches, or
// that budget ran out before it could tell.
func (b *Bus) scanHeaders(ctx context.Context, stream, subject string, start uint64,
	budget *int, match func(jetstream.Msg) (bool, error)) (scan, error) {
	cfg := jetstream.OrderedConsumerConfig{HeadersOnly: true,
		InactiveThreshold: 10 * time.Second}
	if subject != "" {
		cfg.FilterSubjects = []string{subject}
	}
	if start > 1 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = start
	}
	cons, err := b.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return scanUnsure, fmt.Errorf("scan %s: %w", stream, err)
	}
	for {
		if *budget <= 0 {
			return scanUnsure, nil
		}
		batch, err := cons.FetchNoWait(min(*budget, 1000))
		if err != nil {
			return scanUnsure, fmt.Errorf("scan %s: %w", stream, err)
		}
		n, found := 0, false
		var matchErr error
		for m := range batch.Messages() {
			n++
			if !found && matchErr == nil {
				found, matchErr = match(m)
			}
		}
		if matchErr != nil {
			return scanUnsure, fmt.Errorf("scan %s: %w", stream, matchErr)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return scanUnsure, fmt.Errorf("scan %s: %w", stream, err)
		}
		*budget -= n
		if found {
			return scanHit, nil
		}
		if n == 0 {
			return scanMiss, nil
		}
	}
}

// packHolds reports whether the pack stored at seq holds the command
// (source, txn).
func packHolds(ctx context.Context, stream jetstream.Stream, seq uint64,
	source, txn string) (bool, error) {
	m, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil // removed since the scan read it
	}
	if err != nil {
		return false, fmt.Errorf("pack %d: %w", seq, err)
	}
	n, _ := strconv.Atoi(m.Header.Get(headerPack))
	lines, _ := unpack(m.Data, n)
	for _, line := range lines {
		var c bus.Command
		if decodeCommand(line, &c) == "" && c.Source == source && c.TxnID == txn {
			return true, nil
		}
	}
	return false, nil
}
