package postgres

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// invoice is one retail invoice: its customer, when, and the money of its
// lines (negative for a cancellation).
type invoice struct {
	no       string
	customer string
	at       time.Time
	amount   *big.Rat
}

// readInvoices reads retail invoice files in order, grouping lines by
// invoice number and skipping lines without a customer.
func readInvoices(t *testing.T, files ...string) (invs []*invoice, lines, skipped int) {
	t.Helper()
	byNo := map[string]*invoice{}
	for _, name := range files {
		fh, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		r := csv.NewReader(fh)
		head, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		col := map[string]int{}
		for i, h := range head {
			col[h] = i
		}
		for {
			rec, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			lines++
			cust, _, _ := strings.Cut(strings.TrimSpace(rec[col["CustomerID"]]), ".")
			if cust == "" {
				skipped++
				continue
			}
			qty, ok1 := new(big.Rat).SetString(rec[col["Quantity"]])
			price, ok2 := new(big.Rat).SetString(rec[col["UnitPrice"]])
			if !ok1 || !ok2 {
				t.Fatalf("%s: bad line %v", name, rec)
			}
			no := rec[col["InvoiceNo"]]
			inv := byNo[no]
			if inv == nil {
				at, err := time.Parse("2006-01-02 15:04:05", rec[col["InvoiceDate"]])
				if err != nil {
					t.Fatal(err)
				}
				inv = &invoice{no: no, customer: cust, at: at, amount: new(big.Rat)}
				byNo[no] = inv
				invs = append(invs, inv)
			}
			inv.amount.Add(inv.amount, new(big.Rat).Mul(qty, price))
		}
		fh.Close()
	}
	return invs, lines, skipped
}

// Two days of a retail shop's invoices, replayed as a partner's purchases:
// sales earn a point per currency unit paid (rounded down per invoice);
// cancellation invoices claw back the points of the money refunded, taking
// what the customer still has, but never more than the partner's purchases
// gave the customer: the cancellations that find nothing to take cancel
// purchases made before these two days, which earned nothing here (they
// wrote off 1,035 points before clawbacks were bounded so).
func TestRetailInvoicesReplayed(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown})
	source := "partner:retail-" + f.prog
	invs, lines, skipped := readInvoices(t, "testdata/retail/2010-12-06.csv",
		"testdata/retail/2010-12-07.csv")
	if lines != 6841 || skipped != 3734 || len(invs) != 190 {
		t.Fatalf("read %d lines, skipped %d, %d invoices; want 6841, 3734, 190", lines,
			skipped, len(invs))
	}

	// Enroll every customer, then replay the invoices in order, in batches.
	var cmds []bus.Command
	seen := map[string]bool{}
	for _, inv := range invs {
		if !seen[inv.customer] {
			seen[inv.customer] = true
			cmds = append(cmds, f.command(core.KindEnroll, inv.customer, f.txn(),
				core.Enroll{Channel: "retail"}))
		}
	}
	paid, refunded := new(big.Rat), new(big.Rat)
	for _, inv := range invs {
		var c bus.Command
		if strings.HasPrefix(inv.no, "C") {
			money := new(big.Rat).Neg(inv.amount)
			refunded.Add(refunded, money)
			c = f.as(source, core.KindPartnerClawback, inv.customer, inv.no,
				core.PartnerClawback{Amount: money.FloatString(2), Reason: "invoice " + inv.no})
		} else {
			paid.Add(paid, inv.amount)
			c = f.as(source, core.KindAccrue, inv.customer, inv.no, core.Accrue{
				EventType: "partner_purchase", Amount: inv.amount.FloatString(2),
				Partner: partnerOf(source)})
		}
		c.OccurredAt = inv.at
		c.Seal()
		cmds = append(cmds, c)
	}
	var earned, clawed, written int64
	for start := 0; start < len(cmds); start += 64 {
		out, err := f.l.ApplyBatch(context.Background(), cmds[start:min(start+64, len(cmds))])
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range out {
			if a.Result.Status != bus.StatusOK {
				t.Fatalf("%s %s: %+v", a.Result.Kind, a.Result.TxnID, a.Result.Error)
			}
			var o core.Outcome
			_ = json.Unmarshal(a.Result.Data, &o)
			switch a.Result.Kind {
			case core.KindAccrue:
				earned += int64(o.Points)
			case core.KindPartnerClawback:
				clawed -= int64(o.Points)
				written += int64(o.Written)
			}
		}
	}

	if paid.FloatString(2) != "85010.95" || refunded.FloatString(2) != "1419.88" {
		t.Fatalf("money paid %s refunded %s, want 85010.95 and 1419.88",
			paid.FloatString(2), refunded.FloatString(2))
	}
	if earned != 84933 || clawed != 375 || written != 0 {
		t.Fatalf("earned %d, clawed back %d, written off %d; want 84933, 375, 0", earned,
			clawed, written)
	}
	var members, balance int64
	err := f.l.Pool().QueryRow(context.Background(), `SELECT count(*), sum(available)
		FROM members WHERE program_id = (SELECT id FROM programs WHERE code = $1)`,
		f.prog).Scan(&members, &balance)
	if err != nil {
		t.Fatal(err)
	}
	if members != 157 || balance != 84558 {
		t.Fatalf("%d members holding %d points, want 157 and 84558", members, balance)
	}
	f.wantBalance("18102", 25919, 0, 0)
	// Every posting names the partner: 165 sales that earned and 6 cancellations
	// that found points to take. A replay of the last invoices changes nothing.
	var partnerPostings int64
	err = f.l.Pool().QueryRow(context.Background(), `SELECT count(*) FROM postings
		WHERE source = $1 AND partner = $2`, source, partnerOf(source)).Scan(&partnerPostings)
	if err != nil || partnerPostings != 171 {
		t.Fatalf("%d partner postings (%v), want 171", partnerPostings, err)
	}
	out, err := f.l.ApplyBatch(context.Background(), cmds[len(cmds)-25:])
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range out {
		if !a.Result.Replayed {
			t.Fatalf("%s replayed as new", a.Result.TxnID)
		}
	}
	f.wantBalance("18102", 25919, 0, 0)
	f.check()
}
