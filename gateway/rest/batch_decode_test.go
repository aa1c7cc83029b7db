package rest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// batchBodies are bodies of the batch route, well-formed and not: the
// one-pass reading must give what the event-by-event reading gives.
var batchBodies = []string{
	`{"events":[{"member":"m-1","txn_id":"t-1","type":"bill_paid","amount":"10.50"}]}`,
	`{"events":[{"txn_id":"t-1","member":"m-1","amount":"1","type":"top_up",` +
		`"occurred_at":"2026-03-01T10:00:00-03:00","currency":"CLP","partner":"store-12"},` +
		`{"member":"m-2","txn_id":"t-2","type":"top_up","amount":"2"}]}`,
	`  {"EVENTS": [ {"Member":"m-1","TXN_ID":"t-1"} ] }  `,
	`{"events":[{"member":"m-1","member":"m-2","txn_id":"t-1"}]}`,
	`{"events":[{}]}`,
	`{"events":[null]}`,
	`{"events":[{"member":"m-1"},null]}`,
	`{"events":[1]}`,
	`{"events":["x"]}`,
	`{"events":[[]]}`,
	`{"events":[]}`,
	`{"events":null}`,
	`{"events":{}}`,
	`{}`,
	`[]`,
	``,
	`{"events":[{"member":"m-1"}]} {}`,
	`{"events":[{"member":"m-1"}],"more":1}`,
	`{"events":[{"member":"m-1","colour":"red"}]}`,
	`{"events":[{"member":"m-1","amount":10}]}`,
	`{"events":[{"member":"m-1","occurred_at":"yesterday"}]}`,
	`{"events":[{"member":"m-1","occurred_at":null,"amount":null}]}`,
	`{"events":[{"member":"m\u0000"}]}`,
	`{"events":[{"member":"m-1"}],"x\u0000":1}`,
	`{"events":[{"member":"m-1"}`,
	`{"events":[{"member":"m-1",}]}`,
	`{"events":[{"member":"m-1","txn_id":"t-1","type":"top_up","amount":"100"}],` +
		`"events":[{"member":"m-2"}]}`,
	`{"events":[{"member":"m-1","txn_id":"t-1"}],"events":null}`,
	`{"events":[{"member":"m-1"}],"Events":[{"member":"m-2","txn_id":"t-2"}]}`,
	`{"\u0065vents":[{"member":"m-1","txn_id":"t-1"}]}`,
}

// decodeBothWays reads body with decodeBatch and with decodeBatchEach alone
// (after the checks of the whole body that both share: invalid UTF-8 is
// refused before either reads it).
func decodeBothWays(t *testing.T, body string) (got, want []batchEvent, gotErr,
	wantErr error) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	got, gotErr = decodeBatch(r)
	if !utf8.ValidString(body) {
		return got, got, gotErr, gotErr
	}
	want, wantErr = decodeBatchEach([]byte(body))
	return got, want, gotErr, wantErr
}

// The one-pass reading of a batch gives the same events, and a faulty batch
// the same refusal, as reading it event by event with the single route's
// decoder did before it.
func TestDecodeBatchOnePassMatchesEventByEvent(t *testing.T) {
	onePass := 0
	for _, body := range batchBodies {
		got, want, gotErr, wantErr := decodeBothWays(t, body)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Errorf("body %s:\n one pass %+v, %v\n each     %+v, %v", body, got, gotErr,
				want, wantErr)
		}
		if _, ok := decodeBatchOnce([]byte(body)); ok {
			onePass++
			if wantErr != nil {
				t.Errorf("body %s: read in one pass, but refused event by event: %v", body,
					wantErr)
			}
		}
	}
	// The well-formed ones above are read in one pass, not by the fallback,
	// except the one whose key is spelled "EVENTS" (a key written with an
	// escape is the same key) and the one that gives an event's member
	// twice, which is refused.
	if onePass != 5 {
		t.Errorf("%d bodies read in one pass, want 5 of the 7 well-formed ones", onePass)
	}
	// 500 events, the most a batch takes, in one pass; 501 refused by count.
	var evs []string
	for i := range 501 {
		evs = append(evs, fmt.Sprintf(`{"member":"m-%d","txn_id":"t-%d","type":"top_up",`+
			`"amount":"%d"}`, i, i, i+1))
	}
	for _, n := range []int{500, 501} {
		body := `{"events":[` + strings.Join(evs[:n], ",") + `]}`
		got, want, gotErr, wantErr := decodeBothWays(t, body)
		_, ok := decodeBatchOnce([]byte(body))
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) ||
			ok != (n == 500) || (n == 500) != (gotErr == nil) {
			t.Errorf("%d events: one pass %v (%v), each %v; events equal %v", n, ok, gotErr,
				wantErr, reflect.DeepEqual(got, want))
		}
		if n == 500 && (len(got) != 500 || got[499].Member != "m-499" ||
			*got[499].Amount != "500") {
			t.Errorf("500 events read as %d, the last %+v", len(got), got[len(got)-1])
		}
	}
}

// FuzzDecodeBatch: whatever the body, the one-pass reading agrees with the
// event-by-event one, except that it may take an event over the single
// route's 64 KiB, which the batch's own limit (1 MiB) bounds.
func FuzzDecodeBatch(f *testing.F) {
	for _, b := range batchBodies {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body string) {
		got, want, gotErr, wantErr := decodeBothWays(t, body)
		if gotErr == nil && wantErr != nil && strings.Contains(wantErr.Error(),
			fmt.Sprintf("is larger than %d bytes", maxBody)) {
			return
		}
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Fatalf("body %q:\n one pass %+v, %v\n each     %+v, %v", body, got, gotErr,
				want, wantErr)
		}
	})
}

// BenchmarkDecodeBatch reads a batch of 500 accrual events, as the load
// generator sends them.
func BenchmarkDecodeBatch(b *testing.B) {
	var evs []string
	for i := range 500 {
		evs = append(evs, fmt.Sprintf(`{"member":"M-%06d","txn_id":"c-3-117-%d",`+
			`"type":"purchase","amount":"10","occurred_at":"2026-12-05T12:00:00Z"}`, i, i))
	}
	body := `{"events":[` + strings.Join(evs, ",") + `]}`
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		if out, err := decodeBatch(r); err != nil || len(out) != 500 {
			b.Fatal(len(out), err)
		}
	}
}
