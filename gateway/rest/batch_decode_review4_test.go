package rest

import (
	"fmt"
	"reflect"
	"testing"
)

// A body that names "events" twice is read by the event-by-event reading as
// JSON reads it: the last array stands, and its events alone are the batch.
// The one-pass reading's first form decoded into []*batchEvent, and
// encoding/json reused the events the first array allocated: fields the
// second array's event left out kept the first array's values, so an event
// with no txn_id, type or amount of its own was taken with those of the
// first array and the batch accepted where it was refused ("events[0].txn_id
// is required"). It now gives up on a second key and leaves the body to the
// event-by-event reading.
func TestReview4DuplicateEventsKeyMergesEvents(t *testing.T) {
	body := `{"events":[{"member":"m-1","txn_id":"t-1","type":"bill_paid","amount":"10",` +
		`"occurred_at":"2026-03-01T10:00:00Z"}],` +
		`"events":[{"member":"m-2"}]}`
	got, want, gotErr, wantErr := decodeBothWays(t, body)
	if gotErr != nil || wantErr != nil {
		t.Fatalf("both readings should decode the body: one pass %v, each %v", gotErr, wantErr)
	}
	if len(want) != 1 || want[0].Member != "m-2" || want[0].TxnID != "" ||
		want[0].Amount != nil {
		t.Fatalf("event-by-event reading gave %+v, want the last array's event alone", want)
	}
	if !reflect.DeepEqual(got, want) {
		amount := "<nil>"
		if len(got) == 1 && got[0].Amount != nil {
			amount = *got[0].Amount
		}
		t.Errorf("one pass gave %+v (amount %s), want %+v: the event of the last "+
			"\"events\" array only (member m-2, no txn_id, no amount)", got, amount, want)
	}
}

// Bodies that both readings must keep reading the same way (pinned, all
// pass): duplicate keys inside one event, a shorter second array, the
// second "events" null, and nested depth.
func TestReview4OnePassAgreesOnEdgeBodies(t *testing.T) {
	for _, body := range []string{
		`{"events":[{"member":"m-1","amount":"1","amount":null,"txn_id":"t"}]}`,
		`{"events":[{"member":"m-1","txn_id":"t-1"}],"events":null}`,
		`{"events":[{"member":"m-1","txn_id":"t-1"}],"events":[]}`,
		`{"events":[{"member":"m-1","occurred_at":"2026-03-01T10:00:00Z",` +
			`"occurred_at":null}]}`,
		`{"events":[{"member":"m-1","txn_id":"t-1"},{"member":"m-2","txn_id":"t-2"}],` +
			`"events":[{"member":"m-3","txn_id":"t-3"},{"member":"m-4","txn_id":"t-4"}]}`,
		`{"events":[{"Member":"m-1","MEMBER":"m-2"}]}`,
		`{"events":[{"member":"m\\u0000"}]}`,
		`{"events":[{"member":"\\\\u0000"}]}`,
	} {
		got, want, gotErr, wantErr := decodeBothWays(t, body)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Errorf("body %s:\n one pass %+v, %v\n each     %+v, %v", body, got, gotErr,
				want, wantErr)
		}
	}
}
