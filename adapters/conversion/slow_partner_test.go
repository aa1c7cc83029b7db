package conversion

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// scripted is a partner that answers after a delay, confirming or leaving
// every delivery unclear, and counts its deliveries.
type scripted struct {
	mu      sync.Mutex
	delay   time.Duration
	confirm bool
	calls   int
}

func (p *scripted) Deliver(ctx context.Context, req Request) Answer {
	p.mu.Lock()
	p.calls++
	p.mu.Unlock()
	select {
	case <-time.After(p.delay):
	case <-ctx.Done():
	}
	if p.confirm {
		return Answer{Outcome: Confirmed, Reference: "REF-" + req.TxnID[:8]}
	}
	return Answer{Detail: "timeout"}
}

func (p *scripted) Status(context.Context, Request) Answer { return Answer{} }

func (p *scripted) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// hotelAndBus is a program whose member holds points and may convert into
// two programs, "hotel" and "bus", each reached through the partner the
// worker's Options.Partner returns for its code (byCode).
func hotelAndBus(e *env, member string, points core.Points) string {
	e.t.Helper()
	hang := skyMiles(core.FlavourHTTP)
	hang.Code, hang.Endpoint = "hotel", "https://127.0.0.1:9/hotel"
	prog := e.program(hang, member, points)
	fine := skyMiles(core.FlavourHTTP)
	fine.Code, fine.Endpoint = "bus", "https://127.0.0.1:9/bus"
	e.ok(core.KindExternalUpsert, prog, fine.Code, fine)
	return prog
}

// byCode reaches hotel through the first partner and bus through the second.
func byCode(hotel, bus Partner) func(string, *core.ExternalProgram) (Partner, error) {
	return func(_ string, ext *core.ExternalProgram) (Partner, error) {
		if ext.Code == "hotel" {
			return hotel, nil
		}
		return bus, nil
	}
}

// TestSlowPartnerHoldsUpNoOther: in one step, the conversions of a program
// that answers nothing for longer than Slow cost one delivery, the others
// of that program are given back without an attempt counted, and a healthy
// program's conversion is confirmed beside it.
func TestSlowPartnerHoldsUpNoOther(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const member = "56933333333"
	prog := hotelAndBus(e, member, 20000)

	var hotel []core.Conversion
	for range 3 {
		hotel = append(hotel, e.convert(prog, member, core.ConvertRequest{External: "hotel",
			Points: 1000, AccountID: "HT000001"}))
	}
	toBus := e.convert(prog, member, core.ConvertRequest{External: "bus", Points: 1000,
		AccountID: "BU000001"})
	e.wantBalance(prog, member, 16000, 4000)

	slow := &scripted{delay: 300 * time.Millisecond}
	quick := &scripted{delay: 10 * time.Millisecond, confirm: true}
	w := New(e.ledger, quietLog(), Options{Clock: e.clock, Slow: 200 * time.Millisecond,
		RetryMin: time.Minute, Partner: byCode(slow, quick)})
	n, err := w.Step(ctx)
	if err != nil || n != 4 {
		t.Fatalf("step: %d claimed, %v", n, err)
	}
	if got := e.conversion(prog, member, toBus.ID); got.Status != core.ConversionConfirmed {
		t.Fatalf("bus conversion %s, want confirmed beside the hanging hotel", got.Status)
	}
	if slow.count() != 1 {
		t.Fatalf("hotel delivered %d times in one step, want 1", slow.count())
	}
	for i, c := range hotel {
		got := e.conversion(prog, member, c.ID)
		want := 0 // given back, not attempted
		if i == 0 {
			want = 1
		}
		if got.Status != core.ConversionPending || got.Attempts != want {
			t.Fatalf("hotel conversion %d: %s after %d attempts, want pending after %d", i,
				got.Status, got.Attempts, want)
		}
	}
	e.wantBalance(prog, member, 16000, 3000)

	// Due again after RetryMin, they are delivered; the hotel answering
	// at once now, all three are confirmed.
	e.advance(2 * time.Minute)
	slow.mu.Lock()
	slow.delay, slow.confirm = 0, true
	slow.mu.Unlock()
	if n, err := w.Step(ctx); err != nil || n != 3 {
		t.Fatalf("second step: %d claimed, %v", n, err)
	}
	for _, c := range hotel {
		if got := e.conversion(prog, member, c.ID); got.Status != core.ConversionConfirmed {
			t.Fatalf("hotel conversion %s: %s, want confirmed", c.ID, got.Status)
		}
	}
	e.wantBalance(prog, member, 16000, 0)
	e.check()
}

// TestBacklogLeavesRoomForOthers: thirty conversions to a program that hangs,
// older than one to a healthy program, do not fill the first claim: the
// programs take turns, and the healthy one is confirmed in the first step.
func TestBacklogLeavesRoomForOthers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const member = "56944444444"
	prog := hotelAndBus(e, member, 40000)
	for range 30 {
		e.convert(prog, member, core.ConvertRequest{External: "hotel", Points: 1000,
			AccountID: "HT000001"})
	}
	toBus := e.convert(prog, member, core.ConvertRequest{External: "bus", Points: 1000,
		AccountID: "BU000001"})
	slow := &scripted{delay: 150 * time.Millisecond}
	quick := &scripted{delay: time.Millisecond, confirm: true}
	w := New(e.ledger, quietLog(), Options{Clock: e.clock, Slow: 100 * time.Millisecond,
		Partner: byCode(slow, quick)})
	if n, err := w.Step(ctx); err != nil || n != 10 {
		t.Fatalf("step: %d claimed, %v", n, err)
	}
	if got := e.conversion(prog, member, toBus.ID); got.Status != core.ConversionConfirmed {
		t.Fatalf("bus conversion %s after the first step, want confirmed", got.Status)
	}
	if slow.count() != 1 {
		t.Fatalf("hotel delivered %d times, want 1 (the rest given back)", slow.count())
	}
	e.wantBalance(prog, member, 9000, 30000)
}

// askedPartner answers a status query only once let go, telling when it
// is asked; it never credits on delivery.
type askedPartner struct {
	asked, letGo chan struct{}
	answer       Answer
}

func (p *askedPartner) Deliver(context.Context, Request) Answer { return Answer{Detail: "down"} }

func (p *askedPartner) Status(context.Context, Request) Answer {
	p.asked <- struct{}{}
	<-p.letGo
	return p.answer
}

// TestReconcileHoldsOffAPersonWhileItAsks: while the reconciliation asks
// the other program about a pending conversion, a person's resolution is
// refused (the answer may settle it); an unclear answer ends the claim, and
// the person can then resolve it.
func TestReconcileHoldsOffAPersonWhileItAsks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const member = "56955555555"
	prog := hotelAndBus(e, member, 5000)
	c := e.convert(prog, member, core.ConvertRequest{External: "hotel", Points: 1000,
		AccountID: "HT000001"})
	resolve := func() bus.Result {
		body, _ := json.Marshal(core.ResolveConversion{ID: c.ID, Outcome: "refused",
			Reason: "the hotel has no record"})
		cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(),
			Kind: core.KindConversionResolve, Source: "test", TxnID: uuid.NewString(),
			Program: prog, Member: member, Actor: "ana", Payload: body,
			OccurredAt: e.clock(), ReceivedAt: e.clock()}
		cmd.Seal()
		out, err := e.ledger.ApplyBatch(ctx, []bus.Command{cmd})
		if err != nil {
			t.Fatal(err)
		}
		return out[0].Result
	}
	e.advance(20 * time.Minute) // past ReconcileAfter
	p := &askedPartner{asked: make(chan struct{}), letGo: make(chan struct{})}
	w := New(e.ledger, quietLog(), Options{Clock: e.clock,
		Partner: func(string, *core.ExternalProgram) (Partner, error) { return p, nil }})
	done := make(chan error, 1)
	go func() { _, err := w.Reconcile(ctx); done <- err }()
	<-p.asked
	if r := resolve(); r.Status != bus.StatusRejected || r.Error.Kind != "conflict" {
		t.Fatalf("resolve while the reconciliation asks: %s %+v, want a conflict", r.Status,
			r.Error)
	}
	close(p.letGo)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := resolve(); r.Status != bus.StatusOK {
		t.Fatalf("resolve after an unclear answer: %+v", r.Error)
	}
	e.wantBalance(prog, member, 5000, 0)
}

// TestReconcileHangsNoDelivery: while the reconciliation waits on a
// program that does not answer about an old pending conversion, Run still
// delivers a new conversion to another program, and the reconciliation
// still asks that other program about its own old one. (They used to wait
// for the hanging answer: with the default timeouts about 41 s per
// conversion asked, up to a thousand of them.)
func TestReconcileHangsNoDelivery(t *testing.T) {
	e := newEnv(t)
	const member = "56966666666"
	prog := hotelAndBus(e, member, 5000)
	old := e.convert(prog, member, core.ConvertRequest{External: "hotel", Points: 1000,
		AccountID: "HT000001"})
	oldBus := e.convert(prog, member, core.ConvertRequest{External: "bus", Points: 500,
		AccountID: "BU000001"})
	e.advance(20 * time.Minute) // past ReconcileAfter
	hotel := &askedPartner{asked: make(chan struct{}, 1), letGo: make(chan struct{})}
	// bus leaves deliveries unclear until told otherwise, and confirms the
	// old conversion when asked about it.
	quick := &busPartner{}
	ctx, cancel := context.WithCancel(context.Background())
	w := New(e.ledger, quietLog(), Options{Clock: e.clock, Interval: 10 * time.Millisecond,
		RetryMin: time.Hour, Partner: byCode(hotel, quick)})
	// Both old conversions were delivered once, unclear: not due again for
	// an hour (RetryMin), only for the reconciliation.
	if n, err := w.Step(ctx); err != nil || n != 2 {
		t.Fatalf("first step: %d claimed, %v", n, err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		close(hotel.letGo)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-hotel.asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the reconciliation never asked the hotel")
	}
	quick.confirmDeliveries()
	fresh := e.convert(prog, member, core.ConvertRequest{External: "bus", Points: 700,
		AccountID: "BU000001"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		f := e.conversion(prog, member, fresh.ID)
		o := e.conversion(prog, member, oldBus.ID)
		if f.Status == core.ConversionConfirmed && o.Status == core.ConversionConfirmed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("while the hotel is asked: new bus conversion %s, old one %s; want both "+
				"confirmed", f.Status, o.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := e.conversion(prog, member, old.ID); got.Status != core.ConversionPending {
		t.Fatalf("hotel conversion %s while its status is asked, want pending", got.Status)
	}
	e.wantBalance(prog, member, 2800, 1000)
}

// busPartner leaves deliveries unclear until confirmDeliveries, and
// confirms every conversion it is asked about.
type busPartner struct {
	mu      sync.Mutex
	confirm bool
}

func (p *busPartner) confirmDeliveries() {
	p.mu.Lock()
	p.confirm = true
	p.mu.Unlock()
}

func (p *busPartner) Deliver(_ context.Context, req Request) Answer {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.confirm {
		return Answer{Outcome: Confirmed, Reference: "BUS-" + req.TxnID[:8]}
	}
	return Answer{Detail: "down"}
}

func (p *busPartner) Status(_ context.Context, req Request) Answer {
	return Answer{Outcome: Confirmed, Reference: "BUS-" + req.TxnID[:8]}
}

// slowStatus answers nothing clear about a conversion, after a delay, and
// counts the questions.
type slowStatus struct {
	scripted
}

func (p *slowStatus) Status(ctx context.Context, req Request) Answer {
	return p.Deliver(ctx, req)
}

// TestReconcileAsksASlowProgramOnce: a program whose answer about one old
// conversion stays unclear for Slow is asked about no other this time; the
// reconciliation reports the one it checked and leaves all pending.
func TestReconcileAsksASlowProgramOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const member = "56977777777"
	prog := hotelAndBus(e, member, 5000)
	for range 3 {
		e.convert(prog, member, core.ConvertRequest{External: "hotel", Points: 1000,
			AccountID: "HT000001"})
	}
	e.advance(20 * time.Minute)
	slow := &slowStatus{scripted{delay: 150 * time.Millisecond}}
	w := New(e.ledger, quietLog(), Options{Clock: e.clock, Slow: 100 * time.Millisecond,
		Partner: byCode(slow, &busPartner{})})
	rep, err := w.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slow.count() != 1 || rep.Checked != 1 || rep.Resolved != 0 {
		t.Fatalf("asked %d times, report %+v; want one question, checked 1, resolved 0",
			slow.count(), rep)
	}
	e.wantBalance(prog, member, 2000, 3000)
}

// TestStepLeavesWhatTheReconciliationAsks: a conversion the reconciliation
// has claimed, asking the other program about it, is not claimed by a
// step meanwhile (since reconciliation runs beside the steps, the step
// delivered it too, and the reconciliation's unclear answer then ended the
// step's claim: a person could resolve it while a delivery was in flight).
// Once the reconciliation ends its claim, the next step delivers it.
func TestStepLeavesWhatTheReconciliationAsks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const member = "56912121212"
	prog := hotelAndBus(e, member, 5000)
	c := e.convert(prog, member, core.ConvertRequest{External: "hotel", Points: 1000,
		AccountID: "HT000001"})
	e.advance(20 * time.Minute) // due for delivery, and old enough to be asked about
	hotel := &askedPartner{asked: make(chan struct{}, 1), letGo: make(chan struct{}),
		answer: Answer{Detail: "later"}}
	w := New(e.ledger, quietLog(), Options{Clock: e.clock,
		Partner: byCode(hotel, &busPartner{})})
	done := make(chan error, 1)
	go func() { _, err := w.Reconcile(ctx); done <- err }()
	<-hotel.asked
	if n, err := w.Step(ctx); err != nil || n != 0 {
		t.Fatalf("step while the reconciliation asks: %d claimed, %v; want none", n, err)
	}
	close(hotel.letGo)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := e.conversion(prog, member, c.ID); got.Status != core.ConversionPending ||
		got.Attempts != 0 {
		t.Fatalf("conversion %s after %d attempts, want pending, never delivered", got.Status,
			got.Attempts)
	}
	if n, err := w.Step(ctx); err != nil || n != 1 {
		t.Fatalf("step after the reconciliation: %d claimed, %v; want it", n, err)
	}
	e.wantBalance(prog, member, 4000, 1000)
}

// hangingDeliver hangs every delivery until let go, telling when one
// starts, and counts them.
type hangingDeliver struct {
	askedPartner
	mu    sync.Mutex
	calls int
}

func (p *hangingDeliver) Deliver(context.Context, Request) Answer {
	p.mu.Lock()
	p.calls++
	p.mu.Unlock()
	p.asked <- struct{}{}
	<-p.letGo
	return Answer{Detail: "timeout"}
}

func (p *hangingDeliver) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// TestHangingDeliveryHoldsUpNoStep: while a delivery to one program hangs,
// Run goes on claiming and delivering the other programs' conversions (it
// used to wait for the step's every delivery, 41 s for a program that
// times out four times), and claims none of the hanging program's.
func TestHangingDeliveryHoldsUpNoStep(t *testing.T) {
	e := newEnv(t)
	const member = "56913131313"
	prog := hotelAndBus(e, member, 9000)
	e.convert(prog, member, core.ConvertRequest{External: "hotel", Points: 1000,
		AccountID: "HT000001"})
	hotel := &hangingDeliver{askedPartner: askedPartner{asked: make(chan struct{}, 4),
		letGo: make(chan struct{})}}
	quick := &busPartner{}
	quick.confirmDeliveries()
	ctx, cancel := context.WithCancel(context.Background())
	w := New(e.ledger, quietLog(), Options{Clock: e.clock, Interval: 10 * time.Millisecond,
		ReconcileEvery: time.Hour, Partner: byCode(hotel, quick)})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-hotel.asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the hotel conversion was never delivered")
	}
	second := e.convert(prog, member, core.ConvertRequest{External: "hotel", Points: 1000,
		AccountID: "HT000001"})
	toBus := e.convert(prog, member, core.ConvertRequest{External: "bus", Points: 500,
		AccountID: "BU000001"})
	deadline := time.Now().Add(5 * time.Second)
	for e.conversion(prog, member, toBus.ID).Status != core.ConversionConfirmed {
		if time.Now().After(deadline) {
			t.Fatal("the bus conversion waited for the hanging hotel delivery")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := hotel.count(); n != 1 {
		t.Fatalf("hotel deliveries while the first hangs: %d, want 1", n)
	}
	if got := e.conversion(prog, member, second.ID); got.Attempts != 0 {
		t.Fatalf("second hotel conversion claimed %d times while the first hangs", got.Attempts)
	}
	close(hotel.letGo)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.wantBalance(prog, member, 6500, 2000)
}
