package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// compiledRules caches compiled rule versions for the whole process. A
// version never changes once stored, so (program id, code, version) names
// its compiled form for ever.
var compiledRules = core.NewRuleCache()

// programRules keeps, for the whole process, each program's rules as last
// read: every version, compiled, with the windows in which it is in force.
// An entry is good for as long as the program's rules revision (migration
// 0014) has not moved; a transaction reads the revision once and reloads
// the program's rules when it differs.
var programRules = ruleSnapshots{m: map[string]*ruleSnapshot{}}

type ruleSnapshots struct {
	mu sync.RWMutex
	m  map[string]*ruleSnapshot
}

// get returns the program's rules if the cache has them at revision rev.
func (c *ruleSnapshots) get(programID string, rev int64) *ruleSnapshot {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if s := c.m[programID]; s != nil && s.revision == rev {
		return s
	}
	return nil
}

func (c *ruleSnapshots) put(programID string, s *ruleSnapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[programID] = s
}

// ruleSnapshot is every version of a program's rules at one revision, with
// the rule sets in force between any two instants where a version's force
// starts or ends, built as events need them.
type ruleSnapshot struct {
	revision int64
	// versions by code, newest first.
	versions map[string][]ruleVersion
	// types are the event types some version names ("*" for any).
	types map[string]bool
	byRef map[ruleKey]*core.CompiledRule
	// bounds are the instants (microseconds since 1970) at which some
	// version's force starts or ends, ascending: between two of them the
	// rules in force do not change.
	bounds []int64

	mu   sync.Mutex
	sets map[setKey]*core.RuleSet
}

type ruleKey struct {
	code    string
	version int
}

type setKey struct {
	span      int
	eventType string
}

// ruleVersion is one stored version and its force: from (inclusive) to
// (exclusive), in microseconds, the earliest of valid_to and until ending
// it.
type ruleVersion struct {
	rule      *core.CompiledRule
	eventType string
	from, to  int64
}

// maxRuleSets bounds the rule sets a snapshot keeps; past it they are built
// again as needed.
const maxRuleSets = 4096

// inForce returns the rules in force at at for events of eventType: for each
// code, its newest version in force then, when it is of that event type (or
// "*"). Where a rule's versions overlap, the newest is the rule, whatever
// its event type: a version of another type, or one bounded in time,
// replaces the older ones while it is in force, and they apply again
// outside it.
func (s *ruleSnapshot) inForce(eventType string, at time.Time) *core.RuleSet {
	// PostgreSQL keeps microseconds: compare at that precision.
	us := at.UnixMicro()
	span, _ := slices.BinarySearch(s.bounds, us+1) // bounds at or before us
	key := setKey{span: span, eventType: eventType}
	s.mu.Lock()
	set, ok := s.sets[key]
	s.mu.Unlock()
	if ok {
		return set
	}
	var rules []*core.CompiledRule
	for _, versions := range s.versions {
		for _, v := range versions {
			if v.from <= us && us < v.to {
				if v.eventType == eventType || v.eventType == "*" {
					rules = append(rules, v.rule)
				}
				break
			}
		}
	}
	set = core.NewRuleSet(rules)
	s.mu.Lock()
	if len(s.sets) >= maxRuleSets {
		clear(s.sets)
	}
	s.sets[key] = set
	s.mu.Unlock()
	return set
}

// ruleRevisionSQL reads a program's rules revision; no row means the
// program never had a rule.
const ruleRevisionSQL = `SELECT revision FROM rule_revisions WHERE program_id = $1`

// ruleSnapshotSQL reads every version of a program's rules with the
// revision they make, in one statement so that both agree.
const ruleSnapshotSQL = `SELECT v.revision, r.code, r.version, r.event_type, r.body,
		r.valid_from, r.valid_to, r.until
	FROM rule_revisions v LEFT JOIN rules r ON r.program_id = v.program_id
	WHERE v.program_id = $1
	ORDER BY r.code, r.version DESC`

// noRules is the snapshot of a program that never had a rule.
var noRules = &ruleSnapshot{}

// programRuleSnapshot returns the program's rules as of this transaction
// (noRules when it never had any). It reads the revision once per
// transaction and the rules only when the process has no copy at that
// revision. A transaction that changed rules itself keeps what it reads
// to itself: the change may yet roll back.
func (t *txn) programRuleSnapshot(ctx context.Context, programID string) (*ruleSnapshot,
	error) {
	if s, ok := t.ruleCache.snapshots[programID]; ok {
		return s, nil
	}
	var rev int64
	err := t.tx.QueryRow(ctx, ruleRevisionSQL, programID).Scan(&rev)
	if errors.Is(err, pgx.ErrNoRows) {
		return t.ruleSnapshotAt(ctx, programID, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("read rules revision: %w", err)
	}
	return t.ruleSnapshotAt(ctx, programID, &rev)
}

// ruleSnapshotAt returns the program's rules at revision rev, just read by
// the transaction (nil: the program never had a rule), and keeps them for
// the rest of the transaction. Only a revision the process has no copy of
// costs a read of the rules.
func (t *txn) ruleSnapshotAt(ctx context.Context, programID string, rev *int64) (*ruleSnapshot,
	error) {
	if rev == nil {
		t.ruleCache.keep(programID, noRules)
		return noRules, nil
	}
	s := programRules.get(programID, *rev)
	if s == nil {
		var err error
		if s, err = t.loadRuleSnapshot(ctx, programID); err != nil {
			return nil, err
		}
		if !t.ruleCache.changed {
			programRules.put(programID, s)
		}
	}
	t.ruleCache.keep(programID, s)
	return s, nil
}

// loadRuleSnapshot reads and compiles every version of a program's rules.
func (t *txn) loadRuleSnapshot(ctx context.Context, programID string) (*ruleSnapshot, error) {
	rows, err := t.tx.Query(ctx, ruleSnapshotSQL, programID)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	defer rows.Close()
	var s *ruleSnapshot
	bounds := map[int64]bool{}
	for rows.Next() {
		var rev int64
		var code, eventType *string
		var version *int
		var body []byte
		var validFrom, validTo, until *time.Time
		if err := rows.Scan(&rev, &code, &version, &eventType, &body, &validFrom, &validTo,
			&until); err != nil {
			return nil, fmt.Errorf("scan rule: %w", err)
		}
		if s == nil {
			s = &ruleSnapshot{revision: rev, versions: map[string][]ruleVersion{},
				types: map[string]bool{}, byRef: map[ruleKey]*core.CompiledRule{},
				sets: map[setKey]*core.RuleSet{}}
		}
		if code == nil {
			continue // a program whose rules were all deleted
		}
		key := programID + "/" + *code + "/" + strconv.Itoa(*version)
		var r core.Rule
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, fmt.Errorf("decode rule %s: %w", key, err)
		}
		r.Until, r.Retired = nil, false
		c, err := compiledRules.Get(key, r)
		if err != nil {
			return nil, fmt.Errorf("compile stored rule %s: %w", key, err)
		}
		v := ruleVersion{rule: c, eventType: *eventType, from: math.MinInt64, to: math.MaxInt64}
		if validFrom != nil {
			v.from = validFrom.UnixMicro()
			bounds[v.from] = true
		}
		for _, end := range []*time.Time{validTo, until} {
			if end != nil && end.UnixMicro() < v.to {
				v.to = end.UnixMicro()
			}
		}
		if v.to != math.MaxInt64 {
			bounds[v.to] = true
		}
		s.versions[*code] = append(s.versions[*code], v)
		s.types[v.eventType] = true
		s.byRef[ruleKey{*code, *version}] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	if s == nil {
		return noRules, nil // the revision row went in between: no rules now
	}
	s.bounds = slices.Sorted(maps.Keys(bounds))
	return s, nil
}

// RuleUpsert is the payload of a rule.upsert command: the rule, and whether
// the caller meant to create it (refused if the code exists) or update it
// (refused if it does not). An empty mode does either.
type RuleUpsert struct {
	core.Rule
	Mode string `json:"mode,omitempty"`
}

// upsertRule stores a new version of a rule. The first version is in force
// from its valid_from (always, when unset); a later one from its valid_from
// or, when unset, from the command's occurred_at, and the version it
// replaces stops being in force at that moment.
func (t *txn) upsertRule(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var in RuleUpsert
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	r := in.Rule
	if r.Version != 0 || r.Until != nil || r.Retired {
		return nil, core.Errorf(core.Invalid, "version", "version, until and retired are "+
			"assigned by Puntos")
	}
	if r.Rounding == "" {
		r.Rounding = core.RoundDown
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}

	// The latest version, locked so that two updates number in turn.
	var last int
	err := t.tx.QueryRow(ctx, `SELECT version FROM rules WHERE program_id = $1 AND code = $2
		ORDER BY version DESC LIMIT 1 FOR UPDATE`, prog.ID, r.Code).Scan(&last)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("read rule: %w", err)
	}
	switch {
	case in.Mode == "create" && last > 0:
		return nil, core.Errorf(core.Conflict, "code", "rule %q exists; update it", r.Code)
	case in.Mode == "update" && last == 0:
		return nil, core.Errorf(core.NotFound, "code", "no rule %q in this program", r.Code)
	case in.Mode != "" && in.Mode != "create" && in.Mode != "update":
		return nil, core.Errorf(core.Invalid, "mode", "must be create or update")
	}
	if last > 0 && r.ValidFrom == nil {
		at := cmd.OccurredAt
		if at.IsZero() {
			at = t.now
		}
		at = at.UTC()
		r.ValidFrom = &at
		if r.ValidTo != nil && !core.Later(*r.ValidTo, at) {
			return nil, core.Errorf(core.Invalid, "valid_to", "must be after valid_from, "+
				"which is now (%s) when left out: the new version would end before it "+
				"starts", at.Format(time.RFC3339))
		}
	}
	r.Version = last + 1
	if last > 0 && r.ValidTo == nil {
		// A version without an end replaces the rule from its start: the
		// earlier versions end there (the newest in force is the rule
		// anyway, see inForce; until says so). One bounded in time
		// replaces them only while it is in force, and ends none.
		_, err := t.tx.Exec(ctx, `UPDATE rules SET until = $3
			WHERE program_id = $1 AND code = $2 AND (until IS NULL OR until > $3)`,
			prog.ID, r.Code, *r.ValidFrom)
		if err != nil {
			return nil, fmt.Errorf("end previous rule versions: %w", err)
		}
	}
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(ctx, `INSERT INTO rules (program_id, code, version, event_type, body,
			valid_from, valid_to, created_at, source, txn_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, prog.ID, r.Code, r.Version,
		r.EventType, body, r.ValidFrom, r.ValidTo, t.now, cmd.Source, cmd.TxnID)
	if err != nil {
		return nil, fmt.Errorf("insert rule: %w", err)
	}
	return r, nil
}

// retireRule ends the force of a rule at the given moment (default: the
// command's occurred_at): its latest version and any earlier one still in
// force then. Events that occurred before it keep
// earning by the rule; a later upsert starts a new version.
func (t *txn) retireRule(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var in core.RuleRetire
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	at := cmd.OccurredAt
	if in.At != nil {
		at = *in.At
	}
	if at.IsZero() {
		at = t.now
	}
	var version int
	var retired bool
	err := t.tx.QueryRow(ctx, `SELECT version, retired FROM rules
		WHERE program_id = $1 AND code = $2 ORDER BY version DESC LIMIT 1 FOR UPDATE`,
		prog.ID, in.Code).Scan(&version, &retired)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "code", "no rule %q in this program", in.Code)
	}
	if err != nil {
		return nil, fmt.Errorf("read rule: %w", err)
	}
	if retired {
		return nil, core.Errorf(core.Conflict, "code", "rule %q is already retired", in.Code)
	}
	// Every version still in force after at ends then: the latest may be
	// one scheduled for later, with the one before it in force until then.
	_, err = t.tx.Exec(ctx, `UPDATE rules SET retired = retired OR version = $3,
			until = CASE WHEN until IS NULL OR until > $4 THEN $4 ELSE until END
		WHERE program_id = $1 AND code = $2 AND (version = $3 OR until IS NULL OR until > $4)`,
		prog.ID, in.Code, version, at.UTC())
	if err != nil {
		return nil, fmt.Errorf("retire rule: %w", err)
	}
	versions, err := readRuleVersions(ctx, t.tx, prog.ID, in.Code)
	if err != nil {
		return nil, err
	}
	return versions[len(versions)-1], nil
}

// setAttributes replaces a member's attributes.
func (t *txn) setAttributes(ctx context.Context, m *member, cmd *bus.Command) (any, error) {
	var in core.MemberAttributes
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if err := mustBe(m, "member", "active", "suspended"); err != nil {
		return nil, err
	}
	if err := t.storeAttributes(ctx, m.id, &in); err != nil {
		return nil, err
	}
	return in, nil
}

func (t *txn) storeAttributes(ctx context.Context, memberID string,
	a *core.MemberAttributes) error {
	if err := a.Validate(); err != nil {
		return err
	}
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(ctx, `UPDATE members SET attributes = $2, updated_at = $3 WHERE id = $1`,
		memberID, body, t.now)
	if err != nil {
		return fmt.Errorf("store attributes: %w", err)
	}
	return nil
}

// setTiers replaces a program's tier levels. Members move to their new
// level at their next review (an accrual or a tier read).
func (t *txn) setTiers(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var in core.Tiers
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(ctx, `INSERT INTO program_tiers (program_id, body, updated_at)
		VALUES ($1, $2, $3) ON CONFLICT (program_id) DO UPDATE
		SET body = EXCLUDED.body, updated_at = EXCLUDED.updated_at`, prog.ID, body, t.now)
	if err != nil {
		return nil, fmt.Errorf("store tiers: %w", err)
	}
	return in, nil
}

// accrualEval is how many points an event earns a member and why. Posting
// and simulation both call it, so they always agree; lock is set when
// posting, to serialise program budgets.
func (t *txn) accrualEval(ctx context.Context, prog *program, m *member, ev core.EventFacts,
	lock, byPartner bool) (core.Evaluation, error) {
	snap, err := t.programRuleSnapshot(ctx, prog.ID)
	if err != nil {
		return core.Evaluation{}, err
	}
	if len(snap.versions) == 0 || snap.flatRateFor(ev.Type, byPartner) {
		return standInEval(prog, ev)
	}
	if err := snap.knows(ev.Type); err != nil {
		return core.Evaluation{}, err
	}
	rules := snap.inForce(ev.Type, ev.OccurredAt)
	mf, err := t.memberFacts(ctx, prog, m, ev.OccurredAt)
	if err != nil {
		return core.Evaluation{}, err
	}
	usage := func(r *core.CompiledRule, day, month string) (core.Usage, error) {
		return t.ruleUsage(ctx, prog.ID, m.id, r.Code, day, month, lock && r.Caps.Budget > 0)
	}
	return rules.Evaluate(ev, *mf, prog.Location(), usage)
}

// flatRateFor reports whether events of eventType earn the program's flat
// rate although it has rules: a purchase a partner reports (byPartner: the
// command's source is a partner's key), when no rule names its type. Any
// other caller sending that type is held to the rules like any type.
func (s *ruleSnapshot) flatRateFor(eventType string, byPartner bool) bool {
	return byPartner && eventType == core.EventPartnerPurchase && !s.types[eventType] &&
		!s.types["*"]
}

// knows refuses an event type that no version of the program's rules
// names, in force or not: a mistyped or unconfigured type would otherwise
// be answered ok with no points. The refusal names the field as the
// callers send it (type; SOAP's EventType) and lists the types there are.
func (s *ruleSnapshot) knows(eventType string) error {
	if s.types[eventType] || s.types["*"] {
		return nil
	}
	return core.Errorf(core.Invalid, "type", "no rule of the program names event "+
		"type %q; its rules name %s", eventType, strings.Join(slices.Sorted(maps.Keys(s.types)),
		", "))
}

// standInEval is the program's flat rate in force when the event
// happened, used while the program has no rules.
func standInEval(prog *program, ev core.EventFacts) (core.Evaluation, error) {
	text, rounding := prog.rateAt(ev.OccurredAt)
	rate, err := core.ParseRate("points_per_unit", text)
	if err != nil {
		return core.Evaluation{}, err
	}
	pts, err := core.Convert(ev.Amount, rate, rounding)
	if err != nil {
		return core.Evaluation{}, err
	}
	ref := "program-rate:" + text + ":" + string(rounding)
	out := core.Evaluation{Points: pts, RuleVersion: ref, Fired: []core.Fired{}}
	out.Day, out.Month = core.Windows(ev.OccurredAt, prog.Location())
	if pts > 0 {
		out.Fired = append(out.Fired, core.Fired{Code: "program-rate", Ref: ref,
			Computed: pts, Points: pts})
	}
	return out, nil
}

// accrualPoints evaluates an accrual for posting: it counts what capped
// rules gave and reviews the member's tier, in the command's transaction.
func (t *txn) accrualPoints(ctx context.Context, prog *program, m *member, cmd *bus.Command,
	in core.Accrue, amount *big.Rat) (core.Points, string, error) {
	ev := core.EventFacts{Type: in.EventType, Amount: amount, AmountText: in.Amount,
		Channel: cmd.Channel, Partner: in.Partner, OccurredAt: cmd.OccurredAt}
	e, err := t.accrualEval(ctx, prog, m, ev, true,
		strings.HasPrefix(cmd.Source, core.PartnerSourcePrefix))
	if err != nil {
		return 0, "", err
	}
	if err := t.countUsage(ctx, prog.ID, m.id, e); err != nil {
		return 0, "", err
	}
	if e.Points > 0 {
		// The accrual is posted right after this; the review counts it.
		if _, err := t.reviewTier(ctx, prog.ID, m.id, cmd.OccurredAt, e.Points, amount,
			"accrual "+cmd.TxnID); err != nil {
			return 0, "", err
		}
	}
	return e.Points, e.RuleVersion, nil
}

// memberFacts reads what conditions know of m at the moment at.
func (t *txn) memberFacts(ctx context.Context, prog *program, m *member,
	at time.Time) (*core.MemberFacts, error) {
	var attrs []byte
	err := t.tx.QueryRow(ctx, `SELECT attributes FROM members WHERE id = $1`, m.id).Scan(&attrs)
	if err != nil {
		return nil, fmt.Errorf("read attributes: %w", err)
	}
	mf, err := plainMemberFacts(prog, m, attrs, at)
	if err != nil {
		return nil, err
	}
	tiers, err := t.programTiers(ctx, prog.ID)
	if err != nil || tiers == nil {
		return mf, err
	}
	q, spend, err := t.tierQualification(ctx, tiers, m.id, at)
	if err != nil {
		return nil, err
	}
	if lvl := tiers.Reached(q, spend); lvl != nil {
		mf.Tier = lvl.Code
		mf.TierMultiplier, _ = new(big.Rat).SetString(lvl.Multiplier)
	}
	return mf, nil
}

// plainMemberFacts is what conditions know of m at the moment at, tiers
// aside, from its stored attributes.
func plainMemberFacts(prog *program, m *member, attrs []byte,
	at time.Time) (*core.MemberFacts, error) {
	mf := &core.MemberFacts{Channel: m.channel,
		TenureMonths: core.TenureMonths(m.enrolled, at, prog.Location())}
	if err := json.Unmarshal(attrs, &mf.Attributes); err != nil {
		return nil, fmt.Errorf("decode attributes: %w", err)
	}
	return mf, nil
}

// ruleUsage reads what a capped rule gave in an event's windows. When lock
// is set the program budget's row is created if need be and locked, so that
// two batches cannot both spend its last points. Per-member windows need no
// lock: the member's row lock already orders its accruals.
//
// BUG(rules): here budget rows are locked in the order events meet them.
// The set-based path (batch.go) locks a run's budget rows up front in rule
// code order, so two runs never wait on each other in a cycle; but an
// accrual this path posts (the first use of a budget, say) can still meet
// two budgeted rules in the opposite order of another batch and deadlock.
// PostgreSQL aborts one and the consumer retries its batch, so nothing is
// lost, but budgeted rules serialise accruals across partitions.
func (t *txn) ruleUsage(ctx context.Context, programID, memberID, code, day, month string,
	lock bool) (core.Usage, error) {
	var u core.Usage
	if lock {
		_, err := t.tx.Exec(ctx, `INSERT INTO rule_counters (program_id, rule_code, scope, win,
			points) VALUES ($1, $2, '', 'budget', 0) ON CONFLICT DO NOTHING`, programID, code)
		if err != nil {
			return u, fmt.Errorf("make budget counter: %w", err)
		}
	}
	sql := `SELECT scope, win, points FROM rule_counters
		WHERE program_id = $1 AND rule_code = $2
		  AND ((scope = $3 AND win IN ($4, $5, $6)) OR (scope = '' AND win = 'budget'))`
	if lock {
		sql += ` FOR UPDATE`
	}
	rows, err := t.tx.Query(ctx, sql, programID, code, memberID, "d:"+day, "m:"+month,
		"y:"+core.YearOf(month))
	if err != nil {
		return u, fmt.Errorf("read rule counters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var scope, win string
		var p int64
		if err := rows.Scan(&scope, &win, &p); err != nil {
			return u, err
		}
		switch {
		case scope == "":
			u.Budget = core.Points(p)
		case win == "d:"+day:
			u.Day = core.Points(p)
		case win == "m:"+month:
			u.Month = core.Points(p)
		default:
			u.Year = core.Points(p)
		}
	}
	return u, rows.Err()
}

// countUsage adds what each capped rule gave to its counters.
// TODO(rules): a reversal of the accrual does not give the points back to
// the counters; caps count what was granted, reversed or not.
func (t *txn) countUsage(ctx context.Context, programID, memberID string,
	e core.Evaluation) error {
	caps := func(code string, version int) (core.Caps, error) {
		return t.ruleCaps(ctx, programID, code, version)
	}
	adds, err := usageAdds(memberID, e, caps)
	if err != nil {
		return err
	}
	for _, a := range adds {
		_, err := t.tx.Exec(ctx, `INSERT INTO rule_counters (program_id, rule_code, scope,
				win, points) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (program_id, rule_code, scope, win)
			DO UPDATE SET points = rule_counters.points + EXCLUDED.points`,
			programID, a.code, a.scope, a.win, a.points)
		if err != nil {
			return fmt.Errorf("count rule usage: %w", err)
		}
	}
	return nil
}

// counterAdd is what a rule that fired adds to one of its counters.
type counterAdd struct {
	code, scope, win string
	points           int64
}

// usageAdds lists what an evaluation adds to the counters of the capped
// rules that gave points, caps telling each version's caps.
func usageAdds(memberID string, e core.Evaluation,
	caps func(code string, version int) (core.Caps, error)) ([]counterAdd, error) {
	var out []counterAdd
	for _, f := range e.Fired {
		if f.Points <= 0 || f.Version == 0 {
			continue
		}
		c, err := caps(f.Code, f.Version)
		if err != nil {
			return nil, err
		}
		add := func(scope, win string) {
			out = append(out, counterAdd{f.Code, scope, win, int64(f.Points)})
		}
		if c.PerDay > 0 {
			add(memberID, "d:"+e.Day)
		}
		if c.PerMonth > 0 {
			add(memberID, "m:"+e.Month)
		}
		if c.PerYear > 0 {
			add(memberID, "y:"+core.YearOf(e.Month))
		}
		if c.Budget > 0 {
			add("", "budget")
		}
	}
	return out, nil
}

// ruleCaps returns the caps of a rule version: from the program's rules as
// this transaction read them, or from the table.
func (t *txn) ruleCaps(ctx context.Context, programID, code string,
	version int) (core.Caps, error) {
	if s := t.ruleCache.snapshots[programID]; s != nil {
		if c, ok := s.byRef[ruleKey{code, version}]; ok {
			return c.Caps, nil
		}
	}
	var caps core.Caps
	err := t.tx.QueryRow(ctx, `SELECT body->'caps' FROM rules
		WHERE program_id = $1 AND code = $2 AND version = $3`, programID, code,
		version).Scan(&caps)
	if err != nil {
		return caps, fmt.Errorf("read rule caps: %w", err)
	}
	return caps, nil
}

// programTiers reads a program's tier levels, nil when it has none.
func (t *txn) programTiers(ctx context.Context, programID string) (*core.Tiers, error) {
	if tiers, ok := t.ruleCache.tiers[programID]; ok {
		return tiers, nil
	}
	tiers, err := t.readTiers(ctx, programID)
	if err == nil {
		if t.ruleCache.tiers == nil {
			t.ruleCache.tiers = map[string]*core.Tiers{}
		}
		t.ruleCache.tiers[programID] = tiers
	}
	return tiers, err
}

// ruleCache keeps, for one batch transaction, each program's rules and
// tiers, so that each accrual does
// not read them again. Any rules or tiers command of the batch clears it
// and sets changed.
type ruleCache struct {
	snapshots map[string]*ruleSnapshot
	tiers     map[string]*core.Tiers
	// changed is set once the transaction has run a command of the rules
	// engine: what it reads from then on stays out of programRules.
	changed bool
}

func (c *ruleCache) keep(programID string, s *ruleSnapshot) {
	if c.snapshots == nil {
		c.snapshots = map[string]*ruleSnapshot{}
	}
	c.snapshots[programID] = s
}

func (t *txn) readTiers(ctx context.Context, programID string) (*core.Tiers, error) {
	var tiers core.Tiers
	err := t.tx.QueryRow(ctx, `SELECT body FROM program_tiers WHERE program_id = $1`,
		programID).Scan(&tiers)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read tiers: %w", err)
	}
	if len(tiers.Levels) == 0 {
		return nil, nil
	}
	return &tiers, nil
}

// qualification is what a member accrued with occurred_at in (from, to]:
// accrual postings that no reversal undid. Redemptions and other debits do
// not lower it.
func (t *txn) qualification(ctx context.Context, memberID string, from,
	to time.Time) (core.Points, error) {
	var q int64
	err := t.tx.QueryRow(ctx, `SELECT COALESCE(sum(p.points + p.pending_delta), 0)
		FROM postings p
		WHERE p.member_id = $1 AND p.kind = 'accrual'
		  AND p.occurred_at > $2 AND p.occurred_at <= $3
		  AND NOT EXISTS (SELECT 1 FROM postings r WHERE r.reverses_id = p.id)`,
		memberID, from, to).Scan(&q)
	if err != nil {
		return 0, fmt.Errorf("read qualification: %w", err)
	}
	return core.Points(q), nil
}

// spendQualification is the money amount of the accruals qualification
// counts (see qualification), as an exact decimal.
func (t *txn) spendQualification(ctx context.Context, memberID string, from,
	to time.Time) (*big.Rat, error) {
	var text string
	err := t.tx.QueryRow(ctx, `SELECT COALESCE(sum(a.amount), 0)::text
		FROM postings p JOIN accrual_amounts a ON a.posting_id = p.id
		WHERE p.member_id = $1 AND p.kind = 'accrual'
		  AND p.occurred_at > $2 AND p.occurred_at <= $3
		  AND NOT EXISTS (SELECT 1 FROM postings r WHERE r.reverses_id = p.id)`,
		memberID, from, to).Scan(&text)
	if err != nil {
		return nil, fmt.Errorf("read spend qualification: %w", err)
	}
	spend, ok := new(big.Rat).SetString(text)
	if !ok {
		return nil, fmt.Errorf("read spend qualification: bad decimal %q", text)
	}
	return spend, nil
}

// tierQualification is a member's qualification in the tier window ending
// at at: its points, and its spend when the tiers' basis is spend (nil
// otherwise).
func (t *txn) tierQualification(ctx context.Context, tiers *core.Tiers, memberID string,
	at time.Time) (core.Points, *big.Rat, error) {
	from := tiers.WindowStart(at)
	q, err := t.qualification(ctx, memberID, from, at)
	if err != nil || !tiers.BySpend() {
		return q, nil, err
	}
	spend, err := t.spendQualification(ctx, memberID, from, at)
	return q, spend, err
}

// recordAccrualAmount keeps the money amount of a posted accrual for
// qualification by spend.
func (t *txn) recordAccrualAmount(ctx context.Context, postingID int64,
	amount *big.Rat) error {
	_, err := t.tx.Exec(ctx, `INSERT INTO accrual_amounts (posting_id, amount)
		VALUES ($1, $2::numeric)`, postingID, amount.FloatString(6))
	if err != nil {
		return fmt.Errorf("record accrual amount: %w", err)
	}
	return nil
}

// spendText prints a spend for the tier history and status, nil as "".
func spendText(spend *big.Rat) string {
	if spend == nil {
		return ""
	}
	return core.FormatDecimal(spend)
}

// reviewTier sets a member's tier to the level its qualification reaches
// now, with extra points and spend not yet posted that occurred at at,
// recording a change in the member's tier history. A late event (at in the
// past) counts when it falls inside the window that ends now: the tier
// recorded is the member's tier now, not the one it had when the event
// occurred. It returns the level's code.
func (t *txn) reviewTier(ctx context.Context, programID, memberID string, at time.Time,
	extra core.Points, extraSpend *big.Rat, reason string) (string, error) {
	tiers, err := t.programTiers(ctx, programID)
	if err != nil || tiers == nil {
		return "", err
	}
	if at.Before(t.now) {
		if !at.After(tiers.WindowStart(t.now)) { // the window is (start, now]
			extra, extraSpend = 0, nil
		}
		at = t.now
	}
	q, spend, err := t.tierQualification(ctx, tiers, memberID, at)
	if err != nil {
		return "", err
	}
	q += extra
	if spend != nil && extraSpend != nil {
		spend.Add(spend, extraSpend)
	}
	next := ""
	if lvl := tiers.Reached(q, spend); lvl != nil {
		next = lvl.Code
	}
	var cur string
	err = t.tx.QueryRow(ctx, `SELECT tier FROM members WHERE id = $1`, memberID).Scan(&cur)
	if err != nil {
		return "", fmt.Errorf("read tier: %w", err)
	}
	if cur == next {
		return cur, nil
	}
	if _, err := t.tx.Exec(ctx, `UPDATE members SET tier = $2 WHERE id = $1`, memberID,
		next); err != nil {
		return "", fmt.Errorf("set tier: %w", err)
	}
	var spendArg any
	if spend != nil {
		spendArg = spendText(spend)
	}
	_, err = t.tx.Exec(ctx, `INSERT INTO member_tiers (member_id, from_tier, to_tier,
		qualification, changed_at, reason, spend) VALUES ($1, $2, $3, $4, $5, $6, $7::numeric)`,
		memberID, cur, next, int64(q), at, reason, spendArg)
	if err != nil {
		return "", fmt.Errorf("record tier change: %w", err)
	}
	return next, nil
}

// rulesCmd applies a command of the rules engine.
func (t *txn) rulesCmd(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	changed := t.ruleCache.changed || cmd.Kind == core.KindRuleUpsert ||
		cmd.Kind == core.KindRuleRetire
	t.ruleCache = ruleCache{changed: changed}
	switch cmd.Kind {
	case core.KindRuleUpsert:
		return t.upsertRule(ctx, prog, cmd)
	case core.KindRuleRetire:
		return t.retireRule(ctx, prog, cmd)
	case core.KindTiersSet:
		return t.setTiers(ctx, prog, cmd)
	}
	if !core.ValidRef(cmd.Member) {
		return nil, core.Errorf(core.Invalid, "member", "must be a member reference")
	}
	m, err := lockMember(ctx, t.tx, prog.ID, cmd.Member)
	if err != nil {
		return nil, err
	}
	return t.setAttributes(ctx, m, cmd)
}
