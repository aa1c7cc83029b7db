package natsbus

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
)

// r5Setup is a platform bus (MaxDeliver 1) on an embedded server of its own
// and a tool's connection (UseStreams) to the same namespace.
func r5Setup(t *testing.T, tune func(*Config)) (plat, tool *Bus, url, ns string) {
	t.Helper()
	_, url = embedded(t, t.TempDir(), false)
	ns = namespace(t)
	plat = connect(t, url, ns, false, func(c *Config) {
		c.MaxDeliver = 1
		if tune != nil {
			tune(c)
		}
	})
	tool = connect(t, url, ns, false, func(c *Config) { c.UseStreams = true })
	return plat, tool, url, ns
}

// r5Dead waits for n dead letters and returns them.
func r5Dead(t *testing.T, b *Bus, n int) []DeadLetter {
	t.Helper()
	var dead []DeadLetter
	eventually(t, strconv.Itoa(n)+" dead letters", func() bool {
		dead, _ = b.DeadLetters(context.Background(), 1000)
		return len(dead) == n
	})
	return dead
}

// failFor consumes partition p with a failing handler until the returned
// stop is called.
func failFor(t *testing.T, b *Bus, p int) func() error {
	return consume(t, b, p, 10, func(context.Context, []*Delivery) error {
		return errors.New("ledger unreachable")
	})
}

// A command stored alone with a trailing line break (a producer using
// json.Encoder, say) decodes and is applied; set aside, its re-drive must
// reach core as that command again, not as an undecodable pack.
func TestRedrive5TrailingNewlineCommandSurvivesRedrive(t *testing.T) {
	t.Parallel()
	plat, tool, _, _ := r5Setup(t, nil)
	ctx := context.Background()
	cmd := command("m-1", "nl-1", 5)
	m, err := plat.commandMsg(cmd)
	if err != nil {
		t.Fatal(err)
	}
	m.Data = append(m.Data, '\n')
	p := bus.Partition("acme", "m-1", plat.Partitions())
	if _, err := plat.js.PublishMsg(ctx, m, jetstream.WithMsgID(bus.MsgID(cmd))); err != nil {
		t.Fatal(err)
	}
	stop := failFor(t, plat, p)
	dead := r5Dead(t, plat, 1)
	_ = stop()
	if dead[0].TxnID != "nl-1" {
		t.Fatalf("the letter: %+v, want nl-1 (it decoded the first time)", dead[0])
	}
	if _, _, err := tool.Redrive(ctx, dead[0].Seq); err != nil {
		t.Fatalf("redrive: %v", err)
	}
	rec := newRecorder(nil)
	consume(t, plat, p, 10, rec.handle)
	// Wait for the re-driven command (or give up after a generous deadline
	// and report what was dead-lettered instead), then leave room for a
	// wrong second delivery.
	for deadline := time.Now().Add(10 * time.Second); len(rec.all()) == 0 &&
		time.Now().Before(deadline); {
		select {
		case <-rec.notify:
		case <-time.After(50 * time.Millisecond):
		}
	}
	time.Sleep(300 * time.Millisecond)
	if got := rec.all(); len(got) != 1 || got[0].Txn != "nl-1" {
		after, _ := plat.DeadLetters(ctx, 10)
		var reasons []string
		for _, d := range after {
			reasons = append(reasons, d.Reason+" (txn "+strconv.Quote(d.TxnID)+")")
		}
		t.Fatalf("core saw %v after the re-drive, want nl-1; dead letters now: %v", got, reasons)
	}
}

// A stop between the publish and the removal: the same re-drive published
// again is dropped; two operators re-driving one letter at once store it
// once.
func TestRedrive5CrashAndConcurrentRedriveStoreOnce(t *testing.T) {
	t.Parallel()
	plat, tool, url, ns := r5Setup(t, nil)
	ctx := context.Background()
	p := bus.Partition("acme", "m-9", plat.Partitions())
	const n = 8
	for i := range n {
		publish(t, plat, command("m-9", "cr-"+strconv.Itoa(i), 1), false)
	}
	stop := failFor(t, plat, p)
	dead := r5Dead(t, plat, n)
	_ = stop()
	before := streamMsgs(t, plat, plat.cmdStream)

	// Crash: the message was published, the letter kept.
	dl := dead[0]
	m := &nats.Msg{Subject: plat.commandSubject(dl.Partition), Data: dl.Raw, Header: nats.Header{}}
	m.Header.Set(headerPack, "1")
	m.Header.Set(headerPackKeys, string(appendPackKey(nil, dl.Source, dl.TxnID)))
	id := "redrive/" + strconv.FormatUint(dl.Seq, 10) + "/" + bus.MsgID(dl.Command)
	if _, err := plat.js.PublishMsg(ctx, m, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tool.Redrive(ctx, dl.Seq); err != nil {
		t.Fatal(err)
	}
	if got := streamMsgs(t, plat, plat.cmdStream); got != before+1 {
		t.Fatalf("after a crash and a second re-drive: %d new messages, want 1", got-before)
	}

	// Three tools at once on each other letter: stored once each; each
	// tool re-drove it (nil) or found it gone (ErrNoDeadLetter), nothing
	// else.
	tools := []*Bus{tool}
	for range 2 {
		tools = append(tools, connect(t, url, ns, false, func(c *Config) { c.UseStreams = true }))
	}
	var bad []string
	for _, dl := range dead[1:] {
		var wg sync.WaitGroup
		errs := make([]error, len(tools))
		for i, bb := range tools {
			wg.Go(func() { _, _, errs[i] = bb.Redrive(ctx, dl.Seq) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil && !errors.Is(err, ErrNoDeadLetter) {
				bad = append(bad, err.Error())
			}
		}
	}
	if got := streamMsgs(t, plat, plat.cmdStream); got != before+n {
		t.Fatalf("concurrent re-drives: %d new messages, want %d in all", got-before, n)
	}
	rec := newRecorder(nil)
	consume(t, plat, p, 10, rec.handle)
	rec.waitFor(t, n)
	time.Sleep(300 * time.Millisecond)
	if got := rec.all(); len(got) != n {
		t.Fatalf("core saw %v, want each command once", got)
	}
	if len(bad) > 0 {
		t.Fatalf("concurrent re-drives of one letter: %d errors that are neither success nor "+
			"ErrNoDeadLetter, e.g. %s", len(bad), bad[0])
	}
}

// A letter that names a partition the platform does not have (it had
// more partitions once, or the header is wrong) must not be re-driven to a
// subject no core consumes: the command would wait there for ever and its
// status would say it was never received.
func TestRedrive5PartitionNoCoreConsumes(t *testing.T) {
	t.Parallel()
	plat, tool, _, _ := r5Setup(t, nil) // 4 partitions
	ctx := context.Background()
	cmd := command("m-3", "pp-1", 2)
	m, err := plat.commandMsg(cmd)
	if err != nil {
		t.Fatal(err)
	}
	dm := nats.NewMsg(plat.prefix + bus.DeadCommandSubject(cmd.Source, cmd.TxnID))
	dm.Data = m.Data
	dm.Header.Set(HeaderReason, "max deliveries: ledger unreachable")
	dm.Header.Set(HeaderSource, cmd.Source)
	dm.Header.Set(HeaderTxn, cmd.TxnID)
	dm.Header.Set(HeaderPartition, "6")
	ack, err := plat.js.PublishMsg(ctx, dm)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = tool.Redrive(ctx, ack.Sequence)
	if err == nil {
		where, _ := plat.Locate(ctx, "pos", "pp-1")
		t.Fatalf("re-drive to partition 6 of a 4-partition platform accepted; Locate now %d "+
			"(0 = Unknown: the status URL answers 404)", where)
	}
	if !strings.Contains(err.Error(), "partition") {
		t.Fatalf("refusal does not name the partition: %v", err)
	}
}
