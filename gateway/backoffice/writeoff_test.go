package backoffice

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// A call-centre agent reading a member's statement sees what a bill's
// reversal wrote off (the member had spent the points) and that the later
// reversal of the redemption settled it, instead of a reversal of 0
// points with no explanation.
func TestStatementShowsWriteOffs(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.telco()
	rg.apply(core.KindCredit, "telco", "m-1", core.Credit{Points: 1000, Reason: "bill"})
	rg.apply(core.KindRedeem, "telco", "m-1", core.Redeem{Points: 600, Reason: "phone"})
	st, err := rg.ledger().Statement(context.Background(), "telco", "m-1", "", 10)
	if err != nil || len(st.Postings) != 2 {
		t.Fatalf("statement: %+v %v", st, err)
	}
	redemption, credit := st.Postings[0].ID, st.Postings[1].ID
	rg.apply(core.KindReverse, "telco", "m-1", core.Reverse{PostingID: credit, Reason: "bill"})
	rg.apply(core.KindReverse, "telco", "m-1", core.Reverse{PostingID: redemption,
		Reason: "phone returned"})

	rg.user("olga", RoleOperator)
	op := rg.browser()
	op.mustSignIn("olga")
	code, page, _ := op.get("/admin/members?program=telco&member=m-1")
	if code != http.StatusOK {
		t.Fatalf("member page: %d", code)
	}
	for _, want := range []string{"<small>written off 600</small>",
		"<small>settled a write-off 600</small>"} {
		if strings.Count(page, want) != 1 {
			t.Errorf("the statement does not show %q once:\n%s", want, page)
		}
	}
}
