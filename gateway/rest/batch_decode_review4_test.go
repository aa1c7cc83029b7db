package rest

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// A body that names "events" twice was read by the event-by-event reading
// as JSON reads it (the last array stood), and the one-pass reading's first
// form merged the two arrays' events. Both readings now refuse it naming
// events: a proxy reading the first array would see another batch than the
// ledger.
func TestReview4DuplicateEventsKeyMergesEvents(t *testing.T) {
	body := `{"events":[{"member":"m-1","txn_id":"t-1","type":"bill_paid","amount":"10",` +
		`"occurred_at":"2026-03-01T10:00:00Z"}],` +
		`"events":[{"member":"m-2"}]}`
	got, want, gotErr, wantErr := decodeBothWays(t, body)
	for _, err := range []error{gotErr, wantErr} {
		if ce, ok := core.AsError(err); !ok || ce.Field != "events" {
			t.Fatalf("one pass %v, each %v: want both refused naming events", gotErr, wantErr)
		}
	}
	if len(got) != 0 || len(want) != 0 {
		t.Fatalf("events read from a refused body: %+v, %+v", got, want)
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
