package natsbus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
)

// Packs. A batch of commands used to become one stream message per command,
// stored as an atomic batch: the server then staged, checked, stored,
// delivered and took an acknowledgement for every command, which was a
// third of the process's CPU in the REST batch scenario. PublishCommands now
// puts the commands of one partition into one message, a pack, in their
// order: the message carries header Puntos-Pack with how many commands it
// holds, and its data is their encodings, one per line (the encoding of a
// command is compact JSON, so it holds no line break). The consumer hands
// the commands of a pack to core one by one, as if each had its own
// message; the message is settled once all of them are.
//
// A pack's message id is derived from its commands' ids, so a batch sent
// again as it was is dropped whole by the server as a duplicate; a batch
// that overlaps an earlier one only in part is stored again, and the ledger
// answers its repeated commands as replays.
const (
	headerPack = "Puntos-Pack"
	// headerPackKeys holds a short key of each command of a pack (appendPackKey),
	// so that Holds passes over packs that cannot hold the command it looks
	// for without reading their data. A pack without it is read.
	headerPackKeys = "Puntos-Pack-Keys"
	// packMax is the most commands in one pack: core applies at most its
	// batch size (1,024 by default) at once and never splits a message.
	packMax = 500
	// packMaxBytes is the most data in one pack, well under the server's
	// default 1 MiB limit per message (a server set to take less gets packs
	// of at most half its limit). A command bigger than that travels alone,
	// and fails alone if the server refuses it.
	packMaxBytes = 256 << 10
)

// PublishCommands puts many commands on their members' partitions at once:
// the commands of each partition as one pack (see above), or as a message
// of their own for a partition that gets only one; the messages go to the
// server together and their acknowledgements are awaited together (see
// store).
//
// The answers come back in the order of cmds: duplicate[i] is set when the
// server already held command i's message (a retry), errs[i] when command i
// was not confirmed stored. A command with an error may or may not be
// stored: publishing it again is safe. Every command must be sealed.
func (b *Bus) PublishCommands(ctx context.Context, cmds []bus.Command) (duplicate []bool,
	errs []error) {
	duplicate = make([]bool, len(cmds))
	errs = make([]error, len(cmds))

	// Encode them all, in partitions; a command that cannot be encoded is
	// marked and skipped.
	parts := map[string][]int{}
	var order []string
	one := make([]*nats.Msg, len(cmds))
	for i, cmd := range cmds {
		m, err := b.commandMsg(cmd)
		if err != nil {
			errs[i] = err
			continue
		}
		one[i] = m
		if _, ok := parts[m.Subject]; !ok {
			order = append(order, m.Subject)
		}
		parts[m.Subject] = append(parts[m.Subject], i)
	}
	b.storePacked(ctx, cmds, one, parts, order, duplicate, errs)
	return duplicate, errs
}

// storePacked stores the commands whose messages are in one, grouped by
// partition in parts (subjects in order), as packs and single messages,
// and sets duplicate[i] and errs[i] for each command i it stores.
func (b *Bus) storePacked(ctx context.Context, cmds []bus.Command, one []*nats.Msg,
	parts map[string][]int, order []string, duplicate []bool, errs []error) {
	var msgs []*nats.Msg
	var ids []string
	var carried [][]int // the commands of each message
	limit := packMaxBytes
	if most := b.nc.MaxPayload(); most > 0 {
		limit = min(limit, int(most/2))
	}
	for _, subject := range order {
		for _, group := range packGroups(parts[subject], one, limit) {
			if len(group) == 1 {
				msgs, ids = append(msgs, one[group[0]]), append(ids, bus.MsgID(cmds[group[0]]))
			} else {
				m, id := packMsg(subject, group, one, cmds)
				msgs, ids = append(msgs, m), append(ids, id)
			}
			carried = append(carried, group)
		}
	}
	dup, merrs := make([]bool, len(msgs)), make([]error, len(msgs))
	b.store(ctx, b.cmdStream, msgs, ids, dup, merrs)
	for k, group := range carried {
		for _, i := range group {
			duplicate[i] = dup[k]
			if merrs[k] != nil {
				errs[i] = fmt.Errorf("publish command %s: %w", cmds[i].ID, merrs[k])
			}
		}
	}
}

// packGroups cuts the commands at (indexes into msgs, all of one partition,
// in order) into groups that fit a pack of at most limit bytes, keeping
// their order. A command too big for any pack, or (which the encoding never
// makes) holding a line break, is a group of its own.
func packGroups(at []int, msgs []*nats.Msg, limit int) [][]int {
	var groups [][]int
	start, size := 0, 0
	for k, i := range at {
		n := len(msgs[i].Data) + 1
		alone := n > limit || bytes.IndexByte(msgs[i].Data, '\n') >= 0
		if k > start && (alone || k-start == packMax || size+n > limit) {
			groups = append(groups, at[start:k])
			start, size = k, 0
		}
		if alone {
			groups = append(groups, at[k:k+1])
			start = k + 1
			continue
		}
		size += n
	}
	if start < len(at) {
		groups = append(groups, at[start:])
	}
	return groups
}

// packMsg is the pack of the commands at group, on subject, with its
// message id.
func packMsg(subject string, group []int, msgs []*nats.Msg,
	cmds []bus.Command) (*nats.Msg, string) {
	size := 0
	for _, i := range group {
		size += len(msgs[i].Data) + 1
	}
	data := make([]byte, 0, size)
	keys := make([]byte, 0, packKeyLen*len(group))
	h := sha256.New()
	for k, i := range group {
		if k > 0 {
			data = append(data, '\n')
		}
		data = append(data, msgs[i].Data...)
		h.Write([]byte(bus.MsgID(cmds[i])))
		h.Write([]byte{0})
		keys = appendPackKey(keys, cmds[i].Source, cmds[i].TxnID)
	}
	m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	m.Header.Set(headerPack, strconv.Itoa(len(group)))
	m.Header.Set(headerPackKeys, string(keys))
	return m, "pack:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// unpack splits the data of a pack of n commands into their encodings. It
// reports false when the data does not hold n lines.
func unpack(data []byte, n int) ([][]byte, bool) {
	if n < 1 || n > bytes.Count(data, []byte{'\n'})+1 {
		return nil, false
	}
	lines := make([][]byte, 0, n)
	for len(lines) < n-1 {
		line, rest, _ := bytes.Cut(data, []byte{'\n'})
		lines, data = append(lines, line), rest
	}
	if bytes.IndexByte(data, '\n') >= 0 {
		return nil, false
	}
	return append(lines, data), true
}

// packKeyLen is the length of one command's key in headerPackKeys: four hex
// digits, 16 bits of a hash of its source and transaction id, so that a
// pack of 500 commands has a header of 2,000 bytes and a lookup reads the
// data of a pack that does not hold its command about once in 65,536
// commands.
const packKeyLen = 4

// appendPackKey appends the key of (source, txn) to keys: FNV-1a (32 bits)
// of source, a zero byte and txn, folded to 16 bits, in hex.
func appendPackKey(keys []byte, source, txn string) []byte {
	const offset, prime = 2166136261, 16777619
	sum := uint32(offset)
	for i := 0; i < len(source); i++ {
		sum = (sum ^ uint32(source[i])) * prime
	}
	sum *= prime // the zero byte between them
	for i := 0; i < len(txn); i++ {
		sum = (sum ^ uint32(txn[i])) * prime
	}
	k := uint16(sum ^ sum>>16)
	const digits = "0123456789abcdef"
	return append(keys, digits[k>>12], digits[k>>8&15], digits[k>>4&15], digits[k&15])
}

// packMayHold reports whether a pack with keys (headerPackKeys) may hold
// the command (source, txn): false only when no key matches. Keys that are
// missing or not made of whole keys answer true, and the pack is read.
func packMayHold(keys, source, txn string) bool {
	if keys == "" || len(keys)%packKeyLen != 0 {
		return true
	}
	want := string(appendPackKey(nil, source, txn))
	for i := 0; i < len(keys); i += packKeyLen {
		if keys[i:i+packKeyLen] == want {
			return true
		}
	}
	return false
}
