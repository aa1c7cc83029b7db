package files

import (
	"strings"
	"testing"
)

// A debit the ledger refused (insufficient) in a first file, loaded again
// inside a second one: its row says rejected and replayed; as the contract
// says, the batch's replayed_lines counts only the replays first posted,
// and the replayed refusal counts among rejected_lines.
func TestLate6ReplayedRefusalRowAndReplayedLines(t *testing.T) {
	f := newFixture(t, Options{}, "a", "b")
	first := "member,points,reason,txn_id\na,-500,oops,t-x\n=cmd,5,bonus,t-bad\nb,7,bonus,t-1\n"
	v1 := f.postFile(first)
	if v1.Rejected != 1 || v1.Posted != 1 || v1.Invalid != 1 {
		t.Fatalf("first file: posted %d rejected %d invalid %d", v1.Posted, v1.Rejected, v1.Invalid)
	}
	v2 := f.postFile(first + "b,5,more,t-2\n")
	res := f.result(v2.ID)
	var rowX string
	for _, l := range strings.Split(res, "\n") {
		if strings.HasPrefix(l, "2,t-x,") {
			rowX = l
		}
	}
	if !strings.HasSuffix(rowX, ",true") || !strings.Contains(rowX, ",rejected,") {
		t.Fatalf("row of the replayed refusal: %q", rowX)
	}
	if !strings.Contains(res, "\n3,t-bad,'=cmd,5,invalid,") || !strings.HasSuffix(
		strings.Split(res, "\n")[2], ",") {
		t.Errorf("invalid line of the second load: %q", strings.Split(res, "\n")[2])
	}
	trues := strings.Count(res, ",true\n")
	if trues != 2 || v2.Replayed != 1 || v2.Rejected != 1 || v2.Posted != 2 {
		t.Errorf("result file has %d rows replayed=true, want 2; batch: replayed_lines %d "+
			"(want 1: the posted replay), rejected_lines %d (want 1), posted_lines %d (want 2)",
			trues, v2.Replayed, v2.Rejected, v2.Posted)
	}
}
