package backoffice

import (
	"net/http"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// A search for a reference no member has offers the members whose
// reference starts with it, as typed or in the other case: a call centre
// agent who has part of a phone number, or typed a reference in lower case.
func TestMemberSearchOffersSimilarReferences(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.telco()
	for _, ref := range []string{"56911110004", "56911110005", "56922220000", "ABC-77"} {
		rg.apply(core.KindEnroll, "telco", ref, core.Enroll{Channel: "test"})
	}
	rg.user("olga", RoleOperator)
	op := rg.browser()
	op.mustSignIn("olga")
	for q, want := range map[string][]string{
		"5691111": {"56911110004", "56911110005"},
		"abc":     {"ABC-77"},
		"zzz":     nil,
	} {
		code, page, _ := op.get("/admin/members?program=telco&member=" + q)
		if code != http.StatusNotFound {
			t.Fatalf("search %q: %d, want 404 (no member has it)", q, code)
		}
		got := strings.Count(page, `<li><a href="/admin/members?program=telco&amp;member=`)
		if got != len(want) {
			t.Errorf("search %q offers %d members, want %v:\n%s", q, got, want, page)
		}
		for _, ref := range want {
			if !strings.Contains(page, "member="+ref+`">`+ref+"</a>") {
				t.Errorf("search %q does not offer %s", q, ref)
			}
		}
	}
}
