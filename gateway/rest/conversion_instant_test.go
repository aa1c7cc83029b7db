package rest_test

import (
	"testing"

	"github.com/puntos-loyalty/puntos/internal/app"
)

// A conversion's requested_at reads the same in the answer to its request,
// in its own read and in the member's list: an integrator that matches
// them as text (a new user did) finds them equal.
func TestConversionInstantReadsTheSame(t *testing.T) {
	p := startGaps9(t, app.Roles{Gateway: true, Core: true})
	p.must(201, "PUT", "/v1/programs/telco/external/skymiles", "x1", `{"name":"SkyMiles",`+
		`"ratio":"0.5","endpoint":"https://127.0.0.1:9/api"}`)
	out := p.must(201, "POST", "/v1/programs/telco/members/A/conversions", "conv-at",
		`{"external":"skymiles","points":100}`)
	data := out["data"].(map[string]any)
	id, posted := data["id"].(string), data["requested_at"]
	one := p.must(200, "GET", "/v1/programs/telco/members/A/conversions/"+id, "", "")
	list := p.must(200, "GET", "/v1/programs/telco/members/A/conversions", "", "")
	items, _ := list["conversions"].([]any)
	if len(items) != 1 {
		t.Fatalf("the member's list: %v, want one conversion", list)
	}
	listed := items[0].(map[string]any)["requested_at"]
	if posted == nil || posted != one["requested_at"] || posted != listed {
		t.Fatalf("requested_at: answered %v, read %v, listed %v; want one text", posted,
			one["requested_at"], listed)
	}
}
