package natsbus

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
)

// membersOf is n members that land in partition p.
func membersOf(p, partitions, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		if m := fmt.Sprintf("pm-%d", i); bus.Partition("acme", m, partitions) == p {
			out = append(out, m)
		}
	}
	return out
}

// commandsOf is n commands, prefix0 to prefix<n-1>, spread in turn over
// k members of partition p.
func commandsOf(b *Bus, p, k, n int, prefix string) []bus.Command {
	members := membersOf(p, b.Partitions(), k)
	cmds := make([]bus.Command, n)
	for i := range cmds {
		cmds[i] = command(members[i%k], fmt.Sprintf("%s%d", prefix, i), 1)
	}
	return cmds
}

// publishSixes publishes two batches of six commands of three members of
// partition p, prefix0-0 to prefix0-5 then prefix1-0 to prefix1-5: two
// packs.
func publishSixes(t *testing.T, b *Bus, p int, prefix string) {
	t.Helper()
	for call := range 2 {
		publishAll(t, b, commandsOf(b, p, 3, 6, fmt.Sprintf("%s%d-", prefix, call)))
	}
}

// publishAll publishes cmds with PublishCommands and fails on any error or
// duplicate.
func publishAll(t *testing.T, b *Bus, cmds []bus.Command) {
	t.Helper()
	dup, errs := b.PublishCommands(context.Background(), cmds)
	for i := range cmds {
		if errs[i] != nil || dup[i] {
			t.Fatalf("command %s: duplicate %v, error %v", cmds[i].TxnID, dup[i], errs[i])
		}
	}
}

// packed is what a handler saw of a delivery, with its message.
type packed struct {
	txn       string
	seq       uint64
	index     int
	delivered uint64
}

// A batch is stored as one message per partition; sent again as it was,
// every command is a duplicate; a command that cannot be sent fails alone.
func TestPublishCommandsStoresABatchOnce(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		cmds := make([]bus.Command, 300)
		parts := map[int][]string{} // partition → its transaction ids, in order
		for i := range cmds {
			cmds[i] = command(fmt.Sprintf("m-%d", i%17), fmt.Sprintf("t-%d", i), i+1)
			p := bus.Partition("acme", cmds[i].Member, b.Partitions())
			parts[p] = append(parts[p], cmds[i].TxnID)
		}
		publishAll(t, b, cmds)
		if n := streamMsgs(t, b, b.cmdStream); n != uint64(len(parts)) {
			t.Fatalf("command stream holds %d messages, want one per partition: %d", n,
				len(parts))
		}
		// Each message holds its partition's commands, whole and in order.
		got := map[int][]string{}
		for _, m := range readMessages(t, b, len(parts)) {
			n := m.Header.Get(headerPack)
			lines, ok := unpack(m.Data, atoi(t, n))
			if !ok {
				t.Fatalf("message on %s: pack of %s does not unpack", m.Subject, n)
			}
			for _, line := range lines {
				var c bus.Command
				if problem := decodeCommand(line, &c); problem != "" {
					t.Fatalf("line %q: %s", line, problem)
				}
				p := bus.Partition("acme", c.Member, b.Partitions())
				if m.Subject != b.commandSubject(p) {
					t.Fatalf("command %s on %s, want %s", c.TxnID, m.Subject,
						b.commandSubject(p))
				}
				got[p] = append(got[p], c.TxnID)
			}
		}
		for p, want := range parts {
			if !slices.Equal(got[p], want) {
				t.Fatalf("partition %d holds %v, want %v", p, got[p], want)
			}
		}

		// The same batch again, with an unsealed command in the middle.
		unsealed := command("m-x", "t-unsealed", 1)
		unsealed.Hash = ""
		again := slices.Insert(slices.Clone(cmds), 150, unsealed)
		dup, errs := b.PublishCommands(context.Background(), again)
		for i := range again {
			if i == 150 {
				if errs[i] == nil {
					t.Fatal("unsealed command published")
				}
				continue
			}
			if errs[i] != nil || !dup[i] {
				t.Fatalf("resent command %d: duplicate %v, error %v", i, dup[i], errs[i])
			}
		}
		if n := streamMsgs(t, b, b.cmdStream); n != uint64(len(parts)) {
			t.Fatalf("command stream holds %d messages after the resend, want %d", n,
				len(parts))
		}
	})
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

// readMessages reads the first n messages of b's command stream.
func readMessages(t *testing.T, b *Bus, n int) []*nats.Msg {
	t.Helper()
	ctx := context.Background()
	s, err := b.js.Stream(ctx, b.cmdStream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	var out []*nats.Msg
	for seq := uint64(1); seq <= uint64(n); seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	}
	return out
}

// Packs bigger than core's batch reach it whole, one batch each; smaller
// ones are gathered into batches of at most the batch size, never cut. Each
// command comes once, in the order it was published, and every message is
// acknowledged.
func TestPacksReachCoreWholeAndInOrder(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		const batchSize = 8
		p := 3 % b.Partitions()
		members := membersOf(p, b.Partitions(), 4)
		var want []string
		for call, size := range []int{20, 3, 2, 5, 2, 12} {
			cmds := make([]bus.Command, size)
			for i := range cmds {
				cmds[i] = command(members[i%len(members)], fmt.Sprintf("c%d-%d", call, i), 1)
				want = append(want, cmds[i].TxnID)
			}
			publishAll(t, b, cmds)
		}
		msgs := streamMsgs(t, b, b.cmdStream)
		if msgs != 6 {
			t.Fatalf("stream holds %d messages, want 6 packs", msgs)
		}

		rec := &packRecorder{}
		consume(t, b, p, batchSize, rec.handle)
		eventually(t, "every command", func() bool { return len(rec.all()) >= len(want) })
		var got []string
		for _, d := range rec.all() {
			got = append(got, d.txn)
			if d.delivered != 1 {
				t.Errorf("%s delivered %d times", d.txn, d.delivered)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("core saw %v, want %v", got, want)
		}
		rec.mu.Lock()
		for _, batch := range rec.batches {
			whole := batch[0].index == 0
			for i, d := range batch[1:] {
				whole = whole && (d.seq != batch[i].seq || d.index == batch[i].index+1)
			}
			last := batch[len(batch)-1]
			if len(batch) > batchSize && batch[0].seq != last.seq {
				t.Errorf("batch of %d commands over %d messages: %v", len(batch),
					last.seq-batch[0].seq+1, batch)
			}
			if !whole {
				t.Errorf("batch cuts a pack: %v", batch)
			}
		}
		rec.mu.Unlock()
		eventually(t, "every message acknowledged", func() bool {
			info := consumerInfo(t, b, p)
			return info.NumAckPending == 0 && info.AckFloor.Stream == msgs
		})
	})
}

// A batch that fails comes back whole, with the packs after it that it held
// back, in order; so does a pack one of whose commands the handler naks
// while acknowledging the others.
func TestPacksComeBackWhole(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 5 % b.Partitions()
		publishSixes(t, b, p, "k")

		// Call 1 (the first pack, the batch size being 6) fails and takes
		// the second pack back with it; call 2, the first pack again, naks
		// its third command and acknowledges the rest, which holds the
		// second pack back again (its commands must not overtake the naked
		// one); call 3 is the first pack, back whole; call 4 the second.
		rec := &packRecorder{fail: func(call int, batch []*Delivery) error {
			switch call {
			case 1:
				return errors.New("database down")
			case 2:
				return batch[2].Nak(0)
			}
			return nil
		}}
		consume(t, b, p, 6, rec.handle)
		eventually(t, "a delivery", func() bool { return len(rec.all()) > 0 })
		eventually(t, "every message acknowledged", func() bool {
			info := consumerInfo(t, b, p)
			return info.NumAckPending == 0 && info.AckFloor.Stream == 2
		})
		rec.mu.Lock()
		defer rec.mu.Unlock()
		var got []string
		for _, batch := range rec.batches {
			var s []string
			for _, d := range batch {
				s = append(s, fmt.Sprintf("%s#%d", d.txn, d.delivered))
			}
			got = append(got, strings.Join(s, " "))
		}
		pack := func(call, delivered int) string {
			var s []string
			for i := range 6 {
				s = append(s, fmt.Sprintf("k%d-%d#%d", call, i, delivered))
			}
			return strings.Join(s, " ")
		}
		want := []string{pack(0, 1), pack(0, 2), pack(0, 3), pack(1, 3)}
		if !slices.Equal(got, want) {
			t.Fatalf("batches:\n%s\nwant:\n%s", strings.Join(got, "\n"),
				strings.Join(want, "\n"))
		}
	})
}

// A line of a pack that is not a command is dead-lettered alone, as itself;
// a pack that does not hold what its header announces, or announces more
// commands than a pack may hold, is dead-lettered whole.
func TestPackLinesAreDeadLetteredAlone(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 2 % b.Partitions()
		member := membersOf(p, b.Partitions(), 1)[0]
		ctx := context.Background()
		line := func(txn string) string {
			m, err := b.commandMsg(command(member, txn, 1))
			if err != nil {
				t.Fatal(err)
			}
			return string(m.Data)
		}
		send := func(count string, lines ...string) {
			m := nats.NewMsg(b.commandSubject(p))
			m.Header.Set(headerPack, count)
			m.Data = []byte(strings.Join(lines, "\n"))
			if _, err := b.js.PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		send("3", line("d-1"), `not json{`, line("d-2"))
		send("5", line("d-3"), line("d-4"))
		var many []string
		for i := range packMax + 1 {
			many = append(many, line(fmt.Sprintf("e-%d", i)))
		}
		send(fmt.Sprint(packMax+1), many...)

		rec := &packRecorder{}
		consume(t, b, p, 10, rec.handle)
		eventually(t, "a delivery", func() bool { return len(rec.all()) > 0 })
		eventually(t, "both messages settled", func() bool {
			info := consumerInfo(t, b, p)
			return info.NumAckPending == 0 && info.AckFloor.Stream == 3
		})
		var got []string
		for _, d := range rec.all() {
			got = append(got, d.txn)
		}
		if !slices.Equal(got, []string{"d-1", "d-2"}) {
			t.Fatalf("core saw %v, want [d-1 d-2]", got)
		}
		dead, err := b.DeadLetters(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 3 {
			t.Fatalf("%d dead letters, want 3: %+v", len(dead), dead)
		}
		if d := dead[2]; d.CommandSeq != 3 || len(d.Raw) < packMax*100 ||
			d.Reason != "undecodable: a pack announcing 501 commands, more than 500" {
			t.Errorf("dead oversized pack: seq %d, %d bytes, reason %q", d.CommandSeq,
				len(d.Raw), d.Reason)
		}
		if d := dead[0]; string(d.Raw) != `not json{` || d.CommandSeq != 1 ||
			!strings.HasPrefix(d.Reason, "undecodable: invalid character") {
			t.Errorf("dead line = %+v", d)
		}
		if d := dead[1]; d.CommandSeq != 2 || string(d.Raw) != line("d-3")+"\n"+line("d-4") ||
			d.Reason != "undecodable: a pack announcing 5 commands does not hold them" {
			t.Errorf("dead pack = %+v", d)
		}
	})
}

// Outages hand a pack back without using up its deliveries, once per
// delivery of the message however many commands it holds; real failures
// then dead-letter each command after MaxDeliver counted deliveries.
func TestOutageSparesAPackOnce(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 2 })
		p := 6 % b.Partitions()
		cmds := commandsOf(b, p, 2, 5, "o-")
		publishAll(t, b, cmds)

		rec := &packRecorder{fail: func(call int, _ []*Delivery) error {
			if call == 1 {
				return Unavailable(errors.New("database down"))
			}
			return errors.New("boom")
		}}
		consume(t, b, p, 10, rec.handle)
		ctx := context.Background()
		var dead []DeadLetter
		eventually(t, "five dead letters", func() bool {
			var err error
			dead, err = b.DeadLetters(ctx, 10)
			return err == nil && len(dead) >= 5
		})
		// One delivery spared, two counted: the third is the last.
		for i, d := range dead {
			if d.TxnID != cmds[i].TxnID || d.Deliveries != 3 || d.Reason != "max deliveries: boom" {
				t.Errorf("dead letter %d = %+v", i, d)
			}
		}
		if n := len(rec.all()); n != 15 {
			t.Errorf("core saw %d deliveries, want 3 of each of 5 commands", n)
		}
	})
}

// Holds finds a command inside a pack while it waits, and not once it is
// applied.
func TestHoldsLooksInsidePacks(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 1 % b.Partitions()
		publishAll(t, b, commandsOf(b, p, 3, 9, "h-"))
		if !holds(t, b, "h-0") || !holds(t, b, "h-7") || holds(t, b, "h-9") {
			t.Fatal("before core: want h-0 and h-7 held, h-9 not")
		}
		rec := &packRecorder{}
		consume(t, b, p, 10, rec.handle)
		eventually(t, "a delivery", func() bool { return len(rec.all()) > 0 })
		eventually(t, "the pack acknowledged", func() bool {
			info := consumerInfo(t, b, p)
			return info.NumAckPending == 0 && info.AckFloor.Stream == 1
		})
		if holds(t, b, "h-0") || holds(t, b, "h-7") {
			t.Fatal("after core: h-0 and h-7 still held")
		}
	})
}

// Holds reads a pack's data only when the pack's keys say it may hold the
// command: a pack whose keys leave the command out is passed over (even
// though, made by hand here, its data holds it), and a pack without keys,
// as an older producer makes, is read.
func TestHoldsReadsPacksByTheirKeys(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 2 % b.Partitions()
		send := func(cmds []bus.Command, keys string) {
			t.Helper()
			one := make([]*nats.Msg, len(cmds))
			at := make([]int, len(cmds))
			for i, c := range cmds {
				m, err := b.commandMsg(c)
				if err != nil {
					t.Fatal(err)
				}
				one[i], at[i] = m, i
			}
			m, id := packMsg(b.commandSubject(p), at, one, cmds)
			if keys == "" {
				m.Header.Del(headerPackKeys)
			} else {
				m.Header.Set(headerPackKeys, keys)
			}
			_, err := b.js.PublishMsg(context.Background(), m, jetstream.WithMsgID(id))
			if err != nil {
				t.Fatal(err)
			}
		}
		send(commandsOf(b, p, 2, 3, "nokeys-"), "")
		// Keys of other commands: the pack is taken not to hold its own.
		others := string(appendPackKey(nil, "elsewhere", "x"))
		wrong := commandsOf(b, p, 2, 1, "wrongkeys-")
		if packMayHold(others, wrong[0].Source, wrong[0].TxnID) {
			t.Fatal("the keys chosen as wrong match the command")
		}
		send(wrong, others)
		if !holds(t, b, "nokeys-2") || holds(t, b, "nokeys-3") {
			t.Fatal("a pack without keys: want nokeys-2 held, nokeys-3 not")
		}
		if holds(t, b, "wrongkeys-0") {
			t.Fatal("a pack whose keys leave a command out was read")
		}
	})
}

// Every command of a pack matches its keys; a command outside it matches
// only when its 16-bit key collides; missing or broken keys match anything.
func TestPackKeys(t *testing.T) {
	var keys []byte
	in := map[string]bool{}
	for i := range 500 {
		keys = appendPackKey(keys, "pos", fmt.Sprintf("t-%d", i))
		in[string(keys[len(keys)-packKeyLen:])] = true
	}
	if len(keys) != 500*packKeyLen {
		t.Fatalf("%d bytes of keys for 500 commands", len(keys))
	}
	for i := range 500 {
		if !packMayHold(string(keys), "pos", fmt.Sprintf("t-%d", i)) {
			t.Fatalf("t-%d not matched by its own pack's keys", i)
		}
	}
	matched := 0
	for i := 500; i < 20500; i++ {
		txn := fmt.Sprintf("t-%d", i)
		got := packMayHold(string(keys), "pos", txn)
		if want := in[string(appendPackKey(nil, "pos", txn))]; got != want {
			t.Fatalf("%s: matched %v, its key is in the pack: %v", txn, got, want)
		}
		if got {
			matched++
		}
	}
	// 500 keys of 65,536: about 150 of 20,000 outsiders collide.
	if matched > 400 {
		t.Fatalf("%d of 20,000 commands outside the pack matched its keys", matched)
	}
	key := func(source, txn string) string { return string(appendPackKey(nil, source, txn)) }
	// Every version must make the same keys (a gateway's packs are read by
	// other processes): FNV-1a of source, a zero byte and txn, folded.
	for i := range 200 {
		source, txn := fmt.Sprintf("src-%d", i%7), fmt.Sprintf("t-%d", i)
		h := fnv.New32a()
		h.Write([]byte(source + "\x00" + txn))
		sum := h.Sum32()
		if want := fmt.Sprintf("%04x", uint16(sum^sum>>16)); key(source, txn) != want {
			t.Fatalf("key of %s/%s is %s, want %s", source, txn, key(source, txn), want)
		}
	}
	if key("other", "t-1") == key("pos", "t-1") || key("po", "st-1") == key("pos", "t-1") {
		t.Fatal("the source, or where it ends, is not part of the key")
	}
	for _, broken := range []string{"", "abc", string(keys[:7])} {
		if !packMayHold(broken, "pos", "t-99999") {
			t.Fatalf("keys %q: want a match, the pack to be read", broken)
		}
	}
}

// packGroups keeps the order, cuts at packMax commands and at the byte
// limit, and leaves a command too big for a pack, or holding a line break,
// in a group of its own.
func TestPackGroups(t *testing.T) {
	msg := func(size int) *nats.Msg { return &nats.Msg{Data: make([]byte, size-1)} }
	var msgs []*nats.Msg
	var at []int
	add := func(m *nats.Msg) {
		at = append(at, len(msgs))
		msgs = append(msgs, m)
	}
	for range packMax + 3 {
		add(msg(10)) // 0 to packMax+2: packMax of them, then 3
	}
	add(msg(1200))                              // alone: over the limit below
	add(msg(400))                               // with the next one: 800 bytes
	add(msg(400))                               //
	add(&nats.Msg{Data: []byte("{\"a\":1}\n")}) // a line break: alone
	add(msg(300))                               // the last group

	got := packGroups(at, msgs, 1000)
	// packMax tens would be 5,000 bytes over a limit of 1,000: they go by
	// hundreds.
	var sizes []int
	next := 0
	for _, g := range got {
		for _, i := range g {
			if i != next {
				t.Fatalf("groups %v: index %d where %d was next", got, i, next)
			}
			next++
		}
		sizes = append(sizes, len(g))
	}
	want := []int{100, 100, 100, 100, 100, 3, 1, 2, 1, 1}
	if next != len(msgs) || !slices.Equal(sizes, want) {
		t.Fatalf("group sizes %v, want %v", sizes, want)
	}
	if got := packGroups(at[:packMax+1], msgs, 1<<20); len(got) != 2 || len(got[0]) != packMax {
		t.Fatalf("%d commands under a large limit: groups of %d, want %d and 1",
			packMax+1, len(got[0]), packMax)
	}
}
