package natsbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// The tests run against real servers: always an embedded one, and the
// machine's NATS as well when PUNTOS_TEST_NATS_URL names it or, when that
// variable is empty, when 127.0.0.1:4222 answers. PUNTOS_TEST_NATS_URL=off
// leaves the machine's server out. Each test works in its own namespace and
// deletes its streams afterwards.

// machineNATS is the URL of the machine's NATS server, or "" if none.
func machineNATS() string {
	switch u := os.Getenv("PUNTOS_TEST_NATS_URL"); u {
	case "off":
		return ""
	case "":
	default:
		return u
	}
	c, err := net.DialTimeout("tcp", "127.0.0.1:4222", 300*time.Millisecond)
	if err != nil {
		return ""
	}
	c.Close()
	return "nats://127.0.0.1:4222"
}

// embedded starts a server for t alone, stopped when t ends.
func embedded(t *testing.T, dir string, syncAlways bool) (stop func(), url string) {
	t.Helper()
	s, url, err := StartEmbedded(dir, 0, syncAlways)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
	}
	t.Cleanup(stop)
	return stop, url
}

// relay is a testenv.Relay spoken to in NATS URLs (nats://host:port).
type relay struct{ *testenv.Relay }

// newRelay starts a relay to the server at url.
func newRelay(t *testing.T, url string) relay {
	t.Helper()
	return relay{testenv.NewRelay(t, strings.TrimPrefix(url, "nats://"))}
}

// url is the relay's address as a NATS URL.
func (r relay) url() string { return "nats://" + r.Addr() }

// to sends new connections to the server at url; "" drops them.
func (r relay) to(url string) { r.To(strings.TrimPrefix(url, "nats://")) }

// eachServer runs f as a subtest against every available server.
func eachServer(t *testing.T, f func(t *testing.T, url string)) {
	t.Helper()
	t.Parallel()
	_, url := embedded(t, t.TempDir(), false)
	t.Run("embedded", func(t *testing.T) { f(t, url) })
	if u := machineNATS(); u != "" {
		t.Run("machine", func(t *testing.T) { f(t, u) })
	} else {
		t.Log("machine NATS not in use; embedded server only")
	}
}

// namespace is a fresh namespace for one test.
func namespace(t *testing.T) string {
	t.Helper()
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "test-" + hex.EncodeToString(b)
}

// connect opens a bus in ns. With drop, the streams are deleted when t ends.
func connect(t *testing.T, url, ns string, drop bool, tune func(*Config)) *Bus {
	t.Helper()
	cfg := Config{URL: url, Name: t.Name(), Namespace: ns, Partitions: 4,
		RetryDelay: 20 * time.Millisecond}
	if tune != nil {
		tune(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := Connect(ctx, cfg, log)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		if drop {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, s := range []string{b.cmdStream, b.evtStream, b.deadStream} {
				if err := b.js.DeleteStream(ctx, s); err != nil {
					t.Errorf("delete stream %s: %v", s, err)
				}
			}
		}
		b.Close()
	})
	return b
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var occurred = time.Date(2025, 3, 9, 14, 30, 0, 0, time.UTC)

// command is a sealed earn command.
func command(member, txn string, points int) bus.Command {
	c := bus.Command{ID: "cmd-" + txn, Kind: "earn", Source: "pos", TxnID: txn,
		Program: "acme", Member: member,
		Payload:    json.RawMessage(fmt.Sprintf(`{"points":%d}`, points)),
		OccurredAt: occurred, ReceivedAt: occurred.Add(time.Second)}
	c.Seal()
	return c
}

// publish publishes cmd and checks what the server said about duplicates.
func publish(t *testing.T, b *Bus, cmd bus.Command, wantDup bool) {
	t.Helper()
	dup, err := b.PublishCommand(context.Background(), cmd)
	if err != nil {
		t.Fatalf("PublishCommand %s: %v", cmd.TxnID, err)
	}
	if dup != wantDup {
		t.Fatalf("PublishCommand %s: duplicate = %v, want %v", cmd.TxnID, dup, wantDup)
	}
}

// seen is what a handler saw of one delivery.
type seen struct {
	Txn       string
	Hash      string
	Delivered uint64
	Partition int
}

func (s seen) String() string { return fmt.Sprintf("%s#%d", s.Txn, s.Delivered) }

// consume runs Consume on partition p in the background; stop ends it and
// returns its error.
func consume(t *testing.T, b *Bus, p, batch int,
	handle func(ctx context.Context, batch []*Delivery) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Consume(ctx, p, batch, 100*time.Millisecond, handle) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// batchLog is a handler that records what it sees of each batch (a seen
// or a packed per delivery) and answers with the error that fail returns
// for it.
type batchLog[T seen | packed] struct {
	mu      sync.Mutex
	batches [][]T
	fail    func(call int, batch []*Delivery) error
	notify  chan struct{} // signalled after each batch, when not nil
}

// recorder records what the tests of single commands check; packRecorder
// also where each command came from (pack_test.go).
type (
	recorder     = batchLog[seen]
	packRecorder = batchLog[packed]
)

func newRecorder(fail func(call int, batch []*Delivery) error) *recorder {
	return &recorder{fail: fail, notify: make(chan struct{}, 100)}
}

// note is what a batchLog of T records of d.
func note[T seen | packed](d *Delivery) T {
	var out any = packed{d.Command.TxnID, d.Seq, d.Index, d.NumDelivered}
	if _, ok := any(*new(T)).(seen); ok {
		out = seen{d.Command.TxnID, d.Command.Hash, d.NumDelivered, d.Partition}
	}
	return out.(T)
}

func (r *batchLog[T]) handle(_ context.Context, batch []*Delivery) error {
	got := make([]T, len(batch))
	for i, d := range batch {
		got[i] = note[T](d)
	}
	r.mu.Lock()
	r.batches = append(r.batches, got)
	call := len(r.batches)
	r.mu.Unlock()
	if r.notify != nil {
		r.notify <- struct{}{}
	}
	if r.fail != nil {
		return r.fail(call, batch)
	}
	return nil
}

// all is every delivery seen so far, in order.
func (r *batchLog[T]) all() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []T
	for _, b := range r.batches {
		out = append(out, b...)
	}
	return out
}

// waitFor waits until n deliveries were seen; r must have a notify channel
// (newRecorder).
func (r *batchLog[T]) waitFor(t *testing.T, n int) []T {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := r.all(); len(got) >= n {
			return got
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("saw %v, want %d deliveries", r.all(), n)
		}
	}
}

// holds is b.Holds for the source "pos"; an error fails the test.
func holds(t *testing.T, b *Bus, txn string) bool {
	t.Helper()
	held, err := b.Holds(context.Background(), "pos", txn)
	if err != nil {
		t.Fatalf("Holds %s: %v", txn, err)
	}
	return held
}

// locate is b.Locate for the source "pos"; an error fails the test.
func locate(t *testing.T, b *Bus, txn string) bus.Whereabouts {
	t.Helper()
	where, err := b.Locate(context.Background(), "pos", txn)
	if err != nil {
		t.Fatalf("Locate %s: %v", txn, err)
	}
	return where
}

// eventually polls cond until it holds or 10 seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consumerInfo reads the state of partition p's durable consumer.
func consumerInfo(t *testing.T, b *Bus, p int) *jetstream.ConsumerInfo {
	t.Helper()
	ctx := context.Background()
	c, err := b.js.Consumer(ctx, b.cmdStream, durableName(p))
	if err != nil {
		t.Fatalf("consumer %d: %v", p, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("consumer %d info: %v", p, err)
	}
	return info
}

// streamMsgs is the number of messages stored in a stream.
func streamMsgs(t *testing.T, b *Bus, name string) uint64 {
	t.Helper()
	ctx := context.Background()
	s, err := b.js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	return info.State.Msgs
}

// otherMember is a member that lands in a different partition than member.
func otherMember(t *testing.T, member string, n int) string {
	t.Helper()
	p := bus.Partition("acme", member, n)
	for i := range 100 {
		m := fmt.Sprintf("other-%d", i)
		if bus.Partition("acme", m, n) != p {
			return m
		}
	}
	t.Fatal("no member in another partition")
	return ""
}

func TestConfigDefaultsAndLimits(t *testing.T) {
	t.Parallel()
	c, err := Config{URL: "nats://127.0.0.1:4222"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{URL: "nats://127.0.0.1:4222", Name: "puntos", Partitions: 8, Replicas: 1,
		AckWait: 30 * time.Second, MaxDeliver: 10, RetryDelay: 200 * time.Millisecond,
		MaxRetryDelay: 30 * time.Second, CommandMaxAge: 7 * 24 * time.Hour,
		EventMaxAge: 30 * 24 * time.Hour}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults = %+v, want %+v", c, want)
	}

	bad := map[string]Config{
		"no url":        {},
		"partitions":    {URL: "x", Partitions: -1},
		"ack wait":      {URL: "x", AckWait: time.Millisecond},
		"short max age": {URL: "x", CommandMaxAge: time.Hour},
		"short events":  {URL: "x", EventMaxAge: time.Hour},
		"retry delays":  {URL: "x", RetryDelay: time.Minute, MaxRetryDelay: time.Second},
		"namespace dot": {URL: "x", Namespace: "a.b"},
		"namespace gt":  {URL: "x", Namespace: "a>"},
	}
	for name, c := range bad {
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("%s: no error for %+v", name, c)
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	for n, want := range map[int]time.Duration{0: 200 * ms, 1: 200 * ms, 2: 400 * ms,
		4: 1600 * ms, 10: 30 * time.Second, 1000: 30 * time.Second} {
		if got := backoff(200*ms, 30*time.Second, n); got != want {
			t.Errorf("backoff(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestHeaderValue(t *testing.T) {
	t.Parallel()
	if got := headerValue("a\r\nb", 100); got != "a  b" {
		t.Errorf("newlines: %q", got)
	}
	if got := headerValue("añb", 2); got != "a" {
		t.Errorf("cut inside a rune: %q", got)
	}
}

func TestCommandsOfOneMemberArriveInOrder(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		member := "m-1"
		p := bus.Partition("acme", member, b.Partitions())
		cmds := []bus.Command{command(member, "t-1", 10), command(member, "t-2", 20),
			command(member, "t-3", 30)}
		for _, c := range cmds {
			publish(t, b, c, false)
		}
		publish(t, b, command(otherMember(t, member, b.Partitions()), "t-other", 5), false)

		// A batch of two splits the three commands over two batches.
		rec := newRecorder(nil)
		stop := consume(t, b, p, 2, rec.handle)
		got := rec.waitFor(t, 3)
		time.Sleep(200 * time.Millisecond) // room for a wrong fourth delivery
		if err := stop(); err != nil {
			t.Fatalf("Consume: %v", err)
		}

		got = rec.all()
		want := []seen{{"t-1", cmds[0].Hash, 1, p}, {"t-2", cmds[1].Hash, 1, p},
			{"t-3", cmds[2].Hash, 1, p}}
		if !slices.Equal(got, want) {
			t.Fatalf("deliveries = %v, want %v", got, want)
		}
		if n := len(rec.batches[0]); n != 2 {
			t.Errorf("first batch has %d commands, want 2", n)
		}

		// Everything handled was acknowledged on the server. (The ack floor
		// counts deliveries: the stream sequence may include t-other.)
		info := consumerInfo(t, b, p)
		if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Consumer != 3 {
			t.Errorf("consumer: ack pending %d, pending %d, ack floor %d; want 0, 0, 3",
				info.NumAckPending, info.NumPending, info.AckFloor.Consumer)
		}
	})
}

func TestDuplicateCommandIsDroppedChangedOneIsNot(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		first := command("m-2", "t-dup", 10)
		publish(t, b, first, false)
		publish(t, b, first, true)

		changed := command("m-2", "t-dup", 11)
		if changed.Hash == first.Hash {
			t.Fatal("changed payload, same hash")
		}
		publish(t, b, changed, false)

		if n := streamMsgs(t, b, b.cmdStream); n != 2 {
			t.Fatalf("command stream holds %d messages, want 2", n)
		}
		p := bus.Partition("acme", "m-2", b.Partitions())
		rec := newRecorder(nil)
		consume(t, b, p, 10, rec.handle)
		got := rec.waitFor(t, 2)
		want := []seen{{"t-dup", first.Hash, 1, p}, {"t-dup", changed.Hash, 1, p}}
		if !slices.Equal(got, want) {
			t.Fatalf("deliveries = %v, want %v", got, want)
		}
	})
}

func TestFailedBatchComesBackInOrder(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		member := "m-3"
		p := bus.Partition("acme", member, b.Partitions())
		for i := 1; i <= 3; i++ {
			publish(t, b, command(member, fmt.Sprintf("t-%d", i), i), false)
		}

		rec := newRecorder(func(call int, _ []*Delivery) error {
			if call == 1 {
				return errors.New("database down")
			}
			return nil
		})
		stop := consume(t, b, p, 10, rec.handle)
		rec.waitFor(t, 6)
		if err := stop(); err != nil {
			t.Fatalf("Consume: %v", err)
		}

		var got []string
		for _, batch := range rec.batches {
			got = append(got, fmt.Sprint(batch))
		}
		want := []string{"[t-1#1 t-2#1 t-3#1]", "[t-1#2 t-2#2 t-3#2]"}
		if !slices.Equal(got, want) {
			t.Fatalf("batches = %v, want %v", got, want)
		}
		info := consumerInfo(t, b, p)
		if info.NumAckPending != 0 || info.NumRedelivered != 0 || info.AckFloor.Stream != 3 {
			t.Errorf("consumer: ack pending %d, redelivered %d, ack floor %d; want 0, 0, 3",
				info.NumAckPending, info.NumRedelivered, info.AckFloor.Stream)
		}
	})
}

func TestHandlerSettlesItself(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		member := "m-4"
		p := bus.Partition("acme", member, b.Partitions())
		publish(t, b, command(member, "t-keep", 1), false)
		publish(t, b, command(member, "t-drop", 2), false)

		// The handler acknowledges the first and terminates the second
		// itself, then fails: nothing may come back.
		rec := newRecorder(func(call int, batch []*Delivery) error {
			if err := batch[0].Ack(context.Background()); err != nil {
				return err
			}
			if len(batch) > 1 {
				if err := batch[1].Term(); err != nil {
					return err
				}
			}
			return errors.New("fails after settling")
		})
		stop := consume(t, b, p, 10, rec.handle)
		rec.waitFor(t, 2)
		time.Sleep(300 * time.Millisecond) // a redelivery would show by now
		stop()

		if got := fmt.Sprint(rec.all()); got != "[t-keep#1 t-drop#1]" {
			t.Fatalf("deliveries = %s, want [t-keep#1 t-drop#1]", got)
		}
		eventually(t, "terminated message to leave pending", func() bool {
			info := consumerInfo(t, b, p)
			return info.NumAckPending == 0 && info.NumPending == 0
		})
	})
}

func TestUndecodableMessagesAreDeadLettered(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		member := "m-5"
		p := bus.Partition("acme", member, b.Partitions())
		ctx := context.Background()
		for _, raw := range []string{`not json{`, `{"payload":{}}`} {
			if _, err := b.js.Publish(ctx, b.commandSubject(p), []byte(raw)); err != nil {
				t.Fatal(err)
			}
		}
		good := command(member, "t-good", 7)
		publish(t, b, good, false)

		rec := newRecorder(nil)
		consume(t, b, p, 10, rec.handle)
		got := rec.waitFor(t, 1)
		if want := []seen{{"t-good", good.Hash, 1, p}}; !slices.Equal(got, want) {
			t.Fatalf("handler saw %v, want only %v", got, want)
		}

		dead, err := b.DeadLetters(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 2 {
			t.Fatalf("%d dead letters, want 2: %+v", len(dead), dead)
		}
		if d := dead[0]; string(d.Raw) != `not json{` ||
			!strings.HasPrefix(d.Reason, "undecodable: invalid character") ||
			d.Partition != p || d.CommandSeq != 1 || d.Deliveries != 1 ||
			d.Source != "" || d.Command.TxnID != "" {
			t.Errorf("first dead letter = %+v", d)
		}
		if d := dead[1]; d.Reason != "undecodable: no kind, source or txn_id" ||
			d.CommandSeq != 2 || string(d.Raw) != `{"payload":{}}` {
			t.Errorf("second dead letter = %+v", d)
		}
		if few, err := b.DeadLetters(ctx, 1); err != nil || len(few) != 1 || few[0].Seq != 1 {
			t.Errorf("DeadLetters(1) = %+v, %v; want the first", few, err)
		}
		eventually(t, "dead letters to be terminated", func() bool {
			info := consumerInfo(t, b, p)
			return info.NumAckPending == 0 && info.AckFloor.Stream == 3
		})
	})
}

func TestMaxDeliveriesDeadLetters(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 3 })
		member := "m-6"
		p := bus.Partition("acme", member, b.Partitions())
		poison := command(member, "t-poison", 1)
		publish(t, b, poison, false)

		rec := newRecorder(func(int, []*Delivery) error { return errors.New("boom") })
		consume(t, b, p, 10, rec.handle)

		ctx := context.Background()
		var dead []DeadLetter
		eventually(t, "a dead letter", func() bool {
			var err error
			dead, err = b.DeadLetters(ctx, 10)
			return err == nil && len(dead) > 0
		})
		d := dead[0]
		if len(dead) != 1 || d.Reason != "max deliveries: boom" || d.Source != "pos" ||
			d.TxnID != "t-poison" || d.Command.Hash != poison.Hash || d.Deliveries != 3 ||
			d.Partition != p || d.CommandSeq != 1 {
			t.Fatalf("dead letters = %+v", dead)
		}
		if got := fmt.Sprint(rec.all()); got != "[t-poison#1 t-poison#2 t-poison#3]" {
			t.Fatalf("deliveries = %s", got)
		}
		eventually(t, "the poison command to be terminated", func() bool {
			return consumerInfo(t, b, p).NumAckPending == 0
		})
	})
}

// TestOutageUsesNoDeliveries has a handler report an outage (Unavailable)
// twice as many times as MaxDeliver allows, then succeed: the command is
// applied, in order with the one after it, and never dead-lettered.
func TestOutageUsesNoDeliveries(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 3 })
		member := "m-7"
		p := bus.Partition("acme", member, b.Partitions())
		publish(t, b, command(member, "t-wait", 1), false)
		publish(t, b, command(member, "t-next", 1), false)

		const outages = 6
		rec := newRecorder(func(call int, _ []*Delivery) error {
			if call <= outages {
				return Unavailable(errors.New("database down"))
			}
			return nil
		})
		consume(t, b, p, 1, rec.handle)
		got := rec.waitFor(t, outages+2)
		want := "[t-wait#1 t-wait#2 t-wait#3 t-wait#4 t-wait#5 t-wait#6 t-wait#7 t-next#1]"
		if fmt.Sprint(got[:outages+2]) != want {
			t.Fatalf("deliveries = %v, want %s", got, want)
		}
		eventually(t, "both commands to be acknowledged", func() bool {
			info := consumerInfo(t, b, p)
			return info.NumAckPending == 0 && info.AckFloor.Stream == 2
		})
		if dead, err := b.DeadLetters(context.Background(), 10); err != nil || len(dead) != 0 {
			t.Fatalf("dead letters = %+v, %v", dead, err)
		}
		if !errors.Is(Unavailable(errors.New("x")), ErrUnavailable) || Unavailable(nil) != nil {
			t.Fatal("Unavailable does not mark its error")
		}
	})
}

// TestEventsAgeOut checks that the events stream keeps events for
// EventMaxAge, and that a new value reaches a stream that already exists.
func TestEventsAgeOut(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		ns := namespace(t)
		b := connect(t, url, ns, true, nil)
		ctx := context.Background()
		maxAge := func(b *Bus) time.Duration {
			s, err := b.js.Stream(ctx, b.evtStream)
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return info.Config.MaxAge
		}
		if got := maxAge(b); got != DefaultEventMaxAge {
			t.Fatalf("events max age %s, want the default %s", got, DefaultEventMaxAge)
		}
		b2 := connect(t, url, ns, false, func(c *Config) { c.EventMaxAge = 90 * 24 * time.Hour })
		if got := maxAge(b2); got != 90*24*time.Hour {
			t.Fatalf("events max age %s after reconnecting with 90 days", got)
		}
	})
}

// Two callers' commands whose source and transaction id run together the
// same way ("partner" with "acme:9", "partner:acme" with "9"), with the same
// request: each is a command of its own on the bus, neither the other's
// retry, while a real retry of either is still dropped.
func TestMessageIDsKeepSourceAndTxnApart(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		a := command("m-1", "acme:9", 5)
		a.Source = "partner"
		a.Seal()
		c := command("m-1", "9", 5)
		c.Source = "partner:acme"
		c.Seal()
		if a.Hash != c.Hash {
			t.Fatal("the two requests differ; the test needs them alike")
		}
		publish(t, b, a, false)
		publish(t, b, c, false)
		publish(t, b, a, true)
		publish(t, b, c, true)
		for _, x := range []bus.Command{a, c} {
			if w, err := b.Locate(context.Background(), x.Source, x.TxnID); err != nil ||
				w != bus.Waiting {
				t.Fatalf("%s/%s located %d (%v), want waiting", x.Source, x.TxnID, w, err)
			}
		}
	})
}

// TestHoldsKnowsWhatWaits asks the bus about a command before any consumer
// ran, once it is applied, about one never sent and about one that was
// dead-lettered, and Locate tells waiting from dead-lettered.
func TestHoldsKnowsWhatWaits(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 1 })
		member := "m-8"
		p := bus.Partition("acme", member, b.Partitions())
		publish(t, b, command(member, "t-ok", 1), false)
		publish(t, b, command(member, "t-bad", 1), false)
		if !holds(t, b, "t-ok") || !holds(t, b, "t-bad") || holds(t, b, "t-never") {
			t.Fatal("before core: want t-ok and t-bad held, t-never not")
		}
		if w := locate(t, b, "t-bad"); w != bus.Waiting {
			t.Fatalf("before core: t-bad located %d, want waiting", w)
		}

		rec := newRecorder(func(_ int, batch []*Delivery) error {
			if batch[0].Command.TxnID == "t-bad" {
				return errors.New("boom")
			}
			return nil
		})
		consume(t, b, p, 1, rec.handle)
		rec.waitFor(t, 2)
		eventually(t, "both commands to be settled", func() bool {
			info := consumerInfo(t, b, p)
			return info.NumAckPending == 0 && info.NumPending == 0
		})
		if holds(t, b, "t-ok") || !holds(t, b, "t-bad") || holds(t, b, "t-never") {
			t.Fatal("after core: want t-ok gone, t-bad held as a dead letter, t-never unknown")
		}
		for txn, want := range map[string]bus.Whereabouts{"t-ok": bus.Unknown,
			"t-bad": bus.DeadLettered, "t-never": bus.Unknown} {
			if w := locate(t, b, txn); w != want {
				t.Fatalf("after core: %s located %d, want %d", txn, w, want)
			}
		}
	})
}

func TestResultReachesTheWaiter(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		ns := namespace(t)
		gateway := connect(t, url, ns, true, nil)
		core := connect(t, url, ns, false, nil)

		results, unsubscribe, err := gateway.SubscribeResult("pos", "t-r")
		if err != nil {
			t.Fatal(err)
		}
		other := bus.Result{CommandID: "c-x", Source: "pos", TxnID: "t-other",
			Kind: "earn", Status: bus.StatusOK}
		if err := core.PublishResult(other); err != nil {
			t.Fatal(err)
		}
		want := bus.Result{CommandID: "c-1", Source: "pos", TxnID: "t-r", Kind: "earn",
			Status: bus.StatusRejected,
			Error:  &bus.Error{Kind: "insufficient_points", Message: "balance is 3"},
			Data:   json.RawMessage(`{"balance":3}`)}
		if err := core.PublishResult(want); err != nil {
			t.Fatal(err)
		}

		select {
		case got := <-results:
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(want)
			if string(gj) != string(wj) {
				t.Fatalf("result = %s, want %s", gj, wj)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no result")
		}

		unsubscribe()
		unsubscribe()
		if _, open := <-results; open {
			t.Fatal("channel still open after unsubscribe")
		}
		if err := core.PublishResult(want); err != nil {
			t.Fatal(err)
		}
		if err := core.PublishResult(bus.Result{CommandID: "c"}); err == nil {
			t.Fatal("result without source and txn accepted")
		}
	})
}

func TestEventsAreStoredOnce(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		ctx := context.Background()
		evs := []bus.Event{
			{ID: "e-1", Kind: "earned", Program: "acme", Member: "m-7", Points: 10,
				OccurredAt: occurred, RecordedAt: occurred, Source: "pos", TxnID: "t-1"},
			{ID: "e-2", Kind: "redeemed", Program: "acme", Member: "m-7", Points: -4,
				OccurredAt: occurred, RecordedAt: occurred, Source: "pos", TxnID: "t-2"},
		}
		for range 2 {
			if err := b.PublishEvents(ctx, evs); err != nil {
				t.Fatalf("PublishEvents: %v", err)
			}
		}
		if n := streamMsgs(t, b, b.evtStream); n != 2 {
			t.Fatalf("event stream holds %d messages, want 2", n)
		}

		s, err := b.js.Stream(ctx, b.evtStream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(ctx, b.prefix+"puntos.evt.acme.redeemed")
		if err != nil {
			t.Fatal(err)
		}
		var got bus.Event
		if err := json.Unmarshal(m.Data, &got); err != nil || !reflect.DeepEqual(got, evs[1]) {
			t.Fatalf("stored event = %+v (%v), want %+v", got, err, evs[1])
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != "e-2" {
			t.Errorf("message id = %q, want e-2", id)
		}

		if err := b.PublishEvents(ctx, []bus.Event{{Kind: "earned"}}); err == nil {
			t.Fatal("event without id accepted")
		}
	})
}

func TestUnsealedCommandIsRefused(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		c := command("m-8", "t-1", 1)
		c.Hash = ""
		if _, err := b.PublishCommand(context.Background(), c); err == nil {
			t.Fatal("unsealed command accepted")
		}
		if err := b.Ping(context.Background()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		if err := b.Consume(context.Background(), b.Partitions(), 1, time.Second,
			nil); err == nil {
			t.Fatal("Consume accepted a partition out of range")
		}
	})
}

// TestRestartKeepsCommands stops an embedded server with unconsumed
// commands and starts it again on the same directory.
func TestRestartKeepsCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const ns = "restart"
	member := "m-9"
	cmds := []bus.Command{command(member, "t-1", 1), command(member, "t-2", 2),
		command(member, "t-3", 3)}

	// First life: t-1 is consumed, t-2 and t-3 are not.
	stop1, url1 := embedded(t, dir, true)
	b1 := connect(t, url1, ns, false, nil)
	p := bus.Partition("acme", member, b1.Partitions())
	publish(t, b1, cmds[0], false)
	rec := newRecorder(nil)
	stopConsume := consume(t, b1, p, 10, rec.handle)
	rec.waitFor(t, 1)
	if err := stopConsume(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	publish(t, b1, cmds[1], false)
	publish(t, b1, cmds[2], false)
	stop1()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b1.Ping(ctx); err == nil {
		t.Error("Ping succeeded with the server stopped")
	}
	b1.Close()

	// Second life: the same store, on another port.
	_, url2 := embedded(t, dir, true)
	b2 := connect(t, url2, ns, false, nil)
	// A context of its own: the failed Ping above may have used up all of
	// the first one while its request waited on the stopped server.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := b2.Ping(ctx2); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	publish(t, b2, cmds[0], true) // the de-duplication window survived
	rec2 := newRecorder(nil)
	consume(t, b2, p, 10, rec2.handle)
	got := rec2.waitFor(t, 2)
	want := []seen{{"t-2", cmds[1].Hash, 1, p}, {"t-3", cmds[2].Hash, 1, p}}
	if !slices.Equal(got, want) {
		t.Fatalf("after restart: deliveries = %v, want %v", got, want)
	}
}
