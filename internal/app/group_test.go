package app

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// gatedLedger applies batches with the real ledger, records the size of
// each transaction, and holds the first one until open is closed.
type gatedLedger struct {
	t       *testing.T
	a       *App
	entered chan struct{}
	open    chan struct{}

	mu    sync.Mutex
	sizes []int
}

func newGatedLedger(t *testing.T, a *App) *gatedLedger {
	return &gatedLedger{t: t, a: a, entered: make(chan struct{}), open: make(chan struct{})}
}

func (g *gatedLedger) apply(ctx context.Context, cmds []bus.Command) ([]postgres.Applied,
	error) {
	g.mu.Lock()
	g.sizes = append(g.sizes, len(cmds))
	first := len(g.sizes) == 1
	g.mu.Unlock()
	if first {
		close(g.entered)
		<-g.open
	}
	return g.a.Ledger.ApplyBatch(ctx, cmds)
}

func (g *gatedLedger) calls() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sizes)
}

// groupAccrual is an accrual command for member ref of program telco.
func groupAccrual(t *testing.T, txn, ref, amount, partner string) bus.Command {
	payload, err := json.Marshal(core.Accrue{EventType: "top_up", Amount: amount,
		Partner: partner})
	if err != nil {
		t.Fatal(err)
	}
	cmd := bus.Command{ID: uuid.NewString(), Kind: core.KindAccrue, Source: "test",
		TxnID: txn, Program: "telco", Member: ref, Payload: payload}
	cmd.Seal()
	cmd.ReceivedAt = time.Now().UTC()
	cmd.OccurredAt = cmd.ReceivedAt
	return cmd
}

// groupOutcome is what one partition's call of Apply returned.
type groupOutcome struct {
	applied []postgres.Applied
	err     error
}

// startQueued runs Apply for each batch once the first transaction is held,
// and returns when all of them wait in the queue.
func startQueued(t *testing.T, gc *groupCommit, gl *gatedLedger,
	batches [][]bus.Command) ([]groupOutcome, *sync.WaitGroup) {
	t.Helper()
	waiting := make(chan int, 64)
	gc.queued = func(n int) { waiting <- n }
	out := make([]groupOutcome, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Go(func() {
			out[i].applied, out[i].err = gc.Apply(context.Background(), b)
		})
		// One at a time, so that the queue keeps their order.
		select {
		case n := <-waiting:
			if n != i+1 {
				t.Fatalf("queue holds %d batches after the %dth arrived", n, i+1)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("batch never queued")
		}
	}
	return out, &wg
}

// groupWorld starts a platform with program telco and members C1..Cn, and
// a group commit of one writer over its ledger whose first transaction
// waits for the gate.
func groupWorld(t *testing.T, n int) (*client, *gatedLedger, *groupCommit) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	for i := 1; i <= n; i++ {
		c.must(201, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", i),
			map[string]any{"customer_ref": fmt.Sprintf("C%d", i)})
	}
	gl := newGatedLedger(t, a)
	return c, gl, newGroupCommit(gl.apply, 1, 64)
}

// Batches handed in while a transaction runs are applied together in the
// next one, and each partition gets back the results of its own commands,
// in its order.
func TestGroupCommitMergesWaitingBatches(t *testing.T) {
	c, gl, gc := groupWorld(t, 6)

	first := make(chan groupOutcome, 1)
	go func() {
		var o groupOutcome
		o.applied, o.err = gc.Apply(context.Background(),
			[]bus.Command{groupAccrual(t, "g-1-a", "C1", "5", "")})
		first <- o
	}()
	<-gl.entered

	// Five partitions, two commands each, arrive while C1's transaction runs.
	var batches [][]bus.Command
	for i := 2; i <= 6; i++ {
		ref := fmt.Sprintf("C%d", i)
		batches = append(batches, []bus.Command{
			groupAccrual(t, fmt.Sprintf("g-%d-a", i), ref, fmt.Sprint(i), ""),
			groupAccrual(t, fmt.Sprintf("g-%d-b", i), ref, fmt.Sprint(10*i), "")})
	}
	out, wg := startQueued(t, gc, gl, batches)
	close(gl.open)
	wg.Wait()
	if o := <-first; o.err != nil || len(o.applied) != 1 || o.applied[0].Result.TxnID != "g-1-a" {
		t.Fatalf("first batch: %+v", o)
	}

	if got := gl.calls(); !slices.Equal(got, []int{1, 10}) {
		t.Fatalf("transactions of %v commands, want [1 10]: the five waiting batches in one", got)
	}
	for i, o := range out {
		n := i + 2
		if o.err != nil {
			t.Fatalf("batch of C%d: %v", n, o.err)
		}
		var txns []string
		for _, ap := range o.applied {
			txns = append(txns, ap.Result.TxnID)
			if ap.Result.Status != bus.StatusOK {
				t.Fatalf("batch of C%d: %+v", n, ap.Result)
			}
		}
		want := []string{fmt.Sprintf("g-%d-a", n), fmt.Sprintf("g-%d-b", n)}
		if !slices.Equal(txns, want) {
			t.Fatalf("batch of C%d got results %v, want %v", n, txns, want)
		}
	}
	for i := 1; i <= 6; i++ {
		want := int64(11 * i)
		if i == 1 {
			want = 5
		}
		b := c.must(200, "GET", fmt.Sprintf("/v1/programs/telco/members/C%d/balance", i), "",
			nil)
		if got := jnum(t, b, "balance.available"); got != want {
			t.Fatalf("C%d holds %d points, want %d", i, got, want)
		}
	}
}

// When a merged transaction fails, each batch is applied on its own: the
// batch that cannot be stored gets its own error, the others their results.
func TestGroupCommitFailureFallsBackToEachBatch(t *testing.T) {
	c, gl, gc := groupWorld(t, 4)

	first := make(chan error, 1)
	go func() {
		_, err := gc.Apply(context.Background(),
			[]bus.Command{groupAccrual(t, "f-1", "C1", "7", "")})
		first <- err
	}()
	<-gl.entered
	out, wg := startQueued(t, gc, gl, [][]bus.Command{
		{groupAccrual(t, "f-2", "C2", "20", "")},
		{groupAccrual(t, "f-3", "C3", "30", "bad\x00")}, // PostgreSQL refuses a NUL
		{groupAccrual(t, "f-4", "C4", "40", "")},
	})
	close(gl.open)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("first batch: %v", err)
	}

	if got := gl.calls(); !slices.Equal(got, []int{1, 3, 1, 1, 1}) {
		t.Fatalf("transactions of %v commands, want [1 3 1 1 1]: merged, then each alone", got)
	}
	if out[1].err == nil {
		t.Fatalf("the batch with a NUL was applied: %+v", out[1].applied)
	}
	for _, i := range []int{0, 2} {
		if o := out[i]; o.err != nil || len(o.applied) != 1 ||
			o.applied[0].Result.Status != bus.StatusOK {
			t.Fatalf("valid batch %d: %+v %v", i, o.applied, o.err)
		}
	}
	for ref, want := range map[string]int64{"C1": 7, "C2": 20, "C3": 0, "C4": 40} {
		b := c.must(200, "GET", "/v1/programs/telco/members/"+ref+"/balance", "", nil)
		if got := jnum(t, b, "balance.available"); got != want {
			t.Fatalf("%s holds %d points, want %d", ref, got, want)
		}
	}
}

// A batch still committing when the process stops has its events relayed
// before the stop ends: the relay's last pass waits for the consumers.
func TestShutdownRelaysEventsOfACommittingBatch(t *testing.T) {
	cfg := testConfig(t)
	a, _ := attackWorld(t, cfg, 1)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	apply := a.group.apply // no command is on the bus yet: nothing reads it
	a.group.apply = func(ctx context.Context, cmds []bus.Command) ([]postgres.Applied, error) {
		once.Do(func() {
			close(entered)
			<-release
		})
		return apply(ctx, cmds)
	}
	cmd := groupAccrual(t, "stop-1", "M0", "10", "")
	if _, errs := a.Bus.PublishCommands(context.Background(), []bus.Command{cmd}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the accrual never reached the ledger")
	}
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- a.Shutdown(ctx)
	}()
	// Long enough for a relay that does not wait to make its last, empty pass.
	time.Sleep(500 * time.Millisecond)
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	conn, err := pgx.Connect(context.Background(), cfg.DatabaseURL) // the app's pool is closed
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var left, posted int
	err = conn.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM outbox),
		(SELECT count(*) FROM postings WHERE txn_id = 'stop-1')`).Scan(&left, &posted)
	if err != nil || posted != 1 || left != 0 {
		t.Fatalf("after the stop: accrual posted %d times, %d events left in the outbox (%v); "+
			"want 1 and 0", posted, left, err)
	}
}

// One transaction id in the batches of three partitions merged into one
// transaction: for the member it was first sent for, the same request again
// in another partition's batch, and another member. Each command gets one
// answer: the first applies, its copy replays it, the other member's is a
// conflict; the points are posted once, and an answer the ledger encoded is
// its result as encoding/json writes it.
func TestGroupCommitOneTxnIDAcrossPartitions(t *testing.T) {
	c, gl, gc := groupWorld(t, 4)
	first := make(chan error, 1)
	go func() {
		_, err := gc.Apply(context.Background(),
			[]bus.Command{groupAccrual(t, "x-0", "C1", "1", "")})
		first <- err
	}()
	<-gl.entered
	shared := groupAccrual(t, "x-shared", "C2", "20", "")
	out, wg := startQueued(t, gc, gl, [][]bus.Command{
		{shared, groupAccrual(t, "x-2", "C2", "2", "")},
		{groupAccrual(t, "x-3", "C3", "3", ""), groupAccrual(t, "x-shared", "C3", "30", "")},
		{groupAccrual(t, "x-4", "C4", "4", ""), shared},
	})
	close(gl.open)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("first batch: %v", err)
	}
	if got := gl.calls(); !slices.Equal(got, []int{1, 6}) {
		t.Fatalf("transactions of %v commands, want [1 6]", got)
	}
	for i, o := range out {
		if o.err != nil || len(o.applied) != 2 {
			t.Fatalf("batch %d: %+v %v", i, o.applied, o.err)
		}
		for _, ap := range o.applied {
			if len(ap.Encoded) == 0 {
				continue
			}
			if want, _ := json.Marshal(ap.Result); string(want) != string(ap.Encoded) {
				t.Fatalf("batch %d encoded\n%s\nresult\n%s", i, ap.Encoded, want)
			}
		}
	}
	a, conflict, again := out[0].applied[0].Result, out[1].applied[1].Result,
		out[2].applied[1].Result
	if a.Status != bus.StatusOK || a.Replayed {
		t.Fatalf("first use of the id: %+v", a)
	}
	if conflict.Status != bus.StatusRejected || conflict.Error == nil ||
		conflict.Error.Kind != string(core.Conflict) {
		t.Fatalf("the id for another member: %+v", conflict)
	}
	var da, dc any
	_ = json.Unmarshal(a.Data, &da)
	_ = json.Unmarshal(again.Data, &dc)
	if again.Status != bus.StatusOK || !again.Replayed || fmt.Sprint(da) != fmt.Sprint(dc) {
		t.Fatalf("the copy: %+v, first: %+v", again, a)
	}
	for ref, want := range map[string]int64{"C1": 1, "C2": 22, "C3": 3, "C4": 4} {
		b := c.must(200, "GET", "/v1/programs/telco/members/"+ref+"/balance", "", nil)
		if got := jnum(t, b, "balance.available"); got != want {
			t.Fatalf("%s holds %d points, want %d", ref, got, want)
		}
	}
}

// With two writers, the batches that arrive while a transaction runs wait
// for it as long as they hold fewer commands than an eighth of the batch
// size; once that many wait, a second transaction takes them beside the
// first.
func TestGroupCommitSecondWriterWaitsForABacklog(t *testing.T) {
	c, gl, _ := groupWorld(t, 4)
	gc := newGroupCommit(gl.apply, 2, 64) // a second transaction from 8 waiting
	accruals := func(ref string, n int) []bus.Command {
		cmds := make([]bus.Command, n)
		for i := range cmds {
			cmds[i] = groupAccrual(t, fmt.Sprintf("w-%s-%d", ref, i), ref, "10", "")
		}
		return cmds
	}
	first := make(chan error, 1)
	go func() {
		_, err := gc.Apply(context.Background(), accruals("C1", 1))
		first <- err
	}()
	<-gl.entered

	out, wg := startQueued(t, gc, gl, [][]bus.Command{accruals("C2", 3), accruals("C3", 4)})
	time.Sleep(300 * time.Millisecond) // room for a wrong second transaction
	if got := gl.calls(); !slices.Equal(got, []int{1}) {
		t.Fatalf("transactions of %v commands with 7 waiting, want only the first", got)
	}
	last := make(chan error, 1)
	go func() {
		_, err := gc.Apply(context.Background(), accruals("C4", 1))
		last <- err
	}()
	// The first transaction is still held: only a second one can answer C4.
	select {
	case err := <-last:
		if err != nil {
			t.Fatalf("batch of C4: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("8 commands waiting and no second transaction: %v", gl.calls())
	}
	if got := gl.calls(); !slices.Equal(got, []int{1, 8}) {
		t.Fatalf("transactions of %v commands, want [1 8]: the three waiting batches "+
			"beside the first", got)
	}
	close(gl.open)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("batch of C1: %v", err)
	}
	for i, o := range out {
		if o.err != nil || len(o.applied) != 3+i {
			t.Fatalf("batch of C%d: %d results, error %v", i+2, len(o.applied), o.err)
		}
	}
	for ref, want := range map[string]int64{"C1": 10, "C2": 30, "C3": 40, "C4": 10} {
		b := c.must(200, "GET", "/v1/programs/telco/members/"+ref+"/balance", "", nil)
		if got := jnum(t, b, "balance.available"); got != want {
			t.Fatalf("%s holds %d points, want %d", ref, got, want)
		}
	}
}
