package rest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// contractPartnerKey is the one partner key contractExchange knows.
const contractPartnerKey = "pk_contract-partner-key"

// contractExchange is a contractReader that also knows one partner, its
// key and one payment of it.
type contractExchange struct{ contractReader }

func (contractExchange) Reward(context.Context, string, string) (*core.Reward, error) {
	return nil, core.Errorf(core.NotFound, "reward", "unknown")
}

func (contractExchange) Rewards(context.Context, string, string, int) ([]core.Reward, string,
	error) {
	return nil, "", core.Errorf(core.NotFound, "program", "unknown")
}

func (contractExchange) Orders(context.Context, string, string) ([]core.Order, error) {
	return nil, core.Errorf(core.NotFound, "member", "unknown")
}

func (contractExchange) Order(context.Context, string, string, string) (*core.Order, error) {
	return nil, core.Errorf(core.NotFound, "order", "unknown")
}

func (contractExchange) Partner(context.Context, string, string) (*core.Partner,
	[]core.PartnerKey, error) {
	return nil, nil, core.Errorf(core.NotFound, "partner", "unknown")
}

func (contractExchange) PartnerByKey(_ context.Context, digest []byte) (*postgres.PartnerAuth,
	error) {
	want := sha256.Sum256([]byte(contractPartnerKey))
	if string(digest) != string(want[:]) {
		return nil, core.Errorf(core.Unauthorized, "Authorization", "unknown key")
	}
	return &postgres.PartnerAuth{Partner: core.Partner{Code: "cafe", Program: "movil",
		CanBurn: true, CanEarn: true, PointValue: "1.5", Currency: "CLP"},
		Scopes: core.Scopes}, nil
}

func (contractExchange) PartnerTransaction(_ context.Context, source,
	txn string) (*postgres.PartnerTxn, error) {
	if source != "partner:cafe" || txn != "txn-1" {
		return nil, core.Errorf(core.NotFound, "txn_id", "unknown")
	}
	return &postgres.PartnerTxn{TxnID: txn, Member: "56912345678", Status: "captured"}, nil
}

func (contractExchange) Settlement(context.Context, string, string, time.Time,
	time.Time) (*postgres.Settlement, error) {
	return nil, core.Errorf(core.NotFound, "partner", "unknown")
}

// TestContractPartnerWrites sends every documented partner write's example
// with a partner key: it reaches the bus as the documented command, sent by
// the source partner:<code> in the partner's program. An operator key is
// refused there.
func TestContractPartnerWrites(t *testing.T) {
	c := loadContract(t)
	b := &contractBus{answer: true}
	router, _ := newContractServer(b, contractExchange{}, 2*time.Second)
	n := 0
	for i, op := range c.ops {
		if op.method == http.MethodGet || !strings.HasPrefix(op.path, "/v1/partner/") {
			continue
		}
		n++
		t.Run(op.key(), func(t *testing.T) {
			if !slices.Contains(c.requiredHeaders(op), "Idempotency-Key") || op.kind == "" ||
				op.example == "" {
				t.Fatalf("%s:%d: a write needs Idempotency-Key, x-command-kind and an example",
					contractFile, op.line)
			}
			txn := fmt.Sprintf("partner-contract-%d", i)
			send := func(key string) *httptest.ResponseRecorder {
				req := httptest.NewRequest(op.method, fillPath(op.path),
					strings.NewReader(op.example))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Idempotency-Key", txn)
				w := httptest.NewRecorder()
				router.ServeHTTP(w, req)
				return w
			}
			w := send(contractPartnerKey)
			if w.Code != http.StatusCreated {
				t.Fatalf("example answered %d, want 201: %s", w.Code, w.Body)
			}
			sent := b.take()
			if len(sent) != 1 || sent[0].Kind != op.kind || sent[0].Source != "partner:cafe" ||
				sent[0].Program != "movil" || sent[0].TxnID != txn {
				t.Fatalf("published %+v, want one %s from partner:cafe in movil", sent, op.kind)
			}
			w = send(contractKey)
			if p := decodeProblem(t, w); w.Code != http.StatusUnauthorized ||
				p.Kind != string(core.Unauthorized) {
				t.Fatalf("an operator key answered %d %+v, want 401", w.Code, p)
			}
			if len(b.take()) != 0 {
				t.Fatal("a refused request reached the bus")
			}
		})
	}
	if n != 6 {
		t.Fatalf("%d partner writes documented, want 6", n)
	}
}

// TestPartnerOtherTransaction: a partner asking about a transaction id it
// did not make is answered 404, and so is a capture of it.
func TestPartnerOtherTransaction(t *testing.T) {
	b := &contractBus{answer: true}
	router, _ := newContractServer(b, contractExchange{}, time.Second)
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v1/partner/transactions/someone-elses"},
		{http.MethodPost, "/v1/partner/transactions/someone-elses/capture"},
		{http.MethodPost, "/v1/partner/transactions/someone-elses/refunds"},
	} {
		req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(`{}`))
		req.Header.Set("X-Api-Key", contractPartnerKey)
		req.Header.Set("Idempotency-Key", "x-1")
		w := httptest.NewRecorder()
		router.ServeHTTP(w, req)
		if p := decodeProblem(t, w); w.Code != http.StatusNotFound || p.Field != "txn_id" {
			t.Errorf("%s %s: %d %+v, want 404 about txn_id", tc.method, tc.path, w.Code, p)
		}
	}
	if len(b.take()) != 0 {
		t.Fatal("a refused request reached the bus")
	}
}

func TestCSVCell(t *testing.T) {
	for in, want := range map[string]string{
		"=SUM(A1)": "'=SUM(A1)", "+56912345678": "'+56912345678", "-3": "'-3",
		"@cmd": "'@cmd", "\tx": "'\tx", "pay-1": "pay-1", "": "", "1500": "1500",
	} {
		if got := csvCell(in); got != want {
			t.Errorf("csvCell(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSettlementCSV(t *testing.T) {
	at := time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)
	st := &postgres.Settlement{Partner: "cafe", Currency: "CLP", PointValue: "1.5",
		Net: 1500, Value: "2250", Lines: []postgres.SettlementLine{
			{Type: "capture", TxnID: "pay-1", HoldTxnID: "pay-1", Member: "=HYPERLINK(1)",
				Points: 2500, Value: "3750", At: at},
			{Type: "refund", TxnID: "-r1", HoldTxnID: "pay-1", Member: "=HYPERLINK(1)",
				Points: -1000, Value: "-1500", At: at.Add(time.Hour)},
		}}
	got, err := SettlementCSV(st)
	if err != nil {
		t.Fatal(err)
	}
	want := "type,txn_id,hold_txn_id,member,points,value,currency,at\n" +
		"capture,pay-1,pay-1,'=HYPERLINK(1),2500,3750,CLP,2026-03-01T13:00:00Z\n" +
		"refund,'-r1,pay-1,'=HYPERLINK(1),-1000,-1500,CLP,2026-03-01T14:00:00Z\n" +
		"total,,,,1500,2250,CLP,\n"
	if string(got) != want {
		t.Fatalf("CSV:\n%s\nwant:\n%s", got, want)
	}

	// More refunded than captured: the net is negative, and still a number.
	st.Lines, st.Net, st.Value = st.Lines[1:], -1000, "-1500"
	got, err = SettlementCSV(st)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(got), "\ntotal,,,,-1000,-1500,CLP,\n") {
		t.Fatalf("CSV with a negative net:\n%s", got)
	}
}
