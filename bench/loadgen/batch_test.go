package main

import (
	"encoding/json"
	"testing"
)

// A batch sent again after some events failed carries only those events,
// under their first txn ids and members, so that nothing is credited twice.
func TestBatchBodyKeepsTxnIDsAndMembers(t *testing.T) {
	members := []int{7, 3, 9, 1}
	var got struct {
		Events []struct {
			Member string `json:"member"`
			TxnID  string `json:"txn_id"`
			Amount string `json:"amount"`
		} `json:"events"`
	}
	if err := json.Unmarshal(batchBody("c-1-2-", []int{1, 3}, members), &got); err != nil {
		t.Fatalf("batch body is not JSON: %v", err)
	}
	want := [][2]string{{"m0000003", "c-1-2-1"}, {"m0000001", "c-1-2-3"}}
	if len(got.Events) != len(want) {
		t.Fatalf("%d events, want %d", len(got.Events), len(want))
	}
	for i, ev := range got.Events {
		if ev.Member != want[i][0] || ev.TxnID != want[i][1] || ev.Amount != "10" {
			t.Errorf("event %d: %+v, want member %s txn %s amount 10", i, ev, want[i][0],
				want[i][1])
		}
	}
}
