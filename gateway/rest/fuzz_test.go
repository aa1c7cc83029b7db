package rest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core"
)

// fuzzTarget is every body the gateway decodes, in one struct: the fuzzer
// exercises strings, integers, points, times, pointers and nested objects.
type fuzzTarget struct {
	S  string                 `json:"s"`
	P  core.Points            `json:"p"`
	N  int                    `json:"n"`
	T  *time.Time             `json:"t"`
	A  *string                `json:"a"`
	M  *core.MemberAttributes `json:"m"`
	Rs []core.Rule            `json:"rs"`
}

// FuzzDecodeBody: whatever the body, decodeBody either fills the target or
// answers an invalid error naming a field; it never panics.
func FuzzDecodeBody(f *testing.F) {
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		var v fuzzTarget
		err := decodeBody(r, &v)
		if err == nil {
			return
		}
		de, ok := core.AsError(err)
		if !ok || de.Kind != core.Invalid || de.Field == "" {
			t.Fatalf("decodeBody(%q): %v is not an invalid error naming a field", body, err)
		}
	})
}

// writeRoutes lists the operator routes that take a body, as method and
// filled-in path, in a stable order.
func writeRoutes(t testing.TB, router *mux.Router) []string {
	var out []string
	err := router.Walk(func(rt *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := rt.GetPathTemplate()
		if err != nil {
			return nil
		}
		methods, _ := rt.GetMethods()
		for _, m := range methods {
			if m == http.MethodPost || m == http.MethodPut {
				out = append(out, m+" "+fillPath(tpl))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk the routes: %v", err)
	}
	sort.Strings(out)
	return out
}

// FuzzWriteRoutes sends any body to any write route of the operator API,
// through the router, authentication included. Every answer is a result or
// a problem document whose status matches its kind; a 400 names the field
// at fault; whatever reaches the bus carries points within bounds and
// amounts that read exactly.
func FuzzWriteRoutes(f *testing.F) {
	b := &contractBus{answer: true}
	router, _ := newContractServer(b, contractReader{}, time.Second)
	routes := writeRoutes(f, router)
	if len(routes) < 15 {
		f.Fatalf("only %d write routes found: %v", len(routes), routes)
	}
	f.Fuzz(func(t *testing.T, route uint8, body string) {
		method, path, _ := strings.Cut(routes[int(route)%len(routes)], " ")
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+contractKey)
		req.Header.Set("Idempotency-Key", "fz-1")
		req.Header.Set("X-Actor", "fuzzer")
		rec := httptest.NewRecorder()
		router.ServeHTTP(rec, req)
		sent := b.take()

		if rec.Code >= 400 {
			var p Problem
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil ||
				rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%s %s %q: status %d without a problem document: %s", method, path,
					body, rec.Code, rec.Body)
			}
			if statusOf[core.ErrorKind(p.Kind)] != rec.Code {
				t.Fatalf("%s %s %q: status %d for kind %q", method, path, body, rec.Code, p.Kind)
			}
			if rec.Code == http.StatusBadRequest && p.Field == "" {
				t.Fatalf("%s %s %q: 400 names no field: %s", method, path, body, rec.Body)
			}
			if rec.Code == http.StatusBadRequest && len(sent) > 0 {
				t.Fatalf("%s %s %q: refused yet published %+v", method, path, body, sent)
			}
			return
		}
		for _, cmd := range sent {
			var payload map[string]any
			if err := json.Unmarshal(cmd.Payload, &payload); err != nil {
				t.Fatalf("%s %s %q: payload is not JSON: %s", method, path, body, cmd.Payload)
			}
			if p, ok := payload["points"].(float64); ok &&
				(p > float64(core.MaxPoints) || p < -float64(core.MaxPoints)) {
				t.Fatalf("%s %s %q: %v points reached the bus", method, path, body, p)
			}
			if a, ok := payload["amount"].(string); ok && cmd.Kind == core.KindAccrue {
				if _, err := core.ParseAmount("amount", a); err != nil {
					t.Fatalf("%s %s %q: amount %q reached the bus: %v", method, path, body, a,
						err)
				}
			}
		}
	})
}
