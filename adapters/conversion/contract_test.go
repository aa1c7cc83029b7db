package conversion

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// flavour is one way of reaching a partner, as the contract suite needs it:
// the external program's configuration for a fake partner, the worker's
// options, and the fake's driver for a program.
type flavour struct {
	name  string
	start func(t *testing.T, f *fake) (core.ExternalProgram, Options, func(program string) front)
}

func httpFlavour() flavour {
	return flavour{name: "http", start: func(t *testing.T, f *fake) (core.ExternalProgram,
		Options, func(string) front) {
		fr := newHTTPFront(t, f, 2*time.Second)
		ext := skyMiles(core.FlavourHTTP)
		ext.Endpoint, ext.Credentials = fr.srv.URL, fakeSecret
		return ext, Options{HTTP: testHTTP}, func(string) front { return fr }
	}}
}

func fileFlavour() flavour {
	return flavour{name: "file", start: func(t *testing.T, f *fake) (core.ExternalProgram,
		Options, func(string) front) {
		dir := t.TempDir()
		ext := skyMiles(core.FlavourFile)
		return ext, Options{FileDir: dir}, func(program string) front {
			return newFileFront(f, filepath.Join(dir, program, ext.Code))
		}
	}}
}

// skyMiles is the external program of the tests: half a mile per point,
// members known by an account number.
func skyMiles(fl string) core.ExternalProgram {
	return core.ExternalProgram{Code: "skymiles", Name: "SkyMiles", Ratio: "0.5",
		Rounding: core.RoundDown, MinPoints: 100, MaxPoints: 50000,
		Identify: core.IdentifyAccountID, AccountPattern: "[A-Z]{2}[0-9]{6}", Flavour: fl}
}

func TestContractHTTP(t *testing.T) { runContract(t, httpFlavour()) }

func TestContractFile(t *testing.T) { runContract(t, fileFlavour()) }

// runContract is the suite every flavour passes: whatever the partner does
// (answer at once, refuse, fail with 5xx, answer late, drop the line,
// answer twice, answer only when asked), the conversion ends confirmed or
// refused as the partner decided, with the points captured or given back,
// and the partner credited exactly once or not at all.
func runContract(t *testing.T, fl flavour) {
	e := newEnv(t)
	f := newFake()
	ext, opt, frontFor := fl.start(t, f)
	opt.Clock = e.clock
	ctx := context.Background()

	cases := []struct {
		name      string
		steps     []step
		want      string
		reconcile bool // settled by the reconciliation, not by a delivery
	}{
		{name: "confirms", steps: []step{confirm}, want: core.ConversionConfirmed},
		{name: "refuses", steps: []step{refuse}, want: core.ConversionRefused},
		{name: "fails with 5xx, then confirms", steps: []step{fail, fail, fail, confirm},
			want: core.ConversionConfirmed},
		{name: "fails with 5xx, then refuses", steps: []step{fail, fail, refuse},
			want: core.ConversionRefused},
		{name: "answers too late", steps: []step{slow, slow, confirm},
			want: core.ConversionConfirmed},
		{name: "drops the connection after crediting", steps: []step{reset, fail, fail, confirm},
			want: core.ConversionConfirmed},
		{name: "answers twice", steps: []step{twice}, want: core.ConversionConfirmed},
		{name: "answers only the status query", steps: []step{slow, fail},
			want: core.ConversionConfirmed, reconcile: true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			const member = "56911111111"
			account := "LA" + string(rune('0'+i)) + "00000"
			f.setScript(account, tc.steps...)
			prog := e.program(ext, member, 10000)
			fr := frontFor(prog)
			w := New(e.ledger, quietLog(), opt)

			c := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 1000,
				AccountID: account})
			if c.Amount != 500 || c.TxnID != c.ID || c.AccountID != account {
				t.Fatalf("conversion %+v: want 500 miles for 1000 points", c)
			}
			e.wantBalance(prog, member, 9000, 1000)

			unclearFirst := tc.steps[0] != confirm && tc.steps[0] != refuse &&
				tc.steps[0] != twice
			if tc.reconcile {
				if _, err := w.Step(ctx); err != nil {
					t.Fatal(err)
				}
				fr.round(t)
				fr.round(t)
				if got := e.conversion(prog, member, c.ID); got.Status != core.ConversionPending {
					t.Fatalf("before reconciling: %s, want pending", got.Status)
				}
				e.wantBalance(prog, member, 9000, 1000)
				e.advance(time.Hour)
				rep, err := w.Reconcile(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if rep.Resolved != 1 || len(rep.Mismatches) != 0 {
					t.Fatalf("reconciliation %+v, want one resolved and no mismatch", rep)
				}
			} else {
				for round := 0; round < 8; round++ {
					if _, err := w.Step(ctx); err != nil {
						t.Fatal(err)
					}
					fr.round(t)
					got := e.conversion(prog, member, c.ID)
					if round == 0 && unclearFirst {
						if got.Status != core.ConversionPending || got.LastError == "" {
							t.Fatalf("after an unclear answer: %s (%q), want pending with "+
								"the reason", got.Status, got.LastError)
						}
						e.wantBalance(prog, member, 9000, 1000)
					}
					if got.Status != core.ConversionPending {
						break
					}
					e.advance(2 * time.Hour)
				}
			}

			got := e.conversion(prog, member, c.ID)
			if got.Status != tc.want || got.ResolvedAt == nil {
				t.Fatalf("conversion ended %s (%q), want %s", got.Status, got.LastError, tc.want)
			}
			theirs, _ := f.status(c.ID)
			switch tc.want {
			case core.ConversionConfirmed:
				if got.Reference == "" || got.Reference != theirs.reference {
					t.Fatalf("reference %q, the partner's is %q", got.Reference, theirs.reference)
				}
				e.wantBalance(prog, member, 9000, 0)
				if n := f.creditedTo(account); n != 500 {
					t.Fatalf("partner credited %d, want 500 once", n)
				}
			case core.ConversionRefused:
				if got.RefusalCode != "account_closed" {
					t.Fatalf("refusal code %q, want account_closed", got.RefusalCode)
				}
				e.wantBalance(prog, member, 10000, 0)
				if n := f.creditedTo(account); n != 0 {
					t.Fatalf("partner credited %d after refusing", n)
				}
			}

			// The same answer again (a second delivery, a stale copy in
			// another worker, a reconciliation) changes nothing.
			if tc.name == "answers twice" {
				p, err := w.partnerOf(prog, &ext)
				if err != nil {
					t.Fatal(err)
				}
				a := p.Deliver(ctx, request(c))
				if a.Outcome != Confirmed {
					t.Fatalf("second answer %v (%s), want confirmed", a.Outcome, a.Detail)
				}
				if err := w.settle(ctx, c, a); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := w.Reconcile(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Mismatches) != 0 {
				t.Fatalf("reconciliation found %+v", rep.Mismatches)
			}
			if n, err := w.Step(ctx); err != nil || n != 0 {
				t.Fatalf("a settled conversion was taken again (%d, %v)", n, err)
			}
			again := e.conversion(prog, member, c.ID)
			if again.Status != tc.want || again.Reference != got.Reference {
				t.Fatalf("conversion changed to %+v", again)
			}
			switch tc.want {
			case core.ConversionConfirmed:
				e.wantBalance(prog, member, 9000, 0)
				if n := f.creditedTo(account); n != 500 {
					t.Fatalf("partner credited %d, want 500 once", n)
				}
			default:
				e.wantBalance(prog, member, 10000, 0)
			}
			e.check()
		})
	}
}
