package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/core"
)

// SimulateEvent is an event to evaluate without posting it.
type SimulateEvent struct {
	Member     string     `json:"member"`
	Type       string     `json:"type"`
	Amount     string     `json:"amount"`
	Currency   string     `json:"currency,omitempty"`
	Partner    string     `json:"partner,omitempty"`
	Channel    string     `json:"channel,omitempty"`
	OccurredAt *time.Time `json:"occurred_at,omitempty"`
}

// Simulation is what an event would earn: the points, the rules that fired
// and the rule_version the accrual posting would record.
type Simulation struct {
	Member string `json:"member"`
	core.Evaluation
	OccurredAt time.Time `json:"occurred_at"`
}

// Simulate evaluates an event for a member exactly as an accrual posted now
// would, in a read-only transaction: same rules in force, same caps used so
// far, same tier. Errors: invalid, not_found.
func (l *Ledger) Simulate(ctx context.Context, programCode string,
	in SimulateEvent) (*Simulation, error) {
	if strings.TrimSpace(in.Type) == "" {
		return nil, core.Errorf(core.Invalid, "type", "is required")
	}
	amount, err := core.ParseAmount("amount", in.Amount)
	if err != nil {
		return nil, err
	}
	if amount.Sign() < 0 {
		return nil, core.Errorf(core.Invalid, "amount", "must not be negative")
	}
	var out *Simulation
	err = pgx.BeginTxFunc(ctx, l.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly},
		func(tx pgx.Tx) error {
			t := l.newTxn(tx)
			at := t.now
			if in.OccurredAt != nil {
				at = in.OccurredAt.UTC()
			}
			if err := t.checkOccurred(at); err != nil {
				return err
			}
			prog, err := t.loadProgram(ctx, programCode)
			if err != nil {
				return err
			}
			if in.Currency != "" && !strings.EqualFold(in.Currency, prog.Currency) {
				return core.Errorf(core.Invalid, "currency", "the program counts in %s",
					prog.Currency)
			}
			// As the accrual would refuse it.
			if err := core.CheckAmountDigits("amount", in.Amount, prog.Currency); err != nil {
				return err
			}
			if err := core.CheckRef("member", "a member reference", in.Member); err != nil {
				return err
			}
			id, err := resolveID(ctx, tx, prog.ID, in.Member)
			if err != nil {
				return err
			}
			m, err := scanMember(tx.QueryRow(ctx,
				`SELECT `+memberCols+` FROM members WHERE id = $1`, id))
			if err != nil {
				return fmt.Errorf("read member: %w", err)
			}
			if err := mustBe(m, "member", "active"); err != nil {
				return err
			}
			ev := core.EventFacts{Type: in.Type, Amount: amount, AmountText: in.Amount,
				Channel: in.Channel, Partner: in.Partner, OccurredAt: at}
			// A simulation naming a partner is one of its purchases.
			e, err := t.accrualEval(ctx, prog, m, ev, false, in.Partner != "")
			if err != nil {
				return err
			}
			out = &Simulation{Member: m.ref, Evaluation: e, OccurredAt: at}
			return nil
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Rules lists the latest version of each rule of a program, by code.
// Errors: not_found.
func (l *Ledger) Rules(ctx context.Context, programCode string) ([]core.Rule, error) {
	p, err := readProgram(ctx, l.pool, `code = $1`, programCode)
	if err != nil {
		return nil, err
	}
	rows, err := l.pool.Query(ctx, `SELECT DISTINCT ON (code) body, until, retired
		FROM rules WHERE program_id = $1 ORDER BY code, version DESC`, p.ID)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	return scanRules(rows)
}

// RuleVersions returns every version of one rule, oldest first.
// Errors: not_found.
func (l *Ledger) RuleVersions(ctx context.Context, programCode, code string) ([]core.Rule,
	error) {
	p, err := readProgram(ctx, l.pool, `code = $1`, programCode)
	if err != nil {
		return nil, err
	}
	return readRuleVersions(ctx, l.pool, p.ID, code)
}

type rowsQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func readRuleVersions(ctx context.Context, q rowsQuerier, programID,
	code string) ([]core.Rule, error) {
	rows, err := q.Query(ctx, `SELECT body, until, retired FROM rules
		WHERE program_id = $1 AND code = $2 ORDER BY version`, programID, code)
	if err != nil {
		return nil, fmt.Errorf("read rule versions: %w", err)
	}
	out, err := scanRules(rows)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, core.Errorf(core.NotFound, "code", "no rule %q in this program", code)
	}
	return out, nil
}

func scanRules(rows pgx.Rows) ([]core.Rule, error) {
	defer rows.Close()
	out := []core.Rule{}
	for rows.Next() {
		var body []byte
		var r core.Rule
		var until *time.Time
		var retired bool
		if err := rows.Scan(&body, &until, &retired); err != nil {
			return nil, fmt.Errorf("scan rule: %w", err)
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, fmt.Errorf("decode rule: %w", err)
		}
		r.Until, r.Retired = until, retired
		out = append(out, r)
	}
	return out, rows.Err()
}

// MemberTier reviews a member's tier as of at without changing it: the
// level its qualification reaches now, and the recorded history.
// Errors: not_found.
func (l *Ledger) MemberTier(ctx context.Context, programCode, ref string,
	at time.Time) (*core.TierStatus, error) {
	var out *core.TierStatus
	err := pgx.BeginTxFunc(ctx, l.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly},
		func(tx pgx.Tx) error {
			t := l.newTxn(tx)
			prog, err := t.loadProgram(ctx, programCode)
			if err != nil {
				return err
			}
			id, err := resolveID(ctx, tx, prog.ID, ref)
			if err != nil {
				return err
			}
			tiers, err := t.programTiers(ctx, prog.ID)
			if err != nil {
				return err
			}
			if tiers == nil {
				return core.Errorf(core.NotFound, "tiers", "the program has no tiers")
			}
			from := tiers.WindowStart(at)
			q, spend, err := t.tierQualification(ctx, tiers, id, at)
			if err != nil {
				return err
			}
			out = &core.TierStatus{Qualification: q, Basis: core.TierBasisPoints,
				Spend: spendText(spend), WindowDays: tiers.WindowDays, Since: from.UTC(),
				History: []core.TierChange{}}
			if tiers.BySpend() {
				out.Basis = core.TierBasisSpend
			}
			if lvl := tiers.Reached(q, spend); lvl != nil {
				out.Tier = lvl.Code
			}
			rows, err := tx.Query(ctx, `SELECT from_tier, to_tier, qualification, changed_at,
				reason, spend::text FROM member_tiers WHERE member_id = $1 ORDER BY id`, id)
			if err != nil {
				return fmt.Errorf("read tier history: %w", err)
			}
			defer rows.Close()
			for rows.Next() {
				var c core.TierChange
				var spend *string
				if err := rows.Scan(&c.From, &c.To, &c.Qualification, &c.ChangedAt,
					&c.Reason, &spend); err != nil {
					return err
				}
				if spend != nil {
					if r, ok := new(big.Rat).SetString(*spend); ok {
						c.Spend = core.FormatDecimal(r)
					}
				}
				out.History = append(out.History, c)
			}
			return rows.Err()
		})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "member", "no member %q", ref)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}
