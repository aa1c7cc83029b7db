package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Atomic batches. With a store that syncs every write (nats-sync=always,
// the default), JetStream syncs the disk once per message it stores, one
// message after the other: a stream takes about as many messages a second
// as the disk takes syncs. A stream that allows atomic publishing
// (nats-server 2.12 and later) stages a batch and then stores it in one
// step, with one sync for the whole batch. Staging costs a few syncs of its
// own (the server makes and removes a small store for each batch), so a
// batch pays only from atomicMin messages on: BenchmarkStoreGroups measures
// both ways. The bus sends larger groups of messages (the events of a
// relay pass) as atomic batches when the stream allows them, and smaller
// ones message by message. A batch of commands is packed instead, a few
// messages for the whole batch (publish_batch.go).
//
// An atomic batch is stored whole or not at all. The server refuses the
// whole batch when one of its messages repeats a message id it holds (a
// retry); the bus then sends that batch again message by message, so each
// message gets the answer it would have had alone: stored, or a duplicate.

// The headers of the atomic batch protocol.
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// atomicBatchMax is the most messages one atomic batch carries; the server
// refuses batches over 1,000 by default. atomicMin is the fewest worth one.
const (
	atomicBatchMax = 500
	atomicMin      = 32
)

// atomicInflight bounds the atomic batches this connection has open at
// once; the server refuses a stream more than 50 by default.
const atomicInflight = 16

// atomicMinVersion is the first server version with atomic batches.
var atomicMinVersion = [3]int{2, 12, 0}

// serverAtLeast reports whether version (like "2.15.3" or "2.12.0-beta")
// is at least want.
func serverAtLeast(version string, want [3]int) bool {
	version, _, _ = strings.Cut(version, "-")
	parts := strings.Split(version, ".")
	for i := range want {
		n := 0
		if i < len(parts) {
			var err error
			if n, err = strconv.Atoi(parts[i]); err != nil {
				return false
			}
		}
		if n != want[i] {
			return n > want[i]
		}
	}
	return true
}

// batchAck is the server's answer to the commit of an atomic batch.
type batchAck struct {
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	Batch  string `json:"batch"`
	Count  int    `json:"count"`
	Error  *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// errBatchRefused is a batch the server refused as a whole; nothing of it
// is stored.
var errBatchRefused = errors.New("atomic batch refused")

// publishAtomic stores msgs, with their message ids, in stream as one
// atomic batch, and returns once the server has them all. On error nothing
// may be stored, or (when the answer was lost) everything: sending the
// messages again, with the same ids, is safe either way.
func (b *Bus) publishAtomic(ctx context.Context, stream string, msgs []*nats.Msg,
	ids []string) error {
	select {
	case b.atomicSlots <- struct{}{}:
		defer func() { <-b.atomicSlots }()
	case <-ctx.Done():
		return ctx.Err()
	}

	batch := nuid.Next()
	for i, m := range msgs {
		h := nats.Header{}
		for k, v := range m.Header {
			h[k] = v
		}
		h.Set(nats.MsgIdHdr, ids[i])
		h.Set(nats.ExpectedStreamHdr, stream)
		h.Set(batchIDHeader, batch)
		h.Set(batchSeqHeader, strconv.Itoa(i+1))
		out := &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}
		if i < len(msgs)-1 {
			// The server answers only the commit; a message it could not
			// stage makes the commit fail.
			if err := b.nc.PublishMsg(out); err != nil {
				return fmt.Errorf("send atomic batch: %w", err)
			}
			continue
		}
		h.Set(batchCommitHeader, "1")
		cctx, cancel := context.WithTimeout(ctx, asyncAckTimeout)
		reply, err := b.nc.RequestMsgWithContext(cctx, out)
		cancel()
		if err != nil {
			return fmt.Errorf("commit atomic batch: %w", err)
		}
		var ack batchAck
		if err := json.Unmarshal(reply.Data, &ack); err != nil {
			return fmt.Errorf("commit atomic batch: undecodable answer: %w", err)
		}
		if ack.Error != nil {
			return fmt.Errorf("%w: %s (%d)", errBatchRefused, ack.Error.Description,
				ack.Error.ErrCode)
		}
		if ack.Stream != stream || ack.Count != len(msgs) {
			return fmt.Errorf("commit atomic batch: stored %d messages in %q, sent %d to %q",
				ack.Count, ack.Stream, len(msgs), stream)
		}
	}
	return nil
}

// store sends msgs to stream, each with the message id of the same index,
// in order: as atomic batches when the stream allows them, one by one
// otherwise or when the server refuses a batch. A nil message is skipped
// (its caller has already set its error). dup[i] is set when the server
// already held message i, errs[i] when message i was not confirmed stored;
// such a message may or may not be stored.
func (b *Bus) store(ctx context.Context, stream string, msgs []*nats.Msg, ids []string,
	dup []bool, errs []error) {
	var at []int // indexes of the messages to send
	for i, m := range msgs {
		if m != nil {
			at = append(at, i)
		}
	}
	for len(at) > 0 {
		n := min(len(at), atomicBatchMax)
		chunk := at[:n]
		at = at[n:]
		if n >= atomicMin && b.atomicStreams[stream] {
			cm, cid := make([]*nats.Msg, n), make([]string, n)
			for k, i := range chunk {
				cm[k], cid[k] = msgs[i], ids[i]
			}
			err := b.publishAtomic(ctx, stream, cm, cid)
			if err == nil {
				b.atomicStored.Add(uint64(n))
				continue
			}
			if !errors.Is(err, errBatchRefused) {
				b.log.Debug("Atomic batch not confirmed, sending its messages one by one",
					"stream", stream, "messages", n, "error", err)
			}
		}
		b.storeEach(ctx, stream, msgs, ids, chunk, dup, errs)
	}
}

// storeEach sends the messages at the given indexes one by one, without
// waiting, then awaits the server's acknowledgements together.
func (b *Bus) storeEach(ctx context.Context, stream string, msgs []*nats.Msg, ids []string,
	at []int, dup []bool, errs []error) {
	futures := make([]jetstream.PubAckFuture, len(at))
	for k, i := range at {
		f, err := b.js.PublishMsgAsync(msgs[i], jetstream.WithMsgID(ids[i]),
			jetstream.WithExpectStream(stream), jetstream.WithStallWait(stallWait))
		if err != nil {
			errs[i] = err
			continue
		}
		futures[k] = f
	}
	for k, f := range futures {
		if f == nil {
			continue
		}
		i := at[k]
		select {
		case ack := <-f.Ok():
			dup[i] = ack.Duplicate
		case err := <-f.Err():
			errs[i] = err
		case <-ctx.Done():
			errs[i] = ctx.Err()
		}
	}
}
