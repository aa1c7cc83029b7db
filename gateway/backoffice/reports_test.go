package backoffice

import (
	"net/http"
	"strings"
	"testing"
)

// TestReportsOpenToEveryRole checks that all four roles may read the reports
// page, that a visitor who has not signed in is sent to the sign-in page,
// and that the CSV of no program is a 404.
func TestReportsOpenToEveryRole(t *testing.T) {
	rg := newRig(t, Options{})
	for _, u := range []struct {
		name string
		role Role
	}{{"ana", RoleAnalyst}, {"aud", RoleAuditor}, {"ope", RoleOperator},
		{"adm", RoleAdministrator}} {
		rg.user(u.name, u.role)
		b := rg.browser()
		b.mustSignIn(u.name)
		code, body, _ := b.get("/admin/reports")
		if code != http.StatusOK || !strings.Contains(body, "There is no program yet.") {
			t.Errorf("%s: reports status %d, body lacks the empty notice", u.role, code)
		}
		if code, _, _ := b.get("/admin/reports.csv"); code != http.StatusNotFound {
			t.Errorf("%s: CSV of no program: status %d, want 404", u.role, code)
		}
	}
	code, _, _ := rg.browser().get("/admin/reports")
	if code != http.StatusSeeOther {
		t.Errorf("reports without a session: status %d, want 303", code)
	}
}

// TestChartOf checks the bar geometry: three bars a period, scaled so that
// the largest figure is the full plot height, negative magnitudes empty.
func TestChartOf(t *testing.T) {
	c := chartOf([]flowRow{{Start: "2026-09", Issued: 50, Redeemed: 100, Expired: 0},
		{Start: "2026-10", Issued: 1, Redeemed: -20, Expired: 25}})
	if c.Max != 100 || c.Width != 2*chartLeft+2*chartGroup || len(c.Bars) != 6 {
		t.Fatalf("max %d, width %d, %d bars", c.Max, c.Width, len(c.Bars))
	}
	var got []int
	for _, b := range c.Bars {
		got = append(got, b.H)
		if b.Y+b.H != c.Base {
			t.Errorf("bar %q does not stand on the axis", b.Label)
		}
	}
	want := []int{100, 200, 0, 2, 0, 50}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("heights %v, want %v", got, want)
		}
	}
	if c.Bars[1].Label != "2026-09: 100 points redeemed" {
		t.Errorf("label %q", c.Bars[1].Label)
	}
}

func TestCSVCellEscapesFormulas(t *testing.T) {
	for in, want := range map[string]string{"telco": "telco", "=SUM(A1)": "'=SUM(A1)",
		"+1": "'+1", "@x": "'@x", "": ""} {
		if got := csvCell(in); got != want {
			t.Errorf("csvCell(%q) = %q, want %q", in, got, want)
		}
	}
}
