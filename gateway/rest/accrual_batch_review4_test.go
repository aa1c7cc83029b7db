package rest_test

import (
	"encoding/json"
	"testing"
)

// A batch body naming "events" twice, the second array's event without a
// txn_id, type or amount: the batch route refused it before the one-pass
// reading (400, events[0].txn_id is required: JSON's last "events" stood),
// and must still; it now names the repeated key, events. The one-pass reading's first form reused the first
// array's event for the second and posted member B an accrual of 100 under
// txn_id d-1, which B's event never asked for.
func TestReview4BatchWithEventsTwiceIsRefused(t *testing.T) {
	p := startBatchPlatform(t)
	body := `{"events":[{"member":"A","txn_id":"d-1","type":"top_up","amount":"100"}],` +
		`"events":[{"member":"B"}]}`
	st, raw := p.send("POST", "/v1/programs/telco/events/batches", "", body)
	var prob struct {
		Kind  string `json:"kind"`
		Field string `json:"field"`
	}
	_ = json.Unmarshal(raw, &prob)
	if st != 400 || prob.Field != "events" {
		t.Errorf("batch with \"events\" twice answered %d %s; want 400 naming "+
			"events, given twice", st, raw)
	}
	if got := p.balances(); got != [3]int64{0, 0, 0} {
		t.Errorf("balances of A, B, C are %v after that batch, want [0 0 0]: nothing "+
			"posted", got)
	}
}
