package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// dispatchAudited applies cmd as dispatch does and, when it carries an
// audit note (a parameter change made in the back office), writes the audit
// entry: who (the command's actor), when, and the parameter as it was before
// and as it is after, secrets masked. It runs inside the command's
// savepoint, so the change and its entry are stored together or not at all:
// a refusal undoes both. An entry PostgreSQL refuses outright (a value or a
// constraint it rejects every time) refuses the command as an internal
// fault, so that the back office hears of it; any other failure fails the
// whole batch, which is then tried again.
func (t *txn) dispatchAudited(ctx context.Context, cmd *bus.Command) (any, error) {
	if cmd.Audit == nil {
		return t.dispatch(ctx, cmd)
	}
	before, err := t.paramState(ctx, cmd)
	if err != nil {
		return nil, err
	}
	if m, ok := before.(auditedMember); ok {
		m.TxnID, m.Request = "", nil // the request goes with the after
		before = m
	}
	data, err := t.dispatch(ctx, cmd)
	if err != nil {
		return nil, err
	}
	after, err := t.paramState(ctx, cmd)
	if err != nil {
		return nil, err
	}
	actor := cmd.Actor
	if cmd.Audit.Actor != "" {
		actor = cmd.Audit.Actor
	}
	// A program is saved by one upsert, created or changed: the entry of
	// one that did not exist before says so.
	action := cmd.Audit.Action
	if action == "program.updated" && before == nil {
		action = "program.created"
	}
	_, err = t.tx.Exec(ctx, insertAudit, t.now, actor, action, cmd.Audit.Target,
		before, after)
	if err != nil {
		return nil, auditFailure(err)
	}
	return data, nil
}

// auditActor names who made cmd in the audit log as REST calls are named:
// the calling system, with the person of X-Actor.
func auditActor(cmd *bus.Command) string {
	actor := "api:" + cmd.Source
	if cmd.Actor != "" {
		actor += " (" + cmd.Actor + ")"
	}
	return actor
}

// auditFailure is the error of an audit entry PostgreSQL did not store: a
// refusal of the command when it would fail the same way every time (SQLSTATE
// class 22, data exception, or 23, integrity constraint), else the error
// itself.
func auditFailure(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 &&
		(pgErr.Code[:2] == "22" || pgErr.Code[:2] == "23") {
		return core.Errorf(core.Internal, "audit", "the audit entry could not be written (%s)",
			pgErr.Message)
	}
	return fmt.Errorf("write audit entry: %w", err)
}

const insertAudit = `INSERT INTO bo_audit (at, actor, action, target, before, after)
	VALUES ($1, $2, $3, $4, $5, $6)`

// paramState reads the parameter that cmd changes, as the audit log shows
// it: nil when it does not exist yet. Secrets are masked.
func (t *txn) paramState(ctx context.Context, cmd *bus.Command) (any, error) {
	prog, err := readProgram(ctx, t.tx, `code = $1`, cmd.Program)
	if core.KindOf(err) == core.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	switch cmd.Kind {
	case core.KindAdjust, core.KindReverse, core.KindTransfer, core.KindMerge,
		core.KindSuspend, core.KindReactivate, core.KindClose, core.KindConversionResolve:
		return t.memberState(ctx, prog.ID, cmd)
	case core.KindProgramUpsert:
		return prog.Program, nil
	case core.KindTiersSet:
		tiers, err := t.readTiers(ctx, prog.ID)
		if err != nil || tiers == nil {
			return nil, err
		}
		return tiers, nil
	case core.KindRuleUpsert, core.KindRuleRetire:
		var in struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(cmd.Payload, &in) != nil || !core.ValidCode(in.Code) {
			return nil, nil
		}
		versions, err := readRuleVersions(ctx, t.tx, prog.ID, in.Code)
		if err != nil {
			return nilIfMissing(err)
		}
		return versions[len(versions)-1], nil
	case core.KindRewardUpsert:
		var in struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal(cmd.Payload, &in)
		r, err := readReward(ctx, t.tx, prog.ID, in.Code, false)
		if err != nil {
			return nilIfMissing(err)
		}
		return r.Reward, nil
	case core.KindPartnerUpsert, core.KindPartnerKeyCreate, core.KindPartnerKeyRevoke:
		var in struct {
			Code    string `json:"code"`
			Partner string `json:"partner"`
		}
		_ = json.Unmarshal(cmd.Payload, &in)
		if in.Partner == "" {
			in.Partner = in.Code
		}
		p, keys, err := readPartner(ctx, t.tx, prog.Code, in.Partner)
		if err != nil {
			return nilIfMissing(err)
		}
		return PartnerView{Partner: *p, Keys: keys}, nil
	case core.KindExternalUpsert:
		e, err := scanExternal(t.tx.QueryRow(ctx, `SELECT `+externalCols+`
			FROM external_programs e WHERE e.program_id = $1 AND e.code = $2`, prog.ID,
			cmd.Member), cmd.Member)
		if err != nil {
			return nilIfMissing(err)
		}
		return e.Public(), nil
	default:
		return nil, core.Errorf(core.Invalid, "kind", "%q is not a parameter change", cmd.Kind)
	}
}

// auditedMember is a member as the audit log shows a move of its points or
// standing: its status and figures, and the request that moved them.
type auditedMember struct {
	Status  string          `json:"status"`
	Balance core.Balance    `json:"balance"`
	TxnID   string          `json:"txn_id,omitempty"`
	Request json.RawMessage `json:"request,omitempty"`
}

// memberState reads the member cmd names (nil when there is none), with
// the command's transaction id and payload: the audit entry's before and
// after then say what was asked and what it did.
func (t *txn) memberState(ctx context.Context, programID string, cmd *bus.Command) (any,
	error) {
	var s auditedMember
	err := t.tx.QueryRow(ctx, `SELECT status, available, pending, held FROM members
		WHERE program_id = $1 AND customer_ref = $2`, programID, cmd.Member).Scan(&s.Status,
		&s.Balance.Available, &s.Balance.Pending, &s.Balance.Held)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read member for the audit log: %w", err)
	}
	s.TxnID, s.Request = cmd.TxnID, lowerKeys(cmd.Payload)
	return s, nil
}

// lowerKeys is a request's JSON object with its keys in lower case, as the
// ledger reads them whatever their case ({"To": ...} is a transfer's to),
// so that the audit entry names each field one way and an erasure finds
// the references in it. A payload that is not an object is kept as it is.
func lowerKeys(payload []byte) json.RawMessage {
	var fields map[string]json.RawMessage
	if json.Unmarshal(payload, &fields) != nil {
		return json.RawMessage(payload)
	}
	lower := make(map[string]json.RawMessage, len(fields))
	for k, v := range fields {
		lower[strings.ToLower(k)] = v
	}
	out, err := json.Marshal(lower)
	if err != nil {
		return json.RawMessage(payload)
	}
	return out
}

// nilIfMissing turns not_found into "no state yet" and passes other errors.
func nilIfMissing(err error) (any, error) {
	if core.KindOf(err) == core.NotFound {
		return nil, nil
	}
	return nil, err
}

// PartnerView is a partner with its keys (prefixes only, never secrets).
type PartnerView struct {
	Partner core.Partner      `json:"partner"`
	Keys    []core.PartnerKey `json:"keys"`
}

// Partners lists the partners of a program by code, each with its keys.
// Errors: not_found (no such program).
func (l *Ledger) Partners(ctx context.Context, programCode string) ([]PartnerView, error) {
	if _, err := l.Program(ctx, programCode); err != nil {
		return nil, err
	}
	rows, err := l.pool.Query(ctx, `SELECT pa.code FROM partners pa
		JOIN programs pr ON pr.id = pa.program_id WHERE pr.code = $1 ORDER BY pa.code`,
		programCode)
	if err != nil {
		return nil, fmt.Errorf("list partners: %w", err)
	}
	codes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list partners: %w", err)
	}
	out := make([]PartnerView, 0, len(codes))
	for _, c := range codes {
		p, keys, err := readPartner(ctx, l.pool, programCode, c)
		if err != nil {
			return nil, err
		}
		out = append(out, PartnerView{Partner: *p, Keys: keys})
	}
	return out, nil
}

// ExternalPrograms lists a program's external programs by code, with their
// credentials masked. Errors: not_found (no such program).
func (l *Ledger) ExternalPrograms(ctx context.Context,
	programCode string) ([]core.ExternalProgram, error) {
	if _, err := l.Program(ctx, programCode); err != nil {
		return nil, err
	}
	rows, err := l.pool.Query(ctx, `SELECT `+externalCols+` FROM external_programs e
		JOIN programs p ON p.id = e.program_id WHERE p.code = $1 ORDER BY e.code`,
		programCode)
	if err != nil {
		return nil, fmt.Errorf("list external programs: %w", err)
	}
	defer rows.Close()
	out := []core.ExternalProgram{}
	for rows.Next() {
		e, err := scanExternal(rows, "")
		if err != nil {
			return nil, err
		}
		out = append(out, e.Public())
	}
	return out, rows.Err()
}

// Tiers answers a program's tier levels, or nil when it has none.
// Errors: not_found (no such program).
func (l *Ledger) Tiers(ctx context.Context, programCode string) (*core.Tiers, error) {
	p, err := l.Program(ctx, programCode)
	if err != nil {
		return nil, err
	}
	var tiers core.Tiers
	err = l.pool.QueryRow(ctx, `SELECT body FROM program_tiers WHERE program_id = $1`,
		p.ID).Scan(&tiers)
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
