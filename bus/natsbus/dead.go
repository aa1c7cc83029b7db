package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
)

// Headers of a dead-lettered command.
const (
	HeaderReason     = "Puntos-Reason"      // why it could not be applied
	HeaderSource     = "Puntos-Source"      // the command's source, when it decoded
	HeaderTxn        = "Puntos-Txn"         // the command's transaction id, when it decoded
	HeaderPartition  = "Puntos-Partition"   // the partition it came from
	HeaderCommandSeq = "Puntos-Command-Seq" // its sequence in the command stream
	HeaderDeliveries = "Puntos-Deliveries"  // how many times it was delivered
	// HeaderDiscarded marks what an operator's Discard leaves of a letter
	// (redrive.go): the same command, no longer listed, so that the status
	// URL and a retry of it still say it was set aside. A mark is stored on
	// bus.DiscardedCommandSubject (waiting.go).
	HeaderDiscarded = "Puntos-Discarded"
	// HeaderRefused marks a letter of a command the ledger refused for good
	// (DeadLetterRefused), stored on bus.DeadRefusedSubject.
	HeaderRefused = "Puntos-Refused"
)

// maxReasonLen bounds the reason header, in bytes.
const maxReasonLen = 1024

// DeadLetter is a command read back from the dead-letter stream.
type DeadLetter struct {
	// Seq is the message's sequence in the dead-letter stream.
	Seq uint64

	// Time is when it was dead-lettered.
	Time time.Time

	// Reason says why the command could not be applied.
	Reason string

	// Partition, CommandSeq and Deliveries tell where the command was and
	// how many times it was delivered.
	Partition  int
	CommandSeq uint64
	Deliveries uint64

	// Source and TxnID identify the command, when it decoded.
	Source string
	TxnID  string

	// Refused is set for a command the ledger refused for good (its refusal
	// is stored and answers its status URL and its retries); otherwise the
	// command failed to apply, or was not a command at all.
	Refused bool

	// Command is the decoded command; it is the zero Command when Raw is
	// not one.
	Command bus.Command

	// Raw is the command as it was on the command stream (its line, when it
	// came in a pack).
	Raw []byte
}

// DeadLetter copies d to the dead-letter stream of its partition with the
// reason and the command's identity in headers, and waits until the server
// has stored it. The caller then terminates d (Delivery.Term). Writing the
// same delivery twice, as after a crash before Term, stores it once.
func (b *Bus) DeadLetter(ctx context.Context, d *Delivery, reason string) error {
	return b.deadLetter(ctx, d, reason, false)
}

// DeadLetterRefused is DeadLetter for a command the ledger refused for good
// and whose refusal it stored: the letter goes to the command's
// bus.DeadRefusedSubject, apart from the commands that failed to apply.
func (b *Bus) DeadLetterRefused(ctx context.Context, d *Delivery, reason string) error {
	return b.deadLetter(ctx, d, reason, true)
}

func (b *Bus) deadLetter(ctx context.Context, d *Delivery, reason string, refused bool) error {
	subject := b.deadSubject(d.Partition)
	switch {
	case d.Command.Source == "" || d.Command.TxnID == "":
	case refused:
		subject = b.prefix + bus.DeadRefusedSubject(d.Partition)
	default:
		subject = b.prefix + bus.DeadCommandSubject(d.Command.Source, d.Command.TxnID)
	}
	m := nats.NewMsg(subject)
	m.Data = d.Raw
	m.Header.Set(HeaderReason, headerValue(reason, maxReasonLen))
	if refused {
		m.Header.Set(HeaderRefused, "ledger")
	}
	if d.Command.Source != "" {
		m.Header.Set(HeaderSource, headerValue(d.Command.Source, maxReasonLen))
	}
	if d.Command.TxnID != "" {
		m.Header.Set(HeaderTxn, headerValue(d.Command.TxnID, maxReasonLen))
	}
	m.Header.Set(HeaderPartition, strconv.Itoa(d.Partition))
	m.Header.Set(HeaderCommandSeq, strconv.FormatUint(d.Seq, 10))
	m.Header.Set(HeaderDeliveries, strconv.FormatUint(d.NumDelivered, 10))

	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(b.deadStream)}
	if d.Seq > 0 {
		// The original message id keeps this unique should the command
		// stream be recreated and its sequence numbers start again.
		var orig string
		if d.msg != nil {
			orig = d.msg.Headers().Get(jetstream.MsgIDHeader)
		}
		// The commands of a pack share their message: each has its place.
		at := strconv.FormatUint(d.Seq, 10)
		if d.pack != nil {
			at += "." + strconv.Itoa(d.Index)
		}
		opts = append(opts, jetstream.WithMsgID("dead:"+at+":"+orig))
	}
	ack, err := b.js.PublishMsg(ctx, m, opts...)
	if err != nil {
		return fmt.Errorf("dead-letter command %d: %w", d.Seq, err)
	}
	if !ack.Duplicate && b.cfg.OnDeadLetter != nil {
		b.cfg.OnDeadLetter()
	}
	return nil
}

// DeadLetters reads back up to n dead-lettered commands, oldest first; the
// marks Discard leaves are not among them. The stream is read in fetches
// of up to 500 messages, which pass over the removed ones.
func (b *Bus) DeadLetters(ctx context.Context, n int) ([]DeadLetter, error) {
	if n <= 0 {
		return []DeadLetter{}, nil
	}
	cons, err := b.js.OrderedConsumer(ctx, b.deadStream, jetstream.OrderedConsumerConfig{
		InactiveThreshold: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	out := []DeadLetter{}
	for len(out) < n {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			return nil, fmt.Errorf("dead letters: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if len(out) == n || m.Headers().Get(HeaderDiscarded) != "" {
				continue // enough, or a mark: kept for the command's status only
			}
			meta, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("dead letters: %w", err)
			}
			out = append(out, readDeadLetter(&jetstream.RawStreamMsg{Subject: m.Subject(),
				Sequence: meta.Sequence.Stream, Header: m.Headers(), Data: m.Data(),
				Time: meta.Timestamp}))
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("dead letters: %w", err)
		}
		if got == 0 {
			break
		}
	}
	return out, nil
}

// readDeadLetter turns a stored dead-letter message into a DeadLetter.
func readDeadLetter(raw *jetstream.RawStreamMsg) DeadLetter {
	dl := DeadLetter{
		Seq:    raw.Sequence,
		Time:   raw.Time,
		Reason: raw.Header.Get(HeaderReason),
		Source: raw.Header.Get(HeaderSource),
		TxnID:  raw.Header.Get(HeaderTxn),
		Raw:    raw.Data,

		Refused: raw.Header.Get(HeaderRefused) != "",
	}
	dl.Partition, _ = strconv.Atoi(raw.Header.Get(HeaderPartition))
	dl.CommandSeq, _ = strconv.ParseUint(raw.Header.Get(HeaderCommandSeq), 10, 64)
	dl.Deliveries, _ = strconv.ParseUint(raw.Header.Get(HeaderDeliveries), 10, 64)
	if err := json.Unmarshal(raw.Data, &dl.Command); err != nil {
		dl.Command = bus.Command{}
	}
	return dl
}

// headerValue makes s fit in a header: one line of valid UTF-8, at most
// limit bytes.
func headerValue(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > limit {
		s = s[:limit]
	}
	return strings.ToValidUTF8(s, "")
}
