package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/puntos-loyalty/puntos/contracts"
)

// ruleSet is the shape of contracts/examples/telco-rules.json.
type ruleSet struct {
	Attributes struct {
		Contract      columnMap         `json:"contract"`
		PaymentMethod columnMap         `json:"payment_method"`
		Plan          columnMap         `json:"plan"`
		Segments      map[string]string `json:"segments"`
	} `json:"attributes_from_csv"`
	Tiers json.RawMessage   `json:"tiers"`
	Rules []json.RawMessage `json:"rules"`
}

// columnMap turns the values of one CSV column into an attribute's values.
type columnMap struct {
	Column string            `json:"column"`
	Values map[string]string `json:"values"`
}

// Attributes are what the demo's rules read of a member.
type Attributes struct {
	Plan          string   `json:"plan,omitempty"`
	Contract      string   `json:"contract,omitempty"`
	PaymentMethod string   `json:"payment_method,omitempty"`
	Segments      []string `json:"segments,omitempty"`
}

func loadRuleSet() (*ruleSet, error) {
	var rs ruleSet
	if err := json.Unmarshal(contracts.TelcoRules, &rs); err != nil {
		return nil, fmt.Errorf("telco rules: %w", err)
	}
	return &rs, nil
}

// attributesOf maps a CSV row to member attributes as the rule set says;
// columns the file lacks are left out. A segment is written "Column is
// Value" and applies when the row has that value.
func (rs *ruleSet) attributesOf(rec []string, col map[string]int) *Attributes {
	get := func(name string) (string, bool) {
		i, ok := col[strings.ToLower(name)]
		if !ok || i >= len(rec) {
			return "", false
		}
		return strings.TrimSpace(rec[i]), true
	}
	mapped := func(m columnMap) string {
		v, ok := get(m.Column)
		if !ok {
			return ""
		}
		return m.Values[v]
	}
	a := &Attributes{Plan: mapped(rs.Attributes.Plan),
		Contract:      mapped(rs.Attributes.Contract),
		PaymentMethod: mapped(rs.Attributes.PaymentMethod)}
	for name, cond := range rs.Attributes.Segments {
		column, want, ok := strings.Cut(cond, " is ")
		if v, has := get(column); ok && has && v == want {
			a.Segments = append(a.Segments, name)
		}
	}
	if a.Plan == "" && a.Contract == "" && a.PaymentMethod == "" && len(a.Segments) == 0 {
		return nil
	}
	sortStrings(a.Segments)
	return a
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// defineRules puts the rule set's tiers and rules on the program before the
// first event, so that back-dated bills earn by them. Each write has a fixed
// Idempotency-Key: a second run replays them.
func defineRules(ctx context.Context, c *client, program string, rs *ruleSet,
	out io.Writer) error {
	base := "/v1/programs/" + url.PathEscape(program)
	writes := []struct {
		method, path, key string
		body              any
	}{{http.MethodPut, base + "/tiers", "demo-tiers-v1", rs.Tiers}}
	for _, r := range rs.Rules {
		var head struct {
			Code string `json:"code"`
		}
		if err := json.Unmarshal(r, &head); err != nil || head.Code == "" {
			return fmt.Errorf("telco rules: a rule without a code")
		}
		writes = append(writes, struct {
			method, path, key string
			body              any
		}{http.MethodPost, base + "/rules", "demo-rule-" + head.Code + "-v1", r})
	}
	for _, w := range writes {
		a := c.write(ctx, w.method, w.path, w.key, w.body)
		if a.verdict == pending {
			a = c.await(ctx, a.txn, pollFor)
		}
		switch {
		case a.verdict == applied || a.verdict == replayed:
		case a.verdict == rejected && a.status == http.StatusConflict:
			// The rule exists already: an earlier run (or a person) made it.
		default:
			return fmt.Errorf("define %s %s: %s", w.method, w.path, a.reason)
		}
	}
	var tiers struct {
		Levels []json.RawMessage `json:"levels"`
	}
	_ = json.Unmarshal(rs.Tiers, &tiers)
	fmt.Fprintf(out, "Rules: %d rules and %d tier levels defined.\n", len(rs.Rules),
		len(tiers.Levels))
	return nil
}
