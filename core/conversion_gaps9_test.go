package core

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestExternalEndpointMessagesGaps9: a missing endpoint of the http flavour
// is named as required; a malformed one keeps the URL-format message.
func TestExternalEndpointMessagesGaps9(t *testing.T) {
	for _, tc := range []struct{ endpoint, want string }{
		{"", "is required for flavour http"},
		{" \t", "is required for flavour http"},
		{"partner.example/api", "must be an http or https URL"},
		{"ftp://partner.example", "must be an http or https URL"},
		{"https://partner.example/api?x=1", "must be an http or https URL"},
	} {
		e := ExternalProgram{Code: "sky", Name: "Sky", Ratio: "1", Endpoint: tc.endpoint}
		e.Defaults()
		var ce *Error
		if err := e.Validate(); !errors.As(err, &ce) || ce.Field != "endpoint" ||
			!strings.Contains(ce.Message, tc.want) {
			t.Errorf("endpoint %q: %v, want endpoint %q", tc.endpoint, err, tc.want)
		}
	}
}

// TestExternalRatioNormalizeGaps9: one text for one ratio.
func TestExternalRatioNormalizeGaps9(t *testing.T) {
	for given, want := range map[string]string{"0.5": "0.5", "0.500000": "0.5",
		"00.50": "0.5", "2.000000": "2", "1000000.000000": "1000000", "0.000001": "0.000001",
		" 3 ": "3", "x": "x", "": ""} {
		e := ExternalProgram{Ratio: given}
		if e.Normalize(); e.Ratio != want {
			t.Errorf("Normalize(%q) = %q, want %q", given, e.Ratio, want)
		}
	}
}

// TestExternalUpsertPayloadGaps9: the upsert payload tells credentials left
// out from credentials given empty, both ways through JSON.
func TestExternalUpsertPayloadGaps9(t *testing.T) {
	empty := ""
	for _, tc := range []struct {
		name     string
		u        ExternalUpsert
		json     string // what the credentials look like on the bus
		leftOut  bool
		readBack string
	}{
		{"left out", ExternalUpsert{}, "", true, ""},
		{"empty", ExternalUpsert{Credentials: &empty}, `"credentials":""`, false, ""},
		{"masked", ExternalUpsert{Credentials: gaps9Ptr(Masked)}, `"credentials":"****"`, false,
			Masked},
	} {
		tc.u.Name, tc.u.Ratio = "Sky", "1"
		raw, err := json.Marshal(tc.u)
		if err != nil {
			t.Fatal(err)
		}
		if has := strings.Contains(string(raw), `"credentials"`); has == tc.leftOut ||
			(tc.json != "" && !strings.Contains(string(raw), tc.json)) {
			t.Errorf("%s: encoded as %s", tc.name, raw)
		}
		var back ExternalUpsert
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		if (back.Credentials == nil) != tc.leftOut || back.Config().Credentials != tc.readBack {
			t.Errorf("%s: read back as %+v", tc.name, back)
		}
	}

	// The back office's payload, a plain configuration, reads as left out
	// when its credentials are blank.
	raw, _ := json.Marshal(ExternalProgram{Name: "Sky", Ratio: "1"})
	var u ExternalUpsert
	if err := json.Unmarshal(raw, &u); err != nil || u.Credentials != nil {
		t.Fatalf("a configuration without credentials read as %+v %v", u, err)
	}
}

func gaps9Ptr(s string) *string { return &s }
