package postgres

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/plainjson"
)

// The bulk path's JSON appenders write exactly what encoding/json writes.
func TestBulkJSON(t *testing.T) {
	// A field added to one of these types must be added to its appender
	// (and to the cases below) too.
	for typ, n := range map[reflect.Type]int{reflect.TypeOf(bus.Result{}): 8,
		reflect.TypeOf(bus.Error{}): 3, reflect.TypeOf(core.Outcome{}): 9,
		reflect.TypeOf(core.Balance{}): 3, reflect.TypeOf(core.LotMove{}): 3,
		reflect.TypeOf(bus.Event{}): 16} {
		if typ.NumField() != n {
			t.Errorf("%s has %d fields, its appender knows %d", typ, typ.NumField(), n)
		}
	}

	strs := []string{"", "plain-ref_01", "Señora Ñandú", "quote \" and \\ back", "<b>&</b>",
		"tab\there\nnew line", "bad \xff utf-8", "line\u2028sep", "nul \x00"}
	santiago, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	times := []time.Time{time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC),
		time.Date(2026, 6, 15, 16, 0, 0, 123456789, time.UTC),
		time.Date(2026, 4, 5, 23, 59, 59, 100, santiago), {}}

	for _, s := range strs {
		want, _ := json.Marshal(s)
		if got := plainjson.AppendString(nil, s); string(got) != string(want) {
			t.Errorf("string %q: got %s, want %s", s, got, want)
		}
	}

	outcomes := []core.Outcome{{Member: "m1", Points: 150,
		Balance: core.Balance{Available: 1500, Pending: 20, Held: 3}},
		{Member: strs[2], PostingIDs: []int64{7, 9}, Points: -10,
			Balance: core.Balance{Available: -4}, HoldID: "h-1", Written: 5, Recovered: 2,
			Status: "closed",
			Lots:   []core.LotMove{{LotID: 3, Points: -4}, {LotID: 4, Points: -6, Held: 2}}}}
	for _, o := range outcomes {
		want, _ := json.Marshal(o)
		if got := appendOutcome(nil, &o); string(got) != string(want) {
			t.Errorf("outcome:\n got %s\nwant %s", got, want)
		}
	}

	data := appendOutcome(nil, &outcomes[1])
	results := []bus.Result{{CommandID: "c1", Source: "file:p", TxnID: "t1", Kind: "points.credit",
		Status: bus.StatusOK, Data: data},
		{CommandID: "c2", Source: strs[3], TxnID: strs[4], Kind: "points.adjust",
			Status: bus.StatusRejected, Replayed: true, Error: &bus.Error{Kind: "insufficient",
				Field: "points", Message: "10 points asked, 4 available"}},
		{Status: bus.StatusRejected, Error: &bus.Error{Kind: "invalid", Message: strs[5]}}}
	for _, r := range results {
		want, _ := json.Marshal(r)
		if got := appendResult(nil, &r); string(got) != string(want) {
			t.Errorf("result:\n got %s\nwant %s", got, want)
		}
	}

	for _, s := range strs {
		for _, at := range times {
			e := bus.Event{ID: uuid.NewString(), Kind: "credit", Program: "bench", Member: s,
				MemberRef: s, Points: 150, OccurredAt: at, RecordedAt: times[1], Source: s,
				TxnID: "t9", RuleVersion: s, Partner: s, Channel: s, PostingID: 42, Tier: s}
			want, _ := json.Marshal(e)
			got, err := appendEvent(nil, &e)
			if err != nil || string(got) != string(want) {
				t.Errorf("event:\n got %s (%v)\nwant %s", got, err, want)
			}
		}
	}
	e := bus.Event{ID: "e1", Kind: "expiry_notice", Program: "p", Member: "m",
		Detail: json.RawMessage(`{ "points" : 5 }`)}
	want, _ := json.Marshal(e)
	if got, err := appendEvent(nil, &e); err != nil || string(got) != string(want) {
		t.Errorf("event with detail:\n got %s (%v)\nwant %s", got, err, want)
	}
	if _, err := appendEvent(nil, &bus.Event{OccurredAt: time.Date(10000, 1, 1, 0, 0, 0, 0,
		time.UTC)}); err == nil {
		t.Error("an event in the year 10000 was written")
	}
}

// The hand reading of a bulk line's payload gives what decode gives, and
// leaves every other shape to decode.
func TestReadPlainPayload(t *testing.T) {
	exp := time.Date(2027, 3, 1, 3, 0, 0, 0, time.UTC)
	var payloads [][]byte
	for _, c := range []core.Credit{{Points: 150, Reason: "bench load"},
		{Points: 1, Reason: "x", ExpiresAt: &exp},
		{Points: core.MaxPoints, Reason: "Señora Ñandú"},
		{Points: 5, Reason: `say "hi" <b>`},
		{Points: 5, Reason: "tab\there"},
		{Points: 0, Reason: "zero"},
		{Points: 7, Reason: "on a day", ExpiresOn: "2027-01-01"}} {
		payloads = append(payloads, mustJSON(t, c))
	}
	for _, a := range []core.Adjust{{Points: -10, Reason: "debit"},
		{Points: -core.MaxPoints - 1, Reason: "too much"}} {
		payloads = append(payloads, mustJSON(t, a))
	}
	payloads = append(payloads, [][]byte{
		[]byte(`{"points":010,"reason":"lead"}`),
		[]byte(`{"points":-0,"reason":"minus zero"}`),
		[]byte(`{"points":1e2,"reason":"exp"}`),
		[]byte(`{"points":99999999999999999999,"reason":"big"}`),
		[]byte(`{"points":5,"reason":"r","extra":1}`),
		[]byte(`{"points":5,"reason":"r"} `),
		[]byte(`{"points":5,"reason":"r"}{}`),
		[]byte(`{"points":5, "reason":"r"}`),
		[]byte(`{"reason":"r","points":5}`),
		[]byte(`{"points":5,"reason":"r","expires_at":null}`),
		[]byte(`{"points":5,"reason":"r","expires_at":"2027-02-30T00:00:00Z"}`),
		[]byte(`{"points":5,"reason":"r","expires_at":"2027-01-01T00:00:00+25:00"}`),
		[]byte(`{"points":5,"reason":"r","expires_at":"2027-01-01T00:00:00\u002B03:00"}`),
		[]byte(`{"points":5,"reason":"r","expires_at":"2027-01-01T00:00:00-03:00"}`),
		[]byte(`{"points":5,"reason":"r","expires_at":"`),
		[]byte(`{"points":5,"reason":"r`),
		[]byte(`{"points":`),
	}...)

	fast := 0
	for _, raw := range payloads {
		var want core.Credit
		wantErr := decode(raw, &want)
		var got core.Credit
		gotErr := decodeCredit(raw, &got)
		if (gotErr == nil) != (wantErr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("credit %s: got %+v (%v), decode gives %+v (%v)", raw, got, gotErr,
				want, wantErr)
		}
		var wantA, gotA core.Adjust
		wantErr, gotErr = decode(raw, &wantA), decodeAdjust(raw, &gotA)
		if (gotErr == nil) != (wantErr == nil) || gotA != wantA {
			t.Errorf("adjust %s: got %+v (%v), decode gives %+v (%v)", raw, gotA, gotErr,
				wantA, wantErr)
		}
		if _, _, _, ok := readPlainPayload(raw, true); ok {
			fast++
		}
	}
	// The shapes a file line makes are read by hand.
	if fast != 5 {
		t.Errorf("%d payloads read by hand, want 5 (the plain credits, the debits and the "+
			"offset expiry)", fast)
	}
}
