package app

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// enrollN enrolls members M0..M{n-1} in program telco.
// attackWorld starts a platform on cfg with program telco and members
// M0..Mn-1, and a client of its gateway.
func attackWorld(t *testing.T, cfg *Config, n int) (*App, *client) {
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	enrollN(c, n)
	return a, c
}

func enrollN(c *client, n int) {
	c.t.Helper()
	for i := 0; i < n; i++ {
		c.must(201, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", i),
			map[string]any{"customer_ref": fmt.Sprintf("M%d", i)})
	}
}

// sumBalances adds up the available points of members M0..Mn-1.
func sumBalances(c *client, n int) int64 {
	c.t.Helper()
	total := int64(0)
	for i := 0; i < n; i++ {
		b := c.must(200, "GET", fmt.Sprintf("/v1/programs/telco/members/M%d/balance", i), "", nil)
		total += jnum(c.t, b, "balance.available")
	}
	return total
}

func checkLedger(t *testing.T, a *App) {
	t.Helper()
	if v, err := a.Ledger.Check(context.Background()); err != nil || len(v) != 0 {
		t.Fatalf("ledger check: %+v %v", v, err)
	}
}

// Many clients send one Idempotency-Key at once for one member: one credit.
func TestAttackSameKeyOneMember(t *testing.T) {
	a, c := attackWorld(t, testConfig(t), 1)
	var wg sync.WaitGroup
	statuses := make([]int, 30)
	for i := range statuses {
		wg.Go(func() {
			r := c.send("POST", "/v1/programs/telco/members/M0/events", "same-1",
				map[string]any{"type": "top_up", "amount": "10"})
			statuses[i] = r.status
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != 201 {
			t.Errorf("client %d: status %d, want 201", i, s)
		}
	}
	b := c.must(200, "GET", "/v1/programs/telco/members/M0/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 10 {
		t.Fatalf("available %d, want 10", got)
	}
	checkLedger(t, a)
}

// Many clients send one Idempotency-Key at once, each for another member:
// one member is credited, the others are told of the conflict.
func TestAttackSameKeyManyMembers(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	const n = 24
	enrollN(c, n)
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		statuses := make([]int, n)
		for i := range statuses {
			wg.Go(func() {
				r := c.send("POST", fmt.Sprintf("/v1/programs/telco/members/M%d/events", i),
					fmt.Sprintf("shared-%d", round),
					map[string]any{"type": "top_up", "amount": "10"})
				statuses[i] = r.status
			})
		}
		wg.Wait()
		created := 0
		for i, s := range statuses {
			switch s {
			case 201:
				created++
			case 409:
			default:
				t.Errorf("round %d member %d: status %d", round, i, s)
			}
		}
		if created != 1 {
			t.Errorf("round %d: %d created, want 1", round, created)
		}
	}
	total := sumBalances(c, n)
	if total != 30 {
		t.Fatalf("points credited in all %d, want 30", total)
	}
	checkLedger(t, a)
}

// Accruals race redemptions of one member: never an overdraw.
func TestAttackAccrualsRaceRedemptions(t *testing.T) {
	a, c := attackWorld(t, testConfig(t), 8)
	c.must(201, "POST", "/v1/programs/telco/members/M0/credits", "seed",
		map[string]any{"points": 100, "reason": "seed"})
	var wg sync.WaitGroup
	var mu sync.Mutex
	redeemed := 0
	for i := 0; i < 20; i++ {
		wg.Go(func() {
			r := c.send("POST", "/v1/programs/telco/members/M0/events", fmt.Sprintf("acc-%d", i),
				map[string]any{"type": "top_up", "amount": "10"})
			if r.status != 201 {
				t.Errorf("accrual %d: %d %s", i, r.status, r.raw)
			}
		})
		wg.Go(func() {
			r := c.send("POST", "/v1/programs/telco/members/M0/redemptions",
				fmt.Sprintf("red-%d", i), map[string]any{"points": 30})
			switch r.status {
			case 201:
				mu.Lock()
				redeemed++
				mu.Unlock()
			case 409, 422:
			default:
				t.Errorf("redemption %d: %d %s", i, r.status, r.raw)
			}
		})
		// Other members' traffic, merged into the same transactions.
		wg.Go(func() {
			c.send("POST", fmt.Sprintf("/v1/programs/telco/members/M%d/events", 1+i%7),
				fmt.Sprintf("other-%d", i), map[string]any{"type": "top_up", "amount": "10"})
		})
	}
	wg.Wait()
	b := c.must(200, "GET", "/v1/programs/telco/members/M0/balance", "", nil)
	got := jnum(t, b, "balance.available")
	if got != 300-int64(30*redeemed) || got < 0 {
		t.Fatalf("available %d after %d redemptions, want %d", got, redeemed, 300-30*redeemed)
	}
	checkLedger(t, a)
}

// A poisonous command amid the busy traffic of other members: they apply
// promptly, it is refused alone.
func TestAttackPoisonAmidTraffic(t *testing.T) {
	a, c := attackWorld(t, testConfig(t), 16)
	var wg sync.WaitGroup
	for round := 0; round < 5; round++ {
		for i := 0; i < 16; i++ {
			wg.Go(func() {
				r := c.send("POST", fmt.Sprintf("/v1/programs/telco/members/M%d/events", i),
					fmt.Sprintf("busy-%d-%d", round, i),
					map[string]any{"type": "top_up", "amount": "10"})
				if r.status != 201 {
					t.Errorf("busy %d/%d: %d %s", round, i, r.status, r.raw)
				}
			})
		}
		cmds := []bus.Command{groupAccrual(t, fmt.Sprintf("nul-%d", round), "M3", "10", "bad\x00")}
		if _, errs := a.Bus.PublishCommands(context.Background(), cmds); errs[0] != nil {
			t.Fatal(errs[0])
		}
	}
	wg.Wait()
	for i := 0; i < 16; i++ {
		b := c.must(200, "GET", fmt.Sprintf("/v1/programs/telco/members/M%d/balance", i), "", nil)
		if got := jnum(t, b, "balance.available"); got != 50 {
			t.Errorf("M%d available %d, want 50", i, got)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for round := 0; round < 5; round++ {
		for {
			res, err := a.Ledger.CommandResult(context.Background(), "test",
				fmt.Sprintf("nul-%d", round))
			if err == nil && res.Status == bus.StatusRejected {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("nul-%d: %+v %v", round, res, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	checkLedger(t, a)
}

// A batch of 500 events, twice: committed once, replayed once.
func TestAttackBatch500(t *testing.T) {
	cfg := testConfig(t)
	a, c := attackWorld(t, cfg, 50)
	events := make([]map[string]any, 500)
	for i := range events {
		events[i] = map[string]any{"member": fmt.Sprintf("M%d", i%50),
			"txn_id": fmt.Sprintf("b-%d", i),
			"type":   "top_up", "amount": "1"}
	}
	var wg sync.WaitGroup
	replies := make([]reply, 3)
	for k := range replies {
		wg.Go(func() {
			replies[k] = c.send("POST", "/v1/programs/telco/events/batches", "",
				map[string]any{"events": events})
		})
	}
	wg.Wait()
	for k, r := range replies {
		if r.status != 200 || jnum(t, r, "committed") != 500 {
			t.Errorf("batch %d: %d committed=%v pending=%v refused=%v", k, r.status,
				r.body["committed"], r.body["pending"], r.body["refused"])
		}
	}
	dup := append(append([]map[string]any{}, events[:499]...), events[0])
	c.must(400, "POST", "/v1/programs/telco/events/batches", "", map[string]any{"events": dup})
	total := sumBalances(c, 50)
	if total != 500 {
		t.Fatalf("total %d, want 500", total)
	}
	checkLedger(t, a)
}

// A trickle of accruals: each one's event reaches the events stream.
func TestAttackTrickleEventsReachStream(t *testing.T) {
	a, c := attackWorld(t, testConfig(t), 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	seen := map[string]bool{}
	go func() {
		_ = a.Bus.ConsumeEvents(ctx, "attack-trickle", 100, 50*time.Millisecond,
			func(_ context.Context, batch []*natsbus.EventDelivery) error {
				mu.Lock()
				defer mu.Unlock()
				for _, d := range batch {
					seen[d.Event.TxnID] = true
				}
				return nil
			})
	}()
	for i := 0; i < 12; i++ {
		c.must(201, "POST", fmt.Sprintf("/v1/programs/telco/members/M%d/events", i%3),
			fmt.Sprintf("trickle-%d", i), map[string]any{"type": "top_up", "amount": "10"})
		time.Sleep(time.Duration(i*37%250) * time.Millisecond)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for i := 0; i < 12; i++ {
			if !seen[fmt.Sprintf("trickle-%d", i)] {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d accrual events never reached the stream", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkLedger(t, a)
}

// Commands applied while the process stops: their events leave the outbox
// before it stops ("after the consumers stop it drains what is left").
func TestAttackShutdownDrainsOutbox(t *testing.T) {
	cfg := testConfig(t)
	a, _ := attackWorld(t, cfg, 40)
	var cmds []bus.Command
	for i := 0; i < 2000; i++ {
		cmds = append(cmds,
			groupAccrual(t, fmt.Sprintf("sd-%d", i), fmt.Sprintf("M%d", i%40), "1", ""))
	}
	if _, errs := a.Bus.PublishCommands(context.Background(), cmds); errs[0] != nil {
		t.Fatal(errs[0])
	}
	// Stop while the consumers are busy with them.
	for {
		var n int
		if err := a.Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM commands WHERE txn_id LIKE 'sd-%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	conn, err := pgx.Connect(context.Background(), cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var applied, left int
	if err := conn.QueryRow(context.Background(),
		`SELECT count(*) FROM commands WHERE txn_id LIKE 'sd-%'`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	err = conn.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&left)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d commands applied before the stop", applied)
	if left != 0 {
		t.Fatalf("%d events left in the outbox after a clean stop", left)
	}
}

// Two batches share their txn ids, in opposite orders, for other members:
// each txn id credits once.
func TestAttackCrossedBatches(t *testing.T) {
	a, c := attackWorld(t, testConfig(t), 50)
	const n = 300
	mk := func(shift int, reverse bool) []map[string]any {
		evs := make([]map[string]any, n)
		for i := range evs {
			j := i
			if reverse {
				j = n - 1 - i
			}
			evs[i] = map[string]any{"member": fmt.Sprintf("M%d", (j+shift)%50),
				"txn_id": fmt.Sprintf("x-%d", j), "type": "top_up", "amount": "1"}
		}
		return evs
	}
	var wg sync.WaitGroup
	replies := make([]reply, 4)
	for k := range replies {
		wg.Go(func() {
			replies[k] = c.send("POST", "/v1/programs/telco/events/batches", "",
				map[string]any{"events": mk(k, k%2 == 1)})
		})
	}
	wg.Wait()
	created, pending := 0, 0
	for k, r := range replies {
		if r.status != 200 && r.status != 202 {
			t.Fatalf("batch %d: %d %s", k, r.status, r.raw)
		}
		t.Logf("batch %d: %d committed=%v pending=%v refused=%v failed=%v", k, r.status,
			r.body["committed"], r.body["pending"], r.body["refused"], r.body["failed"])
		created += int(jnum(t, r, "committed"))
		pending = max(pending, int(jnum(t, r, "pending")))
	}
	// Each id is committed by one batch, or still pending for all of them:
	// on a loaded machine a batch that lost a race to another goes back to
	// the bus and may come back after the gateway stopped waiting (202).
	if created+pending != n {
		t.Errorf("%d committed answers and %d pending, want %d in all", created, pending, n)
	}
	deadline := time.Now().Add(30 * time.Second)
	total := sumBalances(c, 50)
	for total != n && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		total = sumBalances(c, 50)
	}
	if total != n {
		t.Fatalf("total %d, want %d", total, n)
	}
	checkLedger(t, a)
}
