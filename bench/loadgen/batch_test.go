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

// The counts of a batch answer are read without its items; an answer that
// does not give all four before them is left to the full reading.
func TestAnswerCounts(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want batchCounts
		ok   bool
	}{
		{`{"committed":498,"pending":1,"refused":1,"failed":0,"items":[{"index":0,` +
			`"status":201,"result":{"status":"ok","data":{"points":10}}}]}`,
			batchCounts{498, 1, 1, 0}, true},
		{`{"failed":2,"refused":0,"pending":0,"committed":3}`, batchCounts{3, 0, 0, 2}, true},
		{`{"committed":3,"extra":{"a":[1,2]},"pending":0,"refused":0,"failed":0,"items":[]}`,
			batchCounts{3, 0, 0, 0}, true},
		{`{"items":[],"committed":3,"pending":0,"refused":0,"failed":0}`, batchCounts{}, false},
		{`{"committed":3,"pending":0,"items":[]}`, batchCounts{3, 0, 0, 0}, false},
		{`{"committed":"3","pending":0,"refused":0,"failed":0}`, batchCounts{}, false},
		{`[1,2]`, batchCounts{}, false},
		{``, batchCounts{}, false},
	} {
		got, ok := answerCounts([]byte(c.raw))
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("answerCounts(%s) = %+v, %v; want %+v, %v", c.raw, got, ok, c.want, c.ok)
		}
	}
}
