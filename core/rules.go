package core

import (
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/interpreter"
)

// Command kinds of the rules engine. Core is the only writer of rules, as it
// is of the ledger: the gateway turns REST calls into these commands.
const (
	KindRuleUpsert       = "rule.upsert"
	KindRuleRetire       = "rule.retire"
	KindMemberAttributes = "member.attributes"
	KindTiersSet         = "program.tiers"
)

// Formula kinds.
const (
	FormulaPerUnit    = "per_unit"   // rate points per currency unit of the amount
	FormulaFixed      = "fixed"      // a fixed number of points per event
	FormulaMultiplier = "multiplier" // extra points: base points of the other rules × (factor − 1)
	FormulaTiered     = "tiered"     // per unit, at the rate of the highest band reached
)

// Formula says how many points a rule gives when its condition holds. It is
// a structure, not an expression: only conditions are written in CEL.
type Formula struct {
	Kind string `json:"kind"`
	// Rate is the points per currency unit of a per_unit formula.
	Rate string `json:"rate,omitempty"`
	// Points is the fixed number of points of a fixed formula.
	Points Points `json:"points,omitempty"`
	// Factor multiplies the base points (those of the non-multiplier rules
	// that fired) in a multiplier formula; the rule gives the difference, so
	// factor "2" doubles the base and "1.5" adds half of it.
	Factor string `json:"factor,omitempty"`
	// Bands of a tiered formula, by ascending lower bound. The whole amount
	// earns at the rate of the last band whose lower bound it reaches.
	Bands []Band `json:"bands,omitempty"`
}

// Band is one step of a tiered formula.
type Band struct {
	From string `json:"from"` // lower bound of the amount, inclusive, a decimal string
	Rate string `json:"rate"` // points per currency unit from that bound on
}

// Caps bound what one rule gives. Zero means no cap. Day, month and year
// windows are those of the program's time zone, taken at the event's
// occurred_at. The program year is the calendar year in that zone: an event
// at 23:30 local time on 31 December counts in the year that is ending, one
// at 00:30 on 1 January in the new one, whatever the UTC date.
type Caps struct {
	PerEvent Points `json:"per_event,omitempty"`
	PerDay   Points `json:"per_day,omitempty"`   // per member per local day
	PerMonth Points `json:"per_month,omitempty"` // per member per local month
	PerYear  Points `json:"per_year,omitempty"`  // per member per local calendar year
	Budget   Points `json:"budget,omitempty"`    // for the whole program, all members
}

// Rule is one version of a conversion rule of a program.
//
// The condition is a CEL expression of type bool over two variables, both
// declared field by field so that a misspelt name is refused when the rule is
// saved:
//
//	event.type          string  the event type (bill_paid, top_up, ...)
//	event.amount        string  the amount as sent, a decimal string
//	event.amount_cents  int     the amount in hundredths of the currency unit,
//	                            rounded down; CEL never sees a float
//	event.channel       string  the channel the command came through
//	event.partner       string  the partner, if any
//	member.plan, member.contract, member.payment_method, member.channel,
//	member.tier         string
//	member.segments     list(string)
//	member.tenure_months int    whole months since enrollment, at the event
//
// An empty condition always holds.
type Rule struct {
	Code      string     `json:"code"`
	Version   int        `json:"version,omitempty"`
	Name      string     `json:"name,omitempty"`
	EventType string     `json:"event_type"`
	Condition string     `json:"condition,omitempty"`
	Formula   Formula    `json:"formula"`
	Rounding  Rounding   `json:"rounding,omitempty"`
	ValidFrom *time.Time `json:"valid_from,omitempty"`
	ValidTo   *time.Time `json:"valid_to,omitempty"`
	// Priority orders evaluation, highest first.
	Priority int `json:"priority,omitempty"`
	// Exclusive: when this rule fires, rules of lower priority do not.
	Exclusive bool `json:"exclusive,omitempty"`
	Caps      Caps `json:"caps,omitempty"`

	// Until is set by the ledger when a newer version or a retirement ended
	// this version's force.
	Until *time.Time `json:"until,omitempty"`
	// Retired is set by the ledger on the version a retirement ended.
	Retired bool `json:"retired,omitempty"`
}

// RuleRetire is the payload of a rule retirement.
type RuleRetire struct {
	Code string     `json:"code"`
	At   *time.Time `json:"at,omitempty"` // end of force; default: when processed
}

// MemberAttributes are what conditions may know of a member besides its
// channel, tier and tenure. They are set at enrollment or by a
// member.attributes command, which replaces them whole.
type MemberAttributes struct {
	Plan          string   `json:"plan,omitempty"`
	Contract      string   `json:"contract,omitempty"`
	PaymentMethod string   `json:"payment_method,omitempty"`
	Segments      []string `json:"segments,omitempty"`
}

// Validate checks the attributes and names the bad field.
func (a *MemberAttributes) Validate() error {
	for name, v := range map[string]string{"plan": a.Plan, "contract": a.Contract,
		"payment_method": a.PaymentMethod} {
		if len(v) > 64 {
			return Errorf(Invalid, "attributes."+name, "is at most 64 characters")
		}
	}
	if len(a.Segments) > 32 {
		return Errorf(Invalid, "attributes.segments", "has at most 32 tags")
	}
	for i, s := range a.Segments {
		if s == "" || len(s) > 64 {
			return Errorf(Invalid, fmt.Sprintf("attributes.segments[%d]", i),
				"must be 1-64 characters")
		}
	}
	return nil
}

// Validate checks a rule as it is saved and names the bad part: the field,
// and for a condition the line and column of the CEL error.
func (r *Rule) Validate() error {
	_, err := CompileRule(*r)
	return err
}

// RuleRef names the rule version that produced points in a posting's
// rule_version: "rule:<code>@v<version>".
func (r *Rule) RuleRef() string { return fmt.Sprintf("rule:%s@v%d", r.Code, r.Version) }

// CompiledRule is a validated rule ready to evaluate: its CEL program built
// and its decimals parsed.
type CompiledRule struct {
	Rule
	prg    cel.Program
	rate   *big.Rat
	factor *big.Rat
	bands  []compiledBand
}

type compiledBand struct{ from, rate *big.Rat }

var (
	celEnvOnce sync.Once
	celEnv     *cel.Env
	celEnvErr  error
)

// conditionEnv is the CEL environment of rule conditions.
func conditionEnv() (*cel.Env, error) {
	celEnvOnce.Do(func() {
		s, i := cel.StringType, cel.IntType
		celEnv, celEnvErr = cel.NewEnv(
			cel.Variable("event.type", s),
			cel.Variable("event.amount", s),
			cel.Variable("event.amount_cents", i),
			cel.Variable("event.channel", s),
			cel.Variable("event.partner", s),
			cel.Variable("member.plan", s),
			cel.Variable("member.contract", s),
			cel.Variable("member.payment_method", s),
			cel.Variable("member.channel", s),
			cel.Variable("member.tier", s),
			cel.Variable("member.segments", cel.ListType(s)),
			cel.Variable("member.tenure_months", i),
		)
	})
	return celEnv, celEnvErr
}

// maxCondition bounds the length of a condition.
const maxCondition = 4096

// CompileRule validates r and prepares it for evaluation. Errors are Invalid
// and name the field at fault.
func CompileRule(r Rule) (*CompiledRule, error) {
	c := &CompiledRule{Rule: r}
	if !codeOK(r.Code) {
		return nil, Errorf(Invalid, "code", "must be 1-64 letters, digits, '-' or '_'")
	}
	if len(r.Name) > 200 {
		return nil, Errorf(Invalid, "name", "is at most 200 characters")
	}
	if r.EventType != "*" && !codeOK(r.EventType) {
		return nil, Errorf(Invalid, "event_type",
			"must be an event type (1-64 letters, digits, '-' or '_') or *")
	}
	if !r.Rounding.Valid() {
		return nil, Errorf(Invalid, "rounding", "must be down, up, half_up or half_even")
	}
	if r.ValidFrom != nil && r.ValidTo != nil && !r.ValidTo.After(*r.ValidFrom) {
		return nil, Errorf(Invalid, "valid_to", "must be after valid_from")
	}
	if r.Priority < -1000 || r.Priority > 1000 {
		return nil, Errorf(Invalid, "priority", "must be between -1000 and 1000")
	}
	for name, v := range map[string]Points{"caps.per_event": r.Caps.PerEvent,
		"caps.per_day": r.Caps.PerDay, "caps.per_month": r.Caps.PerMonth,
		"caps.per_year": r.Caps.PerYear, "caps.budget": r.Caps.Budget} {
		if v < 0 || v > MaxPoints {
			return nil, Errorf(Invalid, name, "must be between 0 (no cap) and %d", MaxPoints)
		}
	}
	if err := c.compileFormula(); err != nil {
		return nil, err
	}
	if err := c.compileCondition(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *CompiledRule) compileFormula() error {
	f := c.Formula
	var err error
	switch f.Kind {
	case FormulaPerUnit:
		if c.rate, err = ParseRate("formula.rate", f.Rate); err != nil {
			return err
		}
	case FormulaFixed:
		if err := CheckPoints("formula.points", f.Points); err != nil {
			return err
		}
	case FormulaMultiplier:
		if c.factor, err = ParseRate("formula.factor", f.Factor); err != nil {
			return err
		}
		if c.factor.Cmp(big.NewRat(1, 1)) < 0 || c.factor.Cmp(big.NewRat(100, 1)) > 0 {
			return Errorf(Invalid, "formula.factor", "must be between 1 and 100")
		}
	case FormulaTiered:
		if len(f.Bands) == 0 || len(f.Bands) > 20 {
			return Errorf(Invalid, "formula.bands", "must list 1 to 20 bands")
		}
		for i, b := range f.Bands {
			at := fmt.Sprintf("formula.bands[%d]", i)
			from, err := ParseRate(at+".from", b.From)
			if err != nil {
				return err
			}
			rate, err := ParseRate(at+".rate", b.Rate)
			if err != nil {
				return err
			}
			if i > 0 && from.Cmp(c.bands[i-1].from) <= 0 {
				return Errorf(Invalid, at+".from", "must be above the previous band's")
			}
			c.bands = append(c.bands, compiledBand{from: from, rate: rate})
		}
	default:
		return Errorf(Invalid, "formula.kind", "must be per_unit, fixed, multiplier or tiered")
	}
	for _, r := range append([]*big.Rat{c.rate}, bandRates(c.bands)...) {
		if r != nil && r.Cmp(big.NewRat(1_000_000, 1)) > 0 {
			return Errorf(Invalid, "formula", "a rate must not exceed 1000000")
		}
	}
	return nil
}

func bandRates(bs []compiledBand) []*big.Rat {
	out := make([]*big.Rat, len(bs))
	for i, b := range bs {
		out[i] = b.rate
	}
	return out
}

func (c *CompiledRule) compileCondition() error {
	src := strings.TrimSpace(c.Condition)
	if src == "" {
		return nil
	}
	if len(src) > maxCondition {
		return Errorf(Invalid, "condition", "is at most %d characters", maxCondition)
	}
	env, err := conditionEnv()
	if err != nil {
		return fmt.Errorf("condition environment: %w", err)
	}
	ast, iss := env.Compile(src)
	if iss != nil && iss.Err() != nil {
		e := iss.Errors()[0]
		return Errorf(Invalid, "condition", "line %d column %d: %s", e.Location.Line(),
			e.Location.Column()+1, e.Message)
	}
	if ast.OutputType() != cel.BoolType {
		return Errorf(Invalid, "condition", "must be true or false, not %s", ast.OutputType())
	}
	// CEL has no loops beyond bounded comprehensions, and a condition is at
	// most maxCondition long: no runtime cost tracking is needed.
	c.prg, err = env.Program(ast)
	if err != nil {
		return Errorf(Invalid, "condition", "cannot be prepared: %v", err)
	}
	return nil
}

// RuleCache keeps compiled rules by a key that names an immutable rule
// version, so that each CEL program is built once per process.
type RuleCache struct {
	mu sync.RWMutex
	m  map[string]*CompiledRule
}

// NewRuleCache returns an empty cache.
func NewRuleCache() *RuleCache { return &RuleCache{m: map[string]*CompiledRule{}} }

// Get returns the compiled rule under key, compiling r on a miss.
func (rc *RuleCache) Get(key string, r Rule) (*CompiledRule, error) {
	rc.mu.RLock()
	c, ok := rc.m[key]
	rc.mu.RUnlock()
	if ok {
		return c, nil
	}
	c, err := CompileRule(r)
	if err != nil {
		return nil, err
	}
	rc.mu.Lock()
	if len(rc.m) > 100_000 {
		// TODO(rules): evict least recently used instead of starting over.
		rc.m = map[string]*CompiledRule{}
	}
	rc.m[key] = c
	rc.mu.Unlock()
	return c, nil
}

// EventFacts is what conditions and formulas know of an event.
type EventFacts struct {
	Type       string
	Amount     *big.Rat
	AmountText string
	Channel    string
	Partner    string
	OccurredAt time.Time
}

// MemberFacts is what conditions know of a member at the event.
type MemberFacts struct {
	Attributes   MemberAttributes
	Channel      string
	Tier         string
	TenureMonths int
	// TierMultiplier, when above 1, adds base × (multiplier − 1) points,
	// rounded down, for the member's tier.
	TierMultiplier *big.Rat
}

// Usage is what a capped rule has already given in the windows of an event.
type Usage struct {
	Day, Month, Year, Budget Points
}

// UsageFunc reads a rule's usage for a member in the given local day
// ("2026-03-10") and month ("2026-03"); the local year is the month's
// (YearOf).
type UsageFunc func(r *CompiledRule, day, month string) (Usage, error)

// Fired is one rule that fired for an event and what it gave.
type Fired struct {
	Code    string `json:"code"`
	Version int    `json:"version"`
	Ref     string `json:"rule_version"`
	// Computed is what the formula gave before caps; Points what it gives.
	Computed Points `json:"computed"`
	Points   Points `json:"points"`
	// CappedBy names the cap that cut the points, if one did.
	CappedBy string `json:"capped_by,omitempty"`
}

// Evaluation is the result of evaluating an event against the rules.
type Evaluation struct {
	Points      Points  `json:"points"`
	Fired       []Fired `json:"fired"`
	RuleVersion string  `json:"rule_version"`
	Day         string  `json:"day"`
	Month       string  `json:"month"`
}

// YearOf is the program-local year ("2026") of a local month ("2026-03")
// as Windows gives it.
func YearOf(month string) string {
	if i := strings.IndexByte(month, '-'); i > 0 {
		return month[:i]
	}
	return month
}

// Windows are the program-local day and month of t.
func Windows(t time.Time, loc *time.Location) (day, month string) {
	l := t.In(loc)
	return l.Format("2006-01-02"), l.Format("2006-01")
}

// Evaluate applies rules (those in force at the event, any order) to an
// event. Rules run by priority, highest first, then by code; an exclusive
// rule that fires stops the rules below it. Multiplier rules apply to the
// base points (after caps) of the other rules that fired, and the member's
// tier multiplier to the total of the rules. Caps cut each rule's points,
// in the order per event, per day, per month, per year, budget. The rule_version of
// the result joins the versions that gave points with "+".
func Evaluate(rules []*CompiledRule, ev EventFacts, mf MemberFacts, loc *time.Location,
	usage UsageFunc) (Evaluation, error) {
	out := Evaluation{Fired: []Fired{}}
	out.Day, out.Month = Windows(ev.OccurredAt, loc)
	sorted := make([]*CompiledRule, 0, len(rules))
	for _, r := range rules {
		if r.EventType == "*" || r.EventType == ev.Type {
			sorted = append(sorted, r)
		}
	}
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Priority != sorted[j].Priority {
			return sorted[i].Priority > sorted[j].Priority
		}
		return sorted[i].Code < sorted[j].Code
	})

	// Which rules fire: conditions in priority order, up to an exclusive one.
	vars, err := interpreter.NewActivation(activation(ev, mf))
	if err != nil {
		return out, fmt.Errorf("condition variables: %w", err)
	}
	var fired []*CompiledRule
	for _, r := range sorted {
		ok, err := r.holds(vars)
		if err != nil {
			return out, err
		}
		if !ok {
			continue
		}
		fired = append(fired, r)
		if r.Exclusive {
			break
		}
	}

	// Base rules first, then multipliers on what the base rules gave.
	var base Points
	results := make([]Fired, len(fired))
	for pass := 0; pass < 2; pass++ {
		for i, r := range fired {
			if (r.Formula.Kind == FormulaMultiplier) != (pass == 1) {
				continue
			}
			computed, err := r.compute(ev.Amount, base)
			if err != nil {
				return out, err
			}
			f := Fired{Code: r.Code, Version: r.Version, Ref: r.RuleRef(), Computed: computed,
				Points: computed}
			if err := r.applyCaps(&f, out.Day, out.Month, usage); err != nil {
				return out, err
			}
			results[i] = f
			if pass == 0 {
				base += f.Points
			}
		}
	}
	var refs []string
	for _, f := range results {
		out.Fired = append(out.Fired, f)
		out.Points += f.Points
		if f.Points > 0 {
			refs = append(refs, f.Ref)
		}
	}

	// The tier multiplier applies to everything the rules gave.
	if m := mf.TierMultiplier; m != nil && m.Cmp(big.NewRat(1, 1)) > 0 && out.Points > 0 {
		extra, err := Round(new(big.Rat).Mul(big.NewRat(int64(out.Points), 1),
			new(big.Rat).Sub(m, big.NewRat(1, 1))), RoundDown)
		if err != nil {
			return out, err
		}
		ref := "tier:" + mf.Tier + "@x" + m.FloatString(2)
		out.Fired = append(out.Fired, Fired{Code: "tier:" + mf.Tier, Ref: ref,
			Computed: extra, Points: extra})
		out.Points += extra
		if extra > 0 {
			refs = append(refs, ref)
		}
	}
	if out.Points > MaxPoints {
		return out, Errorf(Invalid, "amount", "converts to more than %d points", MaxPoints)
	}
	out.RuleVersion = strings.Join(refs, "+")
	return out, nil
}

func (c *CompiledRule) holds(vars interpreter.Activation) (bool, error) {
	if c.prg == nil {
		return true, nil
	}
	v, _, err := c.prg.Eval(vars)
	if err != nil {
		// A condition that cannot be evaluated for this event does not hold;
		// the event still earns by the other rules.
		// TODO(rules): count these in a metric so that a bad rule shows.
		return false, nil
	}
	b, ok := v.Value().(bool)
	return ok && b, nil
}

func (c *CompiledRule) compute(amount *big.Rat, base Points) (Points, error) {
	switch c.Formula.Kind {
	case FormulaPerUnit:
		return Convert(amount, c.rate, c.Rounding)
	case FormulaFixed:
		return c.Formula.Points, nil
	case FormulaMultiplier:
		extra := new(big.Rat).Sub(c.factor, big.NewRat(1, 1))
		return Round(new(big.Rat).Mul(big.NewRat(int64(base), 1), extra), c.Rounding)
	case FormulaTiered:
		var rate *big.Rat
		for _, b := range c.bands {
			if amount.Cmp(b.from) >= 0 {
				rate = b.rate
			}
		}
		if rate == nil {
			return 0, nil
		}
		return Convert(amount, rate, c.Rounding)
	}
	return 0, Errorf(Invalid, "formula.kind", "unknown formula %q", c.Formula.Kind)
}

func (c *CompiledRule) applyCaps(f *Fired, day, month string, usage UsageFunc) error {
	cut := func(limit Points, name string) {
		if limit < 0 {
			limit = 0
		}
		if f.Points > limit {
			f.Points, f.CappedBy = limit, name
		}
	}
	if c.Caps.PerEvent > 0 {
		cut(c.Caps.PerEvent, "per_event")
	}
	if c.Caps.PerDay == 0 && c.Caps.PerMonth == 0 && c.Caps.PerYear == 0 &&
		c.Caps.Budget == 0 || f.Points == 0 {
		return nil
	}
	if usage == nil {
		return fmt.Errorf("rule %s has caps but no usage was given", c.Code)
	}
	u, err := usage(c, day, month)
	if err != nil {
		return err
	}
	if c.Caps.PerDay > 0 {
		cut(c.Caps.PerDay-u.Day, "per_day")
	}
	if c.Caps.PerMonth > 0 {
		cut(c.Caps.PerMonth-u.Month, "per_month")
	}
	if c.Caps.PerYear > 0 {
		cut(c.Caps.PerYear-u.Year, "per_year")
	}
	if c.Caps.Budget > 0 {
		cut(c.Caps.Budget-u.Budget, "budget")
	}
	return nil
}

func activation(ev EventFacts, mf MemberFacts) map[string]any {
	cents := new(big.Int)
	if ev.Amount != nil {
		x := new(big.Rat).Mul(ev.Amount, big.NewRat(100, 1))
		cents.Quo(x.Num(), x.Denom())
	}
	segs := mf.Attributes.Segments
	if segs == nil {
		segs = []string{}
	}
	return map[string]any{
		"event.type":            ev.Type,
		"event.amount":          ev.AmountText,
		"event.amount_cents":    cents.Int64(),
		"event.channel":         ev.Channel,
		"event.partner":         ev.Partner,
		"member.plan":           mf.Attributes.Plan,
		"member.contract":       mf.Attributes.Contract,
		"member.payment_method": mf.Attributes.PaymentMethod,
		"member.channel":        mf.Channel,
		"member.tier":           mf.Tier,
		"member.segments":       segs,
		"member.tenure_months":  int64(mf.TenureMonths),
	}
}

// TenureMonths is the number of whole months from enrolled to at.
func TenureMonths(enrolled, at time.Time, loc *time.Location) int {
	e, a := enrolled.In(loc), at.In(loc)
	n := (a.Year()-e.Year())*12 + int(a.Month()-e.Month())
	if a.Day() < e.Day() {
		n--
	}
	return max(n, 0)
}

// IsRulesKind reports whether kind is a command of the rules engine.
func IsRulesKind(kind string) bool {
	switch kind {
	case KindRuleUpsert, KindRuleRetire, KindMemberAttributes, KindTiersSet:
		return true
	}
	return false
}
