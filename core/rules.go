package core

import (
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
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

	// native is the condition compiled to Go, when it has the common shape
	// (see rules_native.go); prg runs it otherwise.
	native nativeCond
	// ref is RuleRef, printed once.
	ref string
	// micro holds the formula's decimals in millionths, when all of them fit
	// (see microFormula); the big.Rat forms above stay the reference.
	micro microFormula
}

type compiledBand struct{ from, rate *big.Rat }

var (
	celEnvOnce sync.Once
	celEnv     *cel.Env
	celEnvErr  error
)

// conditionVars are the names a rule condition may use, with their types.
var conditionVars = []struct {
	name string
	typ  *cel.Type
}{
	{"event.type", cel.StringType}, {"event.amount", cel.StringType},
	{"event.amount_cents", cel.IntType}, {"event.channel", cel.StringType},
	{"event.partner", cel.StringType}, {"member.plan", cel.StringType},
	{"member.contract", cel.StringType}, {"member.payment_method", cel.StringType},
	{"member.channel", cel.StringType}, {"member.tier", cel.StringType},
	{"member.segments", cel.ListType(cel.StringType)}, {"member.tenure_months", cel.IntType},
}

// conditionNames are the names of conditionVars, for messages.
var conditionNames = func() []string {
	var out []string
	for _, v := range conditionVars {
		out = append(out, v.name)
	}
	return out
}()

// conditionEnv is the CEL environment of rule conditions.
func conditionEnv() (*cel.Env, error) {
	celEnvOnce.Do(func() {
		var opts []cel.EnvOption
		for _, v := range conditionVars {
			opts = append(opts, cel.Variable(v.name, v.typ))
		}
		celEnv, celEnvErr = cel.NewEnv(opts...)
	})
	return celEnv, celEnvErr
}

// nameAt is the dotted name (member.foo) that starts at line and column
// (1-based line, 0-based column, as CEL counts them) of src, or "".
func nameAt(src string, line, column int) string {
	lines := strings.Split(src, "\n")
	if line < 1 || line > len(lines) || column < 0 || column >= len(lines[line-1]) {
		return ""
	}
	rest := lines[line-1][column:]
	end := strings.IndexFunc(rest, func(r rune) bool {
		return !(r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' ||
			r >= '0' && r <= '9')
	})
	if end < 0 {
		end = len(rest)
	}
	return strings.TrimRight(rest[:end], ".")
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
	if err := checkName(r.Name, false); err != nil {
		return nil, err
	}
	if r.EventType != "*" && !codeOK(r.EventType) {
		return nil, Errorf(Invalid, "event_type",
			"must be an event type (1-64 letters, digits, '-' or '_') or *")
	}
	if !r.Rounding.Valid() {
		return nil, Errorf(Invalid, "rounding", "must be down, up, half_up or half_even")
	}
	if r.ValidFrom != nil && r.ValidTo != nil && !Later(*r.ValidTo, *r.ValidFrom) {
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
	c.ref = r.RuleRef()
	c.micro = newMicroFormula(c)
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
		msg := e.Message
		// CEL names only the first part of an unknown name (member.foo
		// reads "undeclared reference to 'member'"): list the names there are.
		// event.amount is text (the amount as sent): a number compared with
		// it finds no overload; amounts compare as event.amount_cents.
		if strings.Contains(msg, "no matching overload") &&
			strings.Contains(src, "event.amount") && !strings.Contains(src, "event.amount_cents") {
			msg += "; event.amount is text, as sent: compare amounts with " +
				"event.amount_cents (a whole number of cents)"
		}
		if strings.HasPrefix(msg, "undeclared reference") {
			msg = strings.Replace(msg, " (in container '')", "", 1)
			if name := nameAt(src, e.Location.Line(), e.Location.Column()); name != "" {
				msg = fmt.Sprintf("%q is not a name a condition knows", name)
			}
			msg += "; a condition may use " + strings.Join(conditionNames, ", ")
		}
		return Errorf(Invalid, "condition", "line %d column %d: %s", e.Location.Line(),
			e.Location.Column()+1, msg)
	}
	if ast.OutputType() != cel.BoolType {
		return Errorf(Invalid, "condition", "must be true or false, not %s", ast.OutputType())
	}
	// CEL has no loops beyond comprehensions, but nested ones over literal
	// lists cost their product: a short condition could take seconds on
	// every event. One whose worst cost is known (no list of unknown size)
	// and over the limit is refused now; at run time the limit stops any
	// other evaluation, which then counts as an error (false).
	est, err := env.EstimateCost(ast, assumedSizes{})
	if err == nil && est.Max > maxConditionCost {
		return Errorf(Invalid, "condition", "can cost %d steps per event, more than the "+
			"limit of %d: avoid nested comprehensions over long lists", est.Max,
			maxConditionCost)
	}
	c.prg, err = env.Program(ast, cel.CostLimit(maxConditionCost))
	if err != nil {
		return Errorf(Invalid, "condition", "cannot be prepared: %v", err)
	}
	c.native, _ = compileNative(ast.NativeRep())
	return nil
}

// maxConditionCost bounds the CEL cost of evaluating one condition on one
// event (roughly one step per operation or element visited).
const maxConditionCost = 100_000

// assumedSizes lets CEL estimate a condition's cost when saving it: sizes
// written in the condition are known; a list or text of the event or the
// member is taken to hold at most assumedSize elements or characters.
type assumedSizes struct{}

const assumedSize = 32

func (assumedSizes) EstimateSize(checker.AstNode) *checker.SizeEstimate {
	return &checker.SizeEstimate{Min: 0, Max: assumedSize}
}

func (assumedSizes) EstimateCallCost(string, string, *checker.AstNode,
	[]checker.AstNode) *checker.CallEstimate {
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
	y, m, d := l.Date()
	if y < 0 || y > 9999 {
		return l.Format("2006-01-02"), l.Format("2006-01")
	}
	// Every event asks for its windows: write the date by hand, once.
	b := [10]byte{byte('0' + y/1000), byte('0' + y/100%10), byte('0' + y/10%10),
		byte('0' + y%10), '-', byte('0' + m/10), byte('0' + m%10), '-',
		byte('0' + d/10), byte('0' + d%10)}
	day = string(b[:])
	return day, day[:len("2006-01")]
}

// RuleSet is a fixed set of compiled rules arranged for evaluation: for
// each event type, the rules that apply to it (its own and those of "*"),
// already in evaluation order, so that an event walks one slice and meets
// only the rules that can apply to it. It is read-only once built and safe
// for concurrent use.
type RuleSet struct {
	byType   map[string][]*CompiledRule
	wildcard []*CompiledRule
	size     int
}

// NewRuleSet arranges rules (one version per code, any order) for
// evaluation.
func NewRuleSet(rules []*CompiledRule) *RuleSet {
	sorted := slices.Clone(rules)
	slices.SortStableFunc(sorted, ruleOrder)
	s := &RuleSet{byType: map[string][]*CompiledRule{}, size: len(rules)}
	for _, r := range sorted {
		if r.EventType == "*" {
			s.wildcard = append(s.wildcard, r)
			continue
		}
		s.byType[r.EventType] = nil
	}
	for typ := range s.byType {
		var list []*CompiledRule
		for _, r := range sorted {
			if r.EventType == typ || r.EventType == "*" {
				list = append(list, r)
			}
		}
		s.byType[typ] = list
	}
	return s
}

// ruleOrder is the order of evaluation: priority, highest first, then code.
func ruleOrder(a, b *CompiledRule) int {
	if a.Priority != b.Priority {
		return b.Priority - a.Priority
	}
	return strings.Compare(a.Code, b.Code)
}

// For returns the rules of the set that apply to events of type eventType,
// in evaluation order. The slice belongs to the set: do not change it.
func (s *RuleSet) For(eventType string) []*CompiledRule {
	if list, ok := s.byType[eventType]; ok {
		return list
	}
	return s.wildcard
}

// Len is the number of rules in the set.
func (s *RuleSet) Len() int { return s.size }

// Evaluate applies rules (those in force at the event, any order) to an
// event. Rules run by priority, highest first, then by code; an exclusive
// rule that fires stops the rules below it. Multiplier rules apply to the
// base points (after caps) of the other rules that fired, and the member's
// tier multiplier to the total of the rules. Caps cut each rule's points,
// in the order per event, per day, per month, per year, budget. The rule_version of
// the result joins the versions that gave points with "+".
//
// Evaluate arranges the rules for each call; a caller that evaluates many
// events against the same rules builds a RuleSet once instead.
func Evaluate(rules []*CompiledRule, ev EventFacts, mf MemberFacts, loc *time.Location,
	usage UsageFunc) (Evaluation, error) {
	return NewRuleSet(rules).Evaluate(ev, mf, loc, usage)
}

// Evaluate applies the rules of the set to an event, as the function
// Evaluate describes.
func (s *RuleSet) Evaluate(ev EventFacts, mf MemberFacts, loc *time.Location,
	usage UsageFunc) (Evaluation, error) {
	return s.EvaluateInto(nil, ev, mf, loc, usage)
}

// EvaluateInto is Evaluate writing the result's Fired into dst when it has
// room (one entry per rule that can fire, and one for the tier), so that a
// caller evaluating many events in turn allocates that list once: pass the
// previous result's Fired back. The previous result's Fired is then
// overwritten; a caller that keeps results passes nil, as Evaluate does.
func (s *RuleSet) EvaluateInto(dst []Fired, ev EventFacts, mf MemberFacts,
	loc *time.Location, usage UsageFunc) (Evaluation, error) {
	rules := s.For(ev.Type)
	var out Evaluation
	out.Day, out.Month = Windows(ev.OccurredAt, loc)

	// Which rules fire: conditions in priority order, up to an exclusive one.
	// All conditions of the event read one set of variables.
	facts := &conditionFacts{ev: ev, mf: mf}
	var frame *interpreter.ExecutionFrame
	defer func() {
		if frame != nil {
			frame.Close()
		}
	}()
	var buf [64]*CompiledRule
	fired := buf[:0]
	for _, r := range rules {
		if r.native == nil && r.prg != nil && frame == nil {
			var err error
			if frame, err = interpreter.NewExecutionFrame(facts); err != nil {
				return out, fmt.Errorf("condition variables: %w", err)
			}
		}
		if !r.holds(facts, frame) {
			continue
		}
		fired = append(fired, r)
		if r.Exclusive {
			break
		}
	}

	// Base rules first, then multipliers on what the base rules gave.
	amount, exact := microAmount(ev.Amount)
	var base Points
	if cap(dst) >= len(fired)+1 {
		out.Fired = dst[:len(fired)]
	} else {
		out.Fired = make([]Fired, len(fired), len(fired)+1)
	}
	for pass := 0; pass < 2; pass++ {
		for i, r := range fired {
			if (r.Formula.Kind == FormulaMultiplier) != (pass == 1) {
				continue
			}
			computed, err := r.compute(ev.Amount, amount, exact, base)
			if err != nil {
				return out, err
			}
			f := &out.Fired[i]
			*f = Fired{Code: r.Code, Version: r.Version, Ref: r.ref, Computed: computed,
				Points: computed}
			if err := r.applyCaps(f, out.Day, out.Month, usage); err != nil {
				return out, err
			}
			if pass == 0 {
				base += f.Points
			}
		}
	}
	size := 0
	for _, f := range out.Fired {
		out.Points += f.Points
		if f.Points > 0 {
			size += len(f.Ref) + 1
		}
	}

	// The tier multiplier applies to everything the rules gave.
	if m := mf.TierMultiplier; m != nil && out.Points > 0 && aboveOne(m) {
		extra, err := tierExtra(out.Points, m)
		if err != nil {
			return out, err
		}
		// One string holds the reference, the code is its head.
		var b [64]byte
		ref := string(appendTwoDecimals(append(append(append(b[:0], "tier:"...),
			mf.Tier...), "@x"...), m))
		code := ref[:len("tier:")+len(mf.Tier)]
		out.Fired = append(out.Fired, Fired{Code: code, Ref: ref,
			Computed: extra, Points: extra})
		out.Points += extra
		size += len(ref) + 1
	}
	if out.Points > MaxPoints {
		return out, Errorf(Invalid, "amount", "converts to more than %d points", MaxPoints)
	}

	// The versions that gave points, in the order they fired.
	var refs strings.Builder
	refs.Grow(size)
	for _, f := range out.Fired {
		if f.Points <= 0 {
			continue
		}
		if refs.Len() > 0 {
			refs.WriteByte('+')
		}
		refs.WriteString(f.Ref)
	}
	out.RuleVersion = refs.String()
	return out, nil
}

// aboveOne tells whether m > 1.
func aboveOne(m *big.Rat) bool {
	if v, ok := toMicros(m); ok {
		return v > million
	}
	return m.Cmp(ratOne) > 0
}

// appendTwoDecimals appends m with two fraction digits as m.FloatString(2)
// writes it (the last one rounded half away from zero).
func appendTwoDecimals(b []byte, m *big.Rat) []byte {
	v, ok := toMicros(m)
	if !ok || v < 0 {
		return append(b, m.FloatString(2)...)
	}
	h := (v + 5_000) / 10_000 // hundredths
	frac := h % 100
	b = strconv.AppendInt(b, h/100, 10)
	return append(b, '.', byte('0'+frac/10), byte('0'+frac%10))
}

// tierExtra is what a tier multiplier m (above 1) adds to points p of the
// rules: p × (m − 1), rounded down.
func tierExtra(p Points, m *big.Rat) (Points, error) {
	if v, ok := toMicros(m); ok && p >= 0 {
		if extra, ok := mulRound(uint64(p), uint64(v-million), million, RoundDown); ok {
			return extra, nil
		}
	}
	return Round(new(big.Rat).Mul(big.NewRat(int64(p), 1), new(big.Rat).Sub(m, ratOne)),
		RoundDown)
}

// ratOne is 1; never change it.
var ratOne = big.NewRat(1, 1)

// holds tells whether the rule's condition holds for the event of facts;
// frame resolves the same variables for CEL (nil when only native
// conditions and rules without one have been met).
func (c *CompiledRule) holds(facts *conditionFacts,
	frame *interpreter.ExecutionFrame) bool {
	if c.native != nil {
		return c.native(facts)
	}
	if c.prg == nil {
		return true
	}
	v, _, err := c.prg.Eval(frame)
	if err != nil {
		// A condition that cannot be evaluated for this event does not hold;
		// the event still earns by the other rules.
		// TODO(rules): count these in a metric so that a bad rule shows.
		return false
	}
	b, ok := v.Value().(bool)
	return ok && b
}

// compute is what the formula gives for an event of the given amount (also
// in millionths when exact is set), base being the points of the base rules
// that fired. Integer arithmetic gives the answer when the values fit; the
// exact rational path, the reference, takes the rest.
func (c *CompiledRule) compute(amount *big.Rat, micros int64, exact bool,
	base Points) (Points, error) {
	if exact && c.micro.ok {
		if p, ok := c.micro.compute(c.Formula, c.Rounding, micros, base); ok {
			return p, nil
		}
	}
	switch c.Formula.Kind {
	case FormulaPerUnit:
		return Convert(amount, c.rate, c.Rounding)
	case FormulaFixed:
		return c.Formula.Points, nil
	case FormulaMultiplier:
		extra := new(big.Rat).Sub(c.factor, ratOne)
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

// million is the scale of the decimals of amounts and rates: ParseAmount
// takes at most six fraction digits.
const million = 1_000_000

// microFormula is a formula's decimals in whole millionths, so that an
// event converts with integer arithmetic instead of big.Rat. ok is false
// when a value does not fit, and the exact path always applies.
type microFormula struct {
	ok     bool
	rate   uint64 // per_unit: points per unit
	factor uint64 // multiplier: factor − 1
	bands  []microBand
}

type microBand struct {
	from int64
	rate uint64
}

// newMicroFormula converts the parsed decimals of c.
func newMicroFormula(c *CompiledRule) microFormula {
	m := microFormula{ok: true}
	rate := func(x *big.Rat) uint64 {
		v, ok := toMicros(x)
		if !ok || v < 0 {
			m.ok = false
		}
		return uint64(v)
	}
	switch c.Formula.Kind {
	case FormulaPerUnit:
		m.rate = rate(c.rate)
	case FormulaMultiplier:
		m.factor = rate(new(big.Rat).Sub(c.factor, ratOne))
	case FormulaTiered:
		for _, b := range c.bands {
			from, ok := toMicros(b.from)
			m.ok = m.ok && ok
			m.bands = append(m.bands, microBand{from: from, rate: rate(b.rate)})
		}
	}
	return m
}

// compute is what the formula gives for an amount of micros millionths
// (not negative), or ok false when the integers would not hold the answer.
func (m *microFormula) compute(f Formula, mode Rounding, micros int64,
	base Points) (Points, bool) {
	switch f.Kind {
	case FormulaPerUnit:
		return mulRound(uint64(micros), m.rate, million*million, mode)
	case FormulaFixed:
		return f.Points, true
	case FormulaMultiplier:
		if base < 0 {
			return 0, false
		}
		return mulRound(uint64(base), m.factor, million, mode)
	case FormulaTiered:
		found, rate := false, uint64(0)
		for _, b := range m.bands {
			if micros >= b.from {
				found, rate = true, b.rate
			}
		}
		if !found {
			return 0, true
		}
		return mulRound(uint64(micros), rate, million*million, mode)
	}
	return 0, false
}

// mulRound is a×b/div rounded as Round rounds, or ok false when the result
// does not fit in points (the exact path then reports the error).
func mulRound(a, b, div uint64, mode Rounding) (Points, bool) {
	hi, lo := bits.Mul64(a, b)
	if hi >= div {
		return 0, false
	}
	q, r := bits.Div64(hi, lo, div)
	if r != 0 {
		twice := 2 * r // r < div ≤ 10^12: no overflow
		switch mode {
		case RoundDown:
		case RoundUp:
			q++
		case RoundHalfUp:
			if twice >= div {
				q++
			}
		case RoundHalfEven:
			if twice > div || twice == div && q%2 == 1 {
				q++
			}
		default:
			return 0, false
		}
	}
	if q > uint64(MaxPoints) {
		return 0, false
	}
	return Points(q), true
}

// toMicros is x in whole millionths, or ok false when x has a finer
// fraction or does not fit in an int64.
func toMicros(x *big.Rat) (int64, bool) {
	if x == nil || !x.Num().IsInt64() || !x.Denom().IsInt64() {
		return 0, false
	}
	n, d := x.Num().Int64(), x.Denom().Int64()
	if d <= 0 || million%d != 0 {
		return 0, false
	}
	f := million / d
	if n > math.MaxInt64/f || n < math.MinInt64/f {
		return 0, false
	}
	return n * f, true
}

// microAmount is an event's amount in millionths when it is not negative
// and fits; exact is false otherwise.
func microAmount(amount *big.Rat) (micros int64, exact bool) {
	v, ok := toMicros(amount)
	if !ok || v < 0 {
		return 0, false
	}
	return v, true
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

// The variables of conditions, by their index in conditionFacts.
const (
	varEventType = iota
	varEventAmount
	varEventAmountCents
	varEventChannel
	varEventPartner
	varMemberPlan
	varMemberContract
	varMemberPaymentMethod
	varMemberChannel
	varMemberTier
	varMemberSegments
	varMemberTenureMonths
	numVars
)

// conditionFacts gives conditions the variables of one event. A value
// becomes a CEL value the first time a condition reads it and is kept for
// the event's other conditions, so an event pays for the variables its
// rules read, once.
type conditionFacts struct {
	ev   EventFacts
	mf   MemberFacts
	vals [numVars]ref.Val

	cents    int64
	centsSet bool
}

// amountCents is event.amount_cents, computed once per event.
func (f *conditionFacts) amountCents() int64 {
	if !f.centsSet {
		f.cents, f.centsSet = amountCents(f.ev.Amount), true
	}
	return f.cents
}

// ResolveName implements interpreter.Activation.
func (f *conditionFacts) ResolveName(name string) (any, bool) {
	i := varIndex(name)
	if i < 0 {
		return nil, false
	}
	if f.vals[i] == nil {
		f.vals[i] = f.value(i)
	}
	return f.vals[i], true
}

// Parent implements interpreter.Activation: there is none.
func (f *conditionFacts) Parent() interpreter.Activation { return nil }

func varIndex(name string) int {
	switch name {
	case "event.type":
		return varEventType
	case "event.amount":
		return varEventAmount
	case "event.amount_cents":
		return varEventAmountCents
	case "event.channel":
		return varEventChannel
	case "event.partner":
		return varEventPartner
	case "member.plan":
		return varMemberPlan
	case "member.contract":
		return varMemberContract
	case "member.payment_method":
		return varMemberPaymentMethod
	case "member.channel":
		return varMemberChannel
	case "member.tier":
		return varMemberTier
	case "member.segments":
		return varMemberSegments
	case "member.tenure_months":
		return varMemberTenureMonths
	}
	return -1
}

func (f *conditionFacts) value(i int) ref.Val {
	ev, mf := &f.ev, &f.mf
	switch i {
	case varEventType:
		return types.String(ev.Type)
	case varEventAmount:
		return types.String(ev.AmountText)
	case varEventAmountCents:
		return types.Int(f.amountCents())
	case varEventChannel:
		return types.String(ev.Channel)
	case varEventPartner:
		return types.String(ev.Partner)
	case varMemberPlan:
		return types.String(mf.Attributes.Plan)
	case varMemberContract:
		return types.String(mf.Attributes.Contract)
	case varMemberPaymentMethod:
		return types.String(mf.Attributes.PaymentMethod)
	case varMemberChannel:
		return types.String(mf.Channel)
	case varMemberTier:
		return types.String(mf.Tier)
	case varMemberSegments:
		segs := mf.Attributes.Segments
		if segs == nil {
			segs = []string{}
		}
		return types.NewStringList(types.DefaultTypeAdapter, segs)
	case varMemberTenureMonths:
		return types.Int(int64(mf.TenureMonths))
	}
	return types.NewErr("no variable %d", i)
}

// amountCents is the amount in hundredths, the fraction below them cut off
// (towards zero); zero when there is no amount.
func amountCents(amount *big.Rat) int64 {
	if amount == nil {
		return 0
	}
	if v, ok := toMicros(amount); ok {
		return v / 10_000
	}
	x := new(big.Rat).Mul(amount, big.NewRat(100, 1))
	return new(big.Int).Quo(x.Num(), x.Denom()).Int64()
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
