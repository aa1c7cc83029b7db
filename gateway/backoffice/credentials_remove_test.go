package backoffice

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// An administrator removes a partner's stored credentials with the form's
// box; blank keeps them; new ones and the box together are refused, naming
// the field, and change nothing.
func TestExternalCredentialsRemovedFromTheForm(t *testing.T) {
	t.Parallel()
	rg, b, token := adminOnTelco(t)
	ctx := context.Background()
	l := rg.ledger()

	ext := latamForm(token, "tok-remove")
	res, body := b.post("/admin/external/telco", ext)
	mustStatus(t, "external", res, body, http.StatusSeeOther)

	// The change page offers the box for an existing one.
	_, page, _ := b.get("/admin/external?program=telco&edit=latam")
	if !strings.Contains(page, `name="remove_credentials"`) {
		t.Fatalf("the change page of latam offers no way to remove its credentials:\n%s", page)
	}

	both := url.Values{}
	for k, v := range ext {
		both[k] = v
	}
	both.Set("credentials", "tok-other")
	both.Set("remove_credentials", "1")
	res, body = b.post("/admin/external/telco", both)
	if res.StatusCode < 400 || res.StatusCode >= 500 || !strings.Contains(body, "not both") ||
		!strings.Contains(body, `name="remove_credentials"`) {
		t.Fatalf("new credentials and the remove box together: %d, want a refusal saying "+
			"why and the form again with its box\n%s", res.StatusCode, body)
	}
	if cfg, err := l.PartnerConfig(ctx, "telco", "latam"); err != nil ||
		cfg.Credentials != "tok-remove" {
		t.Fatalf("after a refused save: %+v, %v; want the credentials untouched", cfg, err)
	}

	ext.Set("credentials", "")
	ext.Set("ratio", "0.75")
	res, body = b.post("/admin/external/telco", ext)
	mustStatus(t, "blank keeps", res, body, http.StatusSeeOther)
	if cfg, err := l.PartnerConfig(ctx, "telco", "latam"); err != nil ||
		cfg.Credentials != "tok-remove" {
		t.Fatalf("after a save with the field blank: %+v, %v; want them kept", cfg, err)
	}

	ext.Set("remove_credentials", "1")
	res, body = b.post("/admin/external/telco", ext)
	mustStatus(t, "remove", res, body, http.StatusSeeOther)
	cfg, err := l.PartnerConfig(ctx, "telco", "latam")
	if err != nil || cfg.Credentials != "" || strings.TrimRight(cfg.Ratio, "0") != "0.75" {
		t.Fatalf("after removing: %+v, %v; want no credentials and ratio 0.75", cfg, err)
	}
	_, list, _ := b.get("/admin/external?program=telco")
	if !strings.Contains(list, `<td id="cred-latam">none</td>`) {
		t.Fatalf("the list still shows latam's credentials as stored:\n%s", list)
	}
}

// adminOnTelco is a bus rig with program telco and an administrator, root,
// signed in: the rig, root's browser and its CSRF token.
func adminOnTelco(t *testing.T) (*rig, *browser, string) {
	t.Helper()
	rg := newBusRig(t, Options{})
	rg.telco()
	rg.user("root", RoleAdministrator)
	b := rg.browser()
	return rg, b, b.mustSignIn("root")
}

// latamForm is the external program form for LATAM Pass, an http partner,
// with secret as its credentials.
func latamForm(token, secret string) url.Values {
	return url.Values{"csrf": {token}, "code": {"latam"}, "name": {"LATAM Pass"},
		"ratio": {"0.5"}, "rounding": {"down"}, "min_points": {"100"},
		"max_points": {"100000"}, "identify": {"customer_ref"}, "flavour": {"http"},
		"endpoint": {"https://partner.example/api"}, "credentials": {secret},
		"enabled": {"1"}}
}
