package backoffice

import (
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Regression test of a defect an attack found (against 4d57008), now
// mended; the scenario as found:
//
// /admin/catalog?program=%FF, /admin/rules?program=%00 and the other pages
// with such a program, and /admin/members?program=telco&member=m%00,
// answered 500 (the database refused the bytes). The back office now
// refuses a parameter or form field that is not text with 400 naming it,
// and changes nothing.
func TestBackOfficeRefusesBytesThatAreNotText(t *testing.T) {
	rg := newRig(t, Options{})
	rg.user("ana", RoleAdministrator)
	b := rg.browser()
	b.signIn("ana", "ana-password-1")
	for _, c := range []struct{ path, name string }{
		{"/admin/catalog?program=%FF", "program"},
		{"/admin/rules?program=%00", "program"},
		{"/admin/partners?program=%00", "program"},
		{"/admin/tiers?program=%FF", "program"},
		{"/admin/external?program=%00", "program"},
		{"/admin/members?program=telco&member=m%00", "member"},
		{"/admin/members?program=telco&member=m%FF", "member"},
	} {
		status, body, _ := b.get(c.path)
		if status != http.StatusBadRequest || !strings.Contains(html.UnescapeString(body),
			`The value of "`+c.name+`" is not text`) {
			t.Errorf("GET %s: %d, want 400 naming %s:\n%.300s", c.path, status, c.name, body)
		}
	}
	// A form too: the program saved with a name that is not text is refused.
	_, _, token := b.get("/admin/programs")
	res, body := b.post("/admin/programs/telco", url.Values{"csrf": {token},
		"name": {"Tel\xffco"}, "currency": {"USD"}, "points_per_unit": {"1"}})
	if res.StatusCode != http.StatusBadRequest ||
		!strings.Contains(html.UnescapeString(body), `The value of "name" is not text`) {
		t.Errorf("POST a program named in Latin-1: %d\n%.300s", res.StatusCode, body)
	}
	if status, _, _ := b.get("/admin/members"); status != http.StatusOK {
		t.Errorf("a good page after the refusals: %d", status)
	}
}
