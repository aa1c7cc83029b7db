package backoffice

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// removeBox is the "Remove the stored credentials" checkbox of the page.
var removeBox = regexp.MustCompile(`<input id="ext-remove-credentials"[^>]*>`)

// An administrator ticks "Remove the stored credentials" and mistypes the
// ratio: the save is refused and the form comes back. It must come back
// with the box still ticked, as every other field comes back as typed:
// with the box cleared, the administrator corrects the ratio, saves, and
// the partner keeps the credentials that were meant to go (the save
// succeeds, the list says "stored"), with nothing on the page saying so.
func TestRefusedSaveKeepsTheRemoveBoxTicked(t *testing.T) {
	t.Parallel()
	rg, b, token := adminOnTelco(t)
	ctx := context.Background()
	l := rg.ledger()

	ext := latamForm(token, "tok-late11")
	res, body := b.post("/admin/external/telco", ext)
	mustStatus(t, "external", res, body, http.StatusSeeOther)

	// The box ticked, the ratio mistyped: refused, nothing changed.
	ext.Set("credentials", "")
	ext.Set("remove_credentials", "1")
	ext.Set("ratio", "0")
	res, body = b.post("/admin/external/telco", ext)
	if res.StatusCode < 400 || res.StatusCode >= 500 {
		t.Fatalf("a ratio of 0: %d, want a refusal\n%s", res.StatusCode, body)
	}
	if cfg, err := l.PartnerConfig(ctx, "telco", "latam"); err != nil ||
		cfg.Credentials != "tok-late11" {
		t.Fatalf("after a refused save: %+v, %v; want the credentials untouched", cfg, err)
	}
	box := removeBox.FindString(body)
	if box == "" {
		t.Fatalf("the refused save's page has no remove box:\n%s", body)
	}
	if !strings.Contains(box, "checked") {
		t.Fatalf("the refused save's page shows the remove box cleared (%s): the "+
			"administrator's choice to remove the credentials is lost", box)
	}

	// A plain change page still shows the box cleared.
	_, page, _ := b.get("/admin/external?program=telco&edit=latam")
	if box := removeBox.FindString(page); box == "" || strings.Contains(box, "checked") {
		t.Fatalf("the change page's remove box: %q, want it offered and cleared", box)
	}
}
