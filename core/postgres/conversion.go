package postgres

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// conversionCmd applies the commands of conversions into external programs.
func (t *txn) conversionCmd(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	switch cmd.Kind {
	case core.KindExternalUpsert:
		return t.upsertExternalSealed(ctx, prog, cmd)
	case core.KindConvert:
		return t.convert(ctx, prog, cmd)
	case core.KindConversionResolve:
		return t.resolveConversion(ctx, prog, cmd)
	}
	return nil, core.Errorf(core.Invalid, "kind", "unknown command kind %q", cmd.Kind)
}

// resolveConversion settles a pending conversion as a person says the
// other program decided, when its answers never said so for sure: confirmed
// captures the hold, refused gives the points back, and the conversion
// records who resolved it and why. Errors: not_found (no such conversion
// of the member), conflict (settled already; its hold already settled the
// other way).
func (t *txn) resolveConversion(ctx context.Context, prog *program, cmd *bus.Command) (any,
	error) {
	var in core.ResolveConversion
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if err := in.Check(); err != nil {
		return nil, err
	}
	actor := strings.TrimSpace(cmd.Actor)
	if actor == "" {
		return nil, core.Errorf(core.Invalid, "actor", "must name the person who resolves "+
			"the conversion")
	}
	m, err := lockMember(ctx, t.tx, prog.ID, cmd.Member)
	if err != nil {
		return nil, err
	}
	if _, err := uuid.Parse(in.ID); err != nil {
		return nil, core.Errorf(core.NotFound, "conversion", "no conversion %q", in.ID)
	}
	var status, holdTxn string
	var claimed *time.Time
	err = t.tx.QueryRow(ctx, `SELECT status, hold_txn_id, claimed_until FROM conversions
		WHERE id = $1 AND program_id = $2 AND member_id = $3 FOR UPDATE`, in.ID, prog.ID,
		m.id).Scan(&status, &holdTxn, &claimed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "conversion", "no conversion %q for %q", in.ID,
			cmd.Member)
	}
	if err != nil {
		return nil, fmt.Errorf("lock conversion: %w", err)
	}
	if status != core.ConversionPending {
		return nil, core.Errorf(core.Conflict, "conversion", "is %s already", status)
	}
	if claimed != nil && claimed.After(t.now) {
		return nil, core.Errorf(core.Conflict, "conversion", "is being delivered to the other "+
			"program, whose answer may settle it; try again after %s",
			claimed.UTC().Format(time.RFC3339))
	}
	var hstatus string
	err = t.tx.QueryRow(ctx, `SELECT status FROM holds WHERE source = $1 AND txn_id = $2`,
		core.SourceConversion, holdTxn).Scan(&hstatus)
	if err != nil {
		return nil, fmt.Errorf("read conversion hold: %w", err)
	}
	switch {
	case hstatus == "open":
		h, err := t.lockHold(ctx, m, core.SourceConversion, holdTxn)
		if err != nil {
			return nil, err
		}
		c, st := h.amount, "captured"
		if in.Outcome == core.ConversionRefused {
			c, st = 0, "released"
		}
		if err := t.settleHold(ctx, m, h, c, st); err != nil {
			return nil, err
		}
	case hstatus == "captured" && in.Outcome == core.ConversionConfirmed:
		// The worker captured it and stopped before recording the answer.
	case hstatus != "captured" && in.Outcome == core.ConversionRefused:
		// The hold ran out (no worker renewed it) and gave the points back.
	case hstatus == "captured":
		return nil, core.Errorf(core.Conflict, "outcome", "the conversion's points were "+
			"captured on the other program's confirmation: it cannot be resolved refused")
	default:
		return nil, core.Errorf(core.Conflict, "outcome", "the conversion's points are back "+
			"with the member (its hold %s): resolve it refused to close it, and if the "+
			"other program did credit it, take the points back with a negative adjustment "+
			"naming the conversion", hstatus)
	}
	code := ""
	if in.Outcome == core.ConversionRefused {
		code = "resolved"
	}
	_, err = t.tx.Exec(ctx, `UPDATE conversions SET status = $2, reference = $3,
			refusal_code = $4, resolved_at = $5, last_error = $6
		WHERE id = $1`, in.ID, in.Outcome, in.Reference, code, t.now,
		"resolved by "+actor+": "+in.Reason)
	if err != nil {
		return nil, fmt.Errorf("resolve conversion: %w", err)
	}
	c, err := scanConversion(t.tx.QueryRow(ctx, `SELECT `+conversionCols+`
		FROM conversions c JOIN programs p ON p.id = c.program_id WHERE c.id = $1`, in.ID))
	if err != nil {
		return nil, fmt.Errorf("read conversion: %w", err)
	}
	return c, nil
}

// upsertExternal creates or replaces an external program of prog. The
// command's member field is the external program's code; its payload is a
// core.ExternalUpsert. The credentials are stored sealed
// (storedCredentials); the stored result shows them masked, or leaves them
// out when none are stored.
func (t *txn) upsertExternal(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var u core.ExternalUpsert
	if err := decode(cmd.Payload, &u); err != nil {
		return nil, err
	}
	e := u.Config()
	if e.Code != "" && e.Code != cmd.Member {
		return nil, core.Errorf(core.Invalid, "code", "differs from the path")
	}
	e.Code = cmd.Member
	e.Defaults()
	if err := e.Validate(); err != nil {
		return nil, err
	}
	e.Normalize()
	stored, err := t.storedCredentials(ctx, prog, e.Code, e.Endpoint, u.Credentials)
	if err != nil {
		return nil, err
	}
	e.Credentials = stored // what is kept; the result masks it
	_, err = t.tx.Exec(ctx, `INSERT INTO external_programs (program_id, code, name, ratio,
			rounding, min_points, max_points, daily_limit, monthly_limit, identify,
			account_pattern, flavour, endpoint, credentials, enabled)
		VALUES ($1, $2, $3, $4::numeric, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
		ON CONFLICT (program_id, code) DO UPDATE SET name = EXCLUDED.name,
			ratio = EXCLUDED.ratio, rounding = EXCLUDED.rounding,
			min_points = EXCLUDED.min_points, max_points = EXCLUDED.max_points,
			daily_limit = EXCLUDED.daily_limit, monthly_limit = EXCLUDED.monthly_limit,
			identify = EXCLUDED.identify, account_pattern = EXCLUDED.account_pattern,
			flavour = EXCLUDED.flavour, endpoint = EXCLUDED.endpoint,
			credentials = EXCLUDED.credentials, enabled = EXCLUDED.enabled, updated_at = $16`,
		prog.ID, e.Code, e.Name, e.Ratio, e.Rounding, e.MinPoints, e.MaxPoints, e.DailyLimit,
		e.MonthlyLimit, e.Identify, e.AccountPattern, e.Flavour, e.Endpoint, stored,
		*e.Enabled, t.now)
	if err != nil {
		return nil, fmt.Errorf("upsert external program: %w", err)
	}
	return e.Public(), nil
}

// storedCredentials is what the credentials column of prog's external
// program code gets for the credentials given by an upsert (nil when it
// left them out):
//   - left out: the stored value, or nothing for an external program not
//     stored yet (a REST client that omits the field keeps the secret, as
//     does the back office's blank field);
//   - "": nothing, the stored value removed;
//   - core.Masked: the stored value (a caller that sends back what it read
//     keeps the secret), refused as invalid when there is no stored
//     external program to keep them of (a new one would silently get none);
//   - otherwise the given secret sealed for the row (the row's own sealed
//     value given back counts as the secret it seals).
//
// Stored credentials are kept only for the address they were given for:
// an upsert that moves the endpoint to another scheme, host or port and
// does not give them again is refused, so that whoever may edit an
// external program cannot have its secret sent to an address of theirs.
//
// A plain value stored before credentials were encrypted is sealed when
// kept, if a key is configured. Errors: unavailable, when a secret is to be
// stored and no key is configured: it is refused, never stored in plain
// text.
func (t *txn) storedCredentials(ctx context.Context, prog *program, code, endpoint string,
	given *string) (string, error) {
	omitted := given == nil
	switch {
	case omitted:
		// Kept as core.Masked keeps them, but a new one gets none.
	case *given == "":
		return "", nil
	case *given != core.Masked:
		return t.sealCredentials(prog, code, *given)
	}
	var cur, was string
	err := t.tx.QueryRow(ctx, `SELECT credentials, endpoint FROM external_programs
		WHERE program_id = $1 AND code = $2 FOR UPDATE`, prog.ID, code).Scan(&cur, &was)
	if errors.Is(err, pgx.ErrNoRows) {
		if omitted {
			return "", nil
		}
		return "", core.Errorf(core.Invalid, "credentials", "%s keeps the stored "+
			"credentials, and external program %q has none yet: give them, or leave the "+
			"field out for a partner that needs none", core.Masked, code)
	}
	if err != nil {
		return "", fmt.Errorf("read stored credentials: %w", err)
	}
	if cur != "" && !sameOrigin(was, endpoint) {
		return "", core.Errorf(core.Invalid, "credentials", "the endpoint moves from %q to "+
			"%q: give the credentials again, or remove them (\"\" over REST, the box in the "+
			"back office), as the stored ones are not sent to another address", was, endpoint)
	}
	if cur == "" || secrets.IsSealed(cur) || t.secrets == nil {
		return cur, nil
	}
	return t.sealCredentials(prog, code, cur)
}

// sameOrigin reports whether two endpoints reach the same scheme, host and
// port (the port a scheme implies counting as given).
func sameOrigin(a, b string) bool {
	if a == b {
		return true
	}
	ua, err1 := url.Parse(strings.TrimSpace(a))
	ub, err2 := url.Parse(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || ua.Host == "" || ub.Host == "" {
		return false
	}
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		return map[string]string{"http": "80", "https": "443"}[strings.ToLower(u.Scheme)]
	}
	return strings.EqualFold(ua.Scheme, ub.Scheme) &&
		strings.EqualFold(ua.Hostname(), ub.Hostname()) && port(ua) == port(ub)
}

// sealCredentials seals the secret given for prog's external program code,
// bound to its row. Errors: unavailable, when no key is configured.
func (t *txn) sealCredentials(prog *program, code, given string) (string, error) {
	if t.secrets == nil {
		return "", core.Errorf(core.Unavailable, "credentials", "cannot be stored: no "+
			"secrets key is configured on the ledger's process (set PUNTOS_SECRETS_KEY); "+
			"nothing was changed")
	}
	ad := credentialsAD(prog.ID, code)
	if secrets.IsSealed(given) {
		// The row's own sealed value sent back, as the back office before
		// encryption kept a secret (it read the column and sent it again):
		// the secret is what it seals, not the sealed text. A value that
		// does not open for this row is a secret like any other.
		if plain, err := t.secrets.Open(given, ad); err == nil {
			given = plain
		}
	}
	sealed, err := t.secrets.Seal(given, ad)
	if err != nil {
		return "", fmt.Errorf("seal credentials: %w", err)
	}
	return sealed, nil
}

// credentialsAD is the additional data that binds sealed credentials to
// their row: a sealed value moved to another external program, or to
// another program's, does not open.
func credentialsAD(programID, code string) []byte {
	return []byte("external_programs.credentials\x00" + programID + "\x00" + code)
}

const externalCols = `e.code, e.name, e.ratio::text, e.rounding, e.min_points, e.max_points,
	e.daily_limit, e.monthly_limit, e.identify, e.account_pattern, e.flavour, e.endpoint,
	e.credentials, e.enabled`

func scanExternal(row pgx.Row, code string) (*core.ExternalProgram, error) {
	e := &core.ExternalProgram{}
	var enabled bool
	err := row.Scan(&e.Code, &e.Name, &e.Ratio, &e.Rounding, &e.MinPoints, &e.MaxPoints,
		&e.DailyLimit, &e.MonthlyLimit, &e.Identify, &e.AccountPattern, &e.Flavour,
		&e.Endpoint, &e.Credentials, &enabled)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "external", "no external program %q", code)
	}
	if err != nil {
		return nil, fmt.Errorf("read external program: %w", err)
	}
	e.Enabled = &enabled
	e.Normalize() // the column's "0.500000" answered as the upsert answered it: "0.5"
	return e, nil
}

// convertOutcome is the result of a conversion request: the conversion and
// the member's balance after the hold.
type convertOutcome struct {
	core.Conversion
	Balance core.Balance `json:"balance"`
}

// convert validates a conversion, holds its points and records it as
// pending, all in the command's savepoint: a refusal leaves neither a hold
// nor a conversion behind. The hold is a points.authorize command of source
// "conversion" named after the conversion, stored in the commands table
// like any other, so that the worker's capture or release finds it.
func (t *txn) convert(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var in core.ConvertRequest
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if err := core.CheckPoints("points", in.Points); err != nil {
		return nil, err
	}
	ext, err := scanExternal(t.tx.QueryRow(ctx, `SELECT `+externalCols+`
		FROM external_programs e WHERE e.program_id = $1 AND e.code = $2`, prog.ID,
		in.External),
		in.External)
	if err != nil {
		return nil, err
	}
	if !*ext.Enabled {
		return nil, core.Errorf(core.Conflict, "external", "conversions into %q are disabled",
			ext.Code)
	}
	if in.Points < ext.MinPoints || in.Points > ext.MaxPoints {
		return nil, core.Errorf(core.Invalid, "points", "must be between %d and %d for %s",
			ext.MinPoints, ext.MaxPoints, ext.Code)
	}
	amount, err := ext.Amount(in.Points)
	if err != nil {
		return nil, err
	}
	if amount <= 0 {
		return nil, core.Errorf(core.Invalid, "points", "convert to nothing in %s", ext.Code)
	}

	m, err := lockMember(ctx, t.tx, prog.ID, cmd.Member)
	if err != nil {
		return nil, err
	}
	account, err := conversionAccount(ext, m, in.AccountID)
	if err != nil {
		return nil, err
	}
	if err := ext.CheckWhole(in.Points, amount); err != nil {
		return nil, err
	}
	if err := t.refresh(ctx, prog, m); err != nil {
		return nil, err
	}
	if err := mustBe(m, "member", "active"); err != nil {
		return nil, err
	}

	// The limits count what is pending or confirmed in the local day and
	// month of the request; the member's row lock orders racing requests.
	at := cmd.OccurredAt
	if at.IsZero() {
		at = t.now
	}
	loc := prog.Location()
	if err := t.checkConversionLimit(ctx, m, ext.Code, "daily_limit", ext.DailyLimit,
		core.DayStart(at, loc), in.Points); err != nil {
		return nil, err
	}
	if err := t.checkConversionLimit(ctx, m, ext.Code, "monthly_limit", ext.MonthlyLimit,
		core.MonthStart(at, loc), in.Points); err != nil {
		return nil, err
	}

	// The hold, as a points.authorize command of its own.
	id := uuid.Must(uuid.NewV7()).String()
	payload, err := json.Marshal(core.Authorize{Points: in.Points,
		TTLSeconds: int(core.ConversionHoldTTL / time.Second), Reason: "conversion to " + ext.Code})
	if err != nil {
		return nil, err
	}
	hold := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: core.KindAuthorize,
		Source: core.SourceConversion, TxnID: core.ConversionHoldTxn(id), Program: cmd.Program,
		Member: m.ref, Actor: cmd.Actor, Channel: cmd.Channel, Payload: payload,
		OccurredAt: at, ReceivedAt: t.now}
	hold.Seal()
	_, err = t.tx.Exec(ctx, `INSERT INTO commands (source, txn_id, command_id, kind, hash,
		status, result) VALUES ($1, $2, $3, $4, $5, 'applying', '{}')`, hold.Source, hold.TxnID,
		hold.ID, hold.Kind, hold.Hash)
	if err != nil {
		return nil, fmt.Errorf("claim hold command: %w", err)
	}
	outer := t.cmd
	t.cmd = &hold
	data, err := t.authorize(ctx, prog, m, &hold)
	t.cmd = outer
	if err != nil {
		return nil, err
	}
	res := bus.Result{CommandID: hold.ID, Source: hold.Source, TxnID: hold.TxnID,
		Kind: hold.Kind, Status: bus.StatusOK}
	if res.Data, err = json.Marshal(data); err != nil {
		return nil, err
	}
	body, _ := json.Marshal(res)
	_, err = t.tx.Exec(ctx, `UPDATE commands SET status = 'ok', result = $3
		WHERE source = $1 AND txn_id = $2`, hold.Source, hold.TxnID, body)
	if err != nil {
		return nil, fmt.Errorf("store hold result: %w", err)
	}

	// The outbox row the worker settles. Its time is kept to PostgreSQL's
	// microseconds here too, so that the answer to this request, the
	// reads and the call to the partner show the same instant.
	c := core.Conversion{ID: id, Program: prog.Code, Member: m.ref, External: ext.Code,
		Points: in.Points, Amount: amount, AccountID: account, Status: core.ConversionPending,
		TxnID: id, HoldTxnID: hold.TxnID, RequestedAt: at.UTC().Truncate(time.Microsecond)}
	_, err = t.tx.Exec(ctx, `INSERT INTO conversions (id, program_id, member_id, member_ref,
			external_code, points, amount, account_id, source, txn_id, hold_txn_id,
			next_attempt_at, requested_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`, id, prog.ID, m.id,
		m.ref, ext.Code, in.Points, amount, account, cmd.Source, cmd.TxnID, hold.TxnID, t.now,
		c.RequestedAt)
	if err != nil {
		return nil, fmt.Errorf("insert conversion: %w", err)
	}
	return convertOutcome{Conversion: c, Balance: m.balance()}, nil
}

// conversionAccount is the member's id at the external program.
func conversionAccount(ext *core.ExternalProgram, m *member, given string) (string, error) {
	if ext.Identify == core.IdentifyCustomerRef {
		if given != "" && given != m.ref {
			return "", core.Errorf(core.Invalid, "account_id",
				"is not used: %s knows members by their customer reference", ext.Code)
		}
		return m.ref, nil
	}
	if !core.ValidRef(given) {
		return "", core.Errorf(core.Invalid, "account_id",
			"is required: the member's account at %s", ext.Code)
	}
	if ext.AccountPattern != "" {
		re, err := regexp.Compile(`^(?:` + ext.AccountPattern + `)$`)
		if err != nil || !re.MatchString(given) {
			return "", core.Errorf(core.Invalid, "account_id",
				"is not an account number of %s", ext.Code)
		}
	}
	return given, nil
}

// checkConversionLimit refuses a conversion of n points that would take the
// member's conversions into ext since from above limit (0: no limit).
func (t *txn) checkConversionLimit(ctx context.Context, m *member, ext, field string,
	limit core.Points, from time.Time, n core.Points) error {
	if limit == 0 {
		return nil
	}
	var used int64
	err := t.tx.QueryRow(ctx, `SELECT coalesce(sum(points), 0) FROM conversions
		WHERE member_id = $1 AND external_code = $2 AND status <> 'refused'
		  AND requested_at >= $3`, m.id, ext, from).Scan(&used)
	if err != nil {
		return fmt.Errorf("sum conversions: %w", err)
	}
	if core.Points(used)+n > limit {
		return core.Errorf(core.Conflict, field,
			"%s asked, %d of the limit of %d already used", core.PointsText(n), used, limit)
	}
	return nil
}

// ExternalProgram returns an external program of the program, its
// credentials masked; they are not decrypted. Errors: not_found.
func (l *Ledger) ExternalProgram(ctx context.Context, program, code string) (
	*core.ExternalProgram, error) {
	e, _, err := l.readExternal(ctx, program, code)
	if err != nil {
		return nil, err
	}
	pub := e.Public()
	return &pub, nil
}

// PartnerConfig returns an external program with its credentials in plain
// text, for the adapter that calls it: the only read that decrypts them.
// Never log or answer it as it is. Credentials stored in plain text before
// they were encrypted come back as they are. Errors: not_found; a plain
// error naming the external program when its credentials do not decrypt
// (no key, another key, a value altered or copied from another row), which
// never contains the secret or the sealed value.
func (l *Ledger) PartnerConfig(ctx context.Context, program, code string) (
	*core.ExternalProgram, error) {
	e, programID, err := l.readExternal(ctx, program, code)
	if err != nil || !secrets.IsSealed(e.Credentials) {
		return e, err
	}
	plain, err := l.Secrets.Open(e.Credentials, credentialsAD(programID, e.Code))
	if err != nil {
		return nil, fmt.Errorf("external program %s/%s: its credentials cannot be decrypted "+
			"with the configured secrets key (PUNTOS_SECRETS_KEY): %w", program, e.Code, err)
	}
	e.Credentials = plain
	return e, nil
}

// readExternal reads an external program as stored, credentials included,
// and the id of its program. Errors: not_found.
func (l *Ledger) readExternal(ctx context.Context, program, code string) (
	*core.ExternalProgram, string, error) {
	var programID string
	e, err := scanExternal(withFirst{l.pool.QueryRow(ctx, `SELECT e.program_id::text, `+
		externalCols+` FROM external_programs e JOIN programs p ON p.id = e.program_id
		WHERE p.code = $1 AND e.code = $2`, program, code), &programID}, code)
	return e, programID, err
}

// withFirst is a row whose first column goes to dest and the others to the
// destinations its Scan is given.
type withFirst struct {
	pgx.Row
	dest any
}

func (r withFirst) Scan(dest ...any) error {
	return r.Row.Scan(append([]any{r.dest}, dest...)...)
}

// SealCredentials seals, with the current key, the stored credentials that
// are in plain text (written before credentials were encrypted) or sealed
// with an older key of the keyring, so that after a start with a key no
// secret stays readable in the table. Each row changes only if it still
// holds the value read, so a change applied meanwhile is never undone. It
// returns how many it sealed; a value it cannot open is left as it is and
// reported in the error, by external program only. Without a key it does
// nothing.
func (l *Ledger) SealCredentials(ctx context.Context) (int, error) {
	if l.Secrets == nil {
		return 0, nil
	}
	rows, err := l.pool.Query(ctx, `SELECT e.program_id::text, p.code, e.code, e.credentials
		FROM external_programs e JOIN programs p ON p.id = e.program_id
		WHERE e.credentials <> '' ORDER BY p.code, e.code`)
	if err != nil {
		return 0, fmt.Errorf("read credentials: %w", err)
	}
	type row struct{ programID, program, code, value string }
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.programID, &x.program, &x.code, &x.value)
		return x, err
	})
	if err != nil {
		return 0, fmt.Errorf("read credentials: %w", err)
	}
	n := 0
	var errs []error
	for _, x := range list {
		if l.Secrets.Current(x.value) {
			continue
		}
		ad := credentialsAD(x.programID, x.code)
		plain := x.value
		if secrets.IsSealed(x.value) {
			if plain, err = l.Secrets.Open(x.value, ad); err != nil {
				errs = append(errs, fmt.Errorf("external program %s/%s: %w", x.program,
					x.code, err))
				continue
			}
		}
		sealed, err := l.Secrets.Seal(plain, ad)
		if err != nil {
			return n, err
		}
		tag, err := l.pool.Exec(ctx, `UPDATE external_programs SET credentials = $4
			WHERE program_id = $1 AND code = $2 AND credentials = $3`, x.programID, x.code,
			x.value, sealed)
		if err != nil {
			return n, fmt.Errorf("seal credentials of %s/%s: %w", x.program, x.code, err)
		}
		n += int(tag.RowsAffected())
	}
	return n, errors.Join(errs...)
}

const conversionCols = `c.id, p.code, c.member_ref, c.external_code, c.points, c.amount,
	c.account_id, c.status, c.hold_txn_id, c.reference, c.refusal_code, c.attempts,
	c.last_error, c.requested_at, c.resolved_at, c.dispute, c.disputed_at,
	c.dispute_settled_at, c.dispute_settled_by, c.dispute_note`

func scanConversion(row pgx.Row) (*core.Conversion, error) {
	c := &core.Conversion{}
	err := row.Scan(&c.ID, &c.Program, &c.Member, &c.External, &c.Points, &c.Amount,
		&c.AccountID, &c.Status, &c.HoldTxnID, &c.Reference, &c.RefusalCode, &c.Attempts,
		&c.LastError, &c.RequestedAt, &c.ResolvedAt, &c.Dispute, &c.DisputedAt,
		&c.DisputeSettledAt, &c.DisputeSettledBy, &c.DisputeNote)
	if err != nil {
		return nil, err
	}
	c.TxnID = c.ID
	return c, nil
}

func scanConversions(rows pgx.Rows) ([]core.Conversion, error) {
	defer rows.Close()
	var out []core.Conversion
	for rows.Next() {
		c, err := scanConversion(rows)
		if err != nil {
			return nil, fmt.Errorf("scan conversion: %w", err)
		}
		out = append(out, *c)
	}
	return out, rows.Err()
}

// Conversion returns a conversion of the member known by ref.
// Errors: not_found.
func (l *Ledger) Conversion(ctx context.Context, program, ref, id string) (*core.Conversion,
	error) {
	m, err := l.Member(ctx, program, ref)
	if err != nil {
		return nil, err
	}
	if _, err := uuid.Parse(id); err != nil {
		return nil, core.Errorf(core.NotFound, "conversion", "no conversion %q", id)
	}
	c, err := scanConversion(l.pool.QueryRow(ctx, `SELECT `+conversionCols+`
		FROM conversions c JOIN programs p ON p.id = c.program_id
		WHERE c.id = $1 AND p.code = $2 AND (c.member_id = $3 OR c.member_ref = $4)`,
		id, program, m.ID, ref))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "conversion", "no conversion %q for %q", id, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("read conversion: %w", err)
	}
	return c, nil
}

// memberConversionsFrom selects the conversions of a member ($1, the one
// a reference leads to) and of the member that holds the reference itself
// ($3, in program $2): the survivor of a merge answers for the conversions
// of the accounts merged into it, and a merged reference still finds its own.
const memberConversionsFrom = `
	FROM conversions c JOIN programs p ON p.id = c.program_id
	WHERE c.member_id = ANY (ARRAY(SELECT $1::uuid UNION
			SELECT m.id FROM members m JOIN programs mp ON mp.id = m.program_id
			WHERE mp.code = $2 AND m.customer_ref = $3))
	  AND p.code = $2`

// ConversionPage is one page of a member's conversions, newest first.
type ConversionPage struct {
	Member      string            `json:"member"`
	Conversions []core.Conversion `json:"conversions"`
	// Next is the cursor of the following page; empty on the last one.
	Next string `json:"next_cursor,omitempty"`
}

// Conversions returns up to limit conversions of the member known by ref,
// newest request first, older than cursor (an opaque value from a previous
// page; empty for the newest). They are the conversions Conversion answers
// for the same reference. A limit outside 1-500 is taken as 50.
// Errors: not_found (no such program or member), invalid (a bad cursor).
func (l *Ledger) Conversions(ctx context.Context, program, ref, cursor string,
	limit int) (*ConversionPage, error) {
	m, err := l.Member(ctx, program, ref)
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 500 {
		limit = 50
	}
	// The first page starts after every possible conversion.
	beforeAt, beforeID := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), uuid.Max.String()
	if cursor != "" {
		if beforeAt, beforeID, err = decodeConversionCursor(cursor); err != nil {
			return nil, err
		}
	}

	// The same members as Conversion: the one the reference leads to (the
	// survivor of a merge) and the one that holds the reference itself.
	rows, err := l.pool.Query(ctx, `SELECT `+conversionCols+memberConversionsFrom+`
		  AND (c.requested_at, c.id) < ($4, $5::uuid)
		ORDER BY c.requested_at DESC, c.id DESC LIMIT $6`, m.ID, program, ref,
		beforeAt, beforeID, limit+1)
	if err != nil {
		return nil, fmt.Errorf("list conversions: %w", err)
	}
	list, err := scanConversions(rows)
	if err != nil {
		return nil, err
	}
	page := &ConversionPage{Member: m.CustomerRef, Conversions: list}
	if page.Conversions == nil {
		page.Conversions = []core.Conversion{}
	}
	if len(page.Conversions) > limit {
		page.Conversions = page.Conversions[:limit]
		last := page.Conversions[limit-1]
		page.Next = encodeConversionCursor(last.RequestedAt, last.ID)
	}
	return page, nil
}

// PendingConversions returns every pending or disputed conversion of the
// member known by ref (the same members as Conversions), oldest request
// first: the ones a person may have to resolve or look at, however many
// settled ones came after.
// Errors: not_found.
func (l *Ledger) PendingConversions(ctx context.Context, program, ref string) (
	[]core.Conversion, error) {
	m, err := l.Member(ctx, program, ref)
	if err != nil {
		return nil, err
	}
	rows, err := l.pool.Query(ctx, `SELECT `+conversionCols+memberConversionsFrom+`
		  AND (c.status = 'pending'
		    OR (c.disputed_at IS NOT NULL AND c.dispute_settled_at IS NULL))
		ORDER BY c.requested_at, c.id LIMIT 500`, m.ID, program, ref)
	if err != nil {
		return nil, fmt.Errorf("list pending conversions: %w", err)
	}
	return scanConversions(rows)
}

// The cursor of a member's conversions is the position of the last one
// shown: when it was requested (microseconds since 1970, PostgreSQL's
// precision) and its id.
func encodeConversionCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString(
		[]byte(strconv.FormatInt(at.UnixMicro(), 10) + "." + id))
}

func decodeConversionCursor(c string) (time.Time, string, error) {
	bad := core.Errorf(core.Invalid, "cursor", "is not a cursor from a previous page")
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", bad
	}
	micros, id, ok := strings.Cut(string(raw), ".")
	n, err := strconv.ParseInt(micros, 10, 64)
	if !ok || err != nil {
		return time.Time{}, "", bad
	}
	if _, err := uuid.Parse(id); err != nil {
		return time.Time{}, "", bad
	}
	return time.UnixMicro(n).UTC(), id, nil
}

// ClaimConversions takes up to limit pending conversions whose next attempt
// is due at now, counts an attempt for each and puts their next attempt at
// now+lease, so that another worker leaves them alone while this one calls
// the other program. A worker that dies holding them lets the lease run out;
// the next one calls again with the same transaction id. The external
// programs take turns: the oldest due of each first, then the second of
// each, and so on, so that a program with a backlog (one that stopped
// answering, say) leaves room in every claim for the others.
func (l *Ledger) ClaimConversions(ctx context.Context, now time.Time, lease time.Duration,
	limit int) ([]core.Conversion, error) {
	return l.ClaimConversionsExcept(ctx, now, lease, limit, nil, nil)
}

// ClaimConversionsExcept is ClaimConversions leaving alone the conversions
// into the external programs externals[i] of programs[i]: a worker still
// delivering to them (one that hangs, say) claims no more of theirs.
func (l *Ledger) ClaimConversionsExcept(ctx context.Context, now time.Time,
	lease time.Duration, limit int, programs, externals []string) ([]core.Conversion, error) {
	if programs == nil {
		programs, externals = []string{}, []string{}
	}
	rows, err := l.pool.Query(ctx, `WITH busy AS (
			SELECT p.id AS program_id, b.external FROM unnest($4::text[], $5::text[])
				AS b(program, external) JOIN programs p ON p.code = b.program),
		ranked AS (
			SELECT id, next_attempt_at, row_number() OVER (PARTITION BY program_id,
				external_code ORDER BY next_attempt_at, id) AS turn
			FROM conversions c WHERE status = 'pending' AND next_attempt_at <= $1
			  AND (claimed_until IS NULL OR claimed_until <= $1)
			  AND NOT EXISTS (SELECT 1 FROM busy
				WHERE busy.program_id = c.program_id AND busy.external = c.external_code)),
		due AS (
			SELECT c.id FROM ranked r JOIN conversions c ON c.id = r.id
			ORDER BY r.turn, r.next_attempt_at, r.id LIMIT $3 FOR UPDATE OF c SKIP LOCKED),
		claimed AS (
			UPDATE conversions c SET attempts = c.attempts + 1, next_attempt_at = $2,
				claimed_until = $2
			FROM due WHERE c.id = due.id AND c.status = 'pending'
				AND c.next_attempt_at <= $1
				AND (c.claimed_until IS NULL OR c.claimed_until <= $1) RETURNING c.*)
		SELECT `+conversionCols+` FROM claimed c JOIN programs p ON p.id = c.program_id
		ORDER BY c.requested_at, c.id`, now.UTC(), now.Add(lease).UTC(), limit, programs,
		externals)
	if err != nil {
		return nil, fmt.Errorf("claim conversions: %w", err)
	}
	return scanConversions(rows)
}

// PendingConversions is how many conversions into one external program wait
// for the other program's answer, and since when the oldest does.
type PendingConversions struct {
	Program, External string
	Count             int64
	Oldest            time.Time
}

// ConversionsPending counts the pending conversions by program and
// external program (read from the partial index of pending ones).
func (l *Ledger) ConversionsPending(ctx context.Context) ([]PendingConversions, error) {
	rows, err := l.pool.Query(ctx, `SELECT p.code, c.external_code, count(*),
			min(c.requested_at)
		FROM conversions c JOIN programs p ON p.id = c.program_id
		WHERE c.status = 'pending' GROUP BY p.code, c.external_code ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("count pending conversions: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (PendingConversions, error) {
		var p PendingConversions
		err := r.Scan(&p.Program, &p.External, &p.Count, &p.Oldest)
		return p, err
	})
}

// ErasedDispute is what a dispute reads once its member was erased.
const ErasedDispute = "the other program answered otherwise (its words erased with the member)"

// DisputeConversion records that the other program answers settled
// conversion id otherwise than we settled it: what it said, and when this
// was first seen (a later reconciliation keeps the first time and the
// latest words). A dispute a person marked settled stays settled while
// the other program says the same; other words open it again. It changes
// nothing else.
func (l *Ledger) DisputeConversion(ctx context.Context, id, theirs string, at time.Time) error {
	// The words of an erased member's conversion stay erased: the other
	// program's reference may name the person's account there.
	_, err := l.pool.Exec(ctx, `WITH w AS (
			SELECT CASE WHEN m.erased_at IS NULL THEN $3 ELSE $4 END AS words
			FROM conversions c JOIN members m ON m.id = c.member_id WHERE c.id = $1)
		UPDATE conversions SET
			disputed_at = CASE WHEN dispute = w.words THEN coalesce(disputed_at, $2) ELSE $2 END,
			dispute_settled_at = CASE WHEN dispute = w.words THEN dispute_settled_at END,
			dispute = w.words
		FROM w WHERE id = $1 AND status <> 'pending'`, id, at.UTC(), theirs, ErasedDispute)
	if err != nil {
		return fmt.Errorf("record the dispute of conversion %s: %w", id, err)
	}
	return nil
}

// SettleDispute marks the open dispute of conversion id, of the member
// known by ref in program, settled by a person: who, when and how (the
// note). It runs in tx, so that the caller's audit entry goes with it.
// Errors: not_found (no such conversion of the member), conflict (no open
// dispute).
func SettleDispute(ctx context.Context, tx pgx.Tx, program, ref, id, by, note string,
	at time.Time) error {
	if _, err := uuid.Parse(id); err != nil {
		return core.Errorf(core.NotFound, "conversion", "no conversion %q", id)
	}
	var open bool
	err := tx.QueryRow(ctx, `SELECT c.disputed_at IS NOT NULL AND c.dispute_settled_at IS NULL
		FROM conversions c JOIN programs p ON p.id = c.program_id
		JOIN members m ON m.id = c.member_id
		WHERE c.id = $1 AND p.code = $2 AND (m.customer_ref = $3 OR c.member_ref = $3
			OR m.id = (SELECT merged_into FROM members mm
				WHERE mm.program_id = p.id AND mm.customer_ref = $3))
		FOR UPDATE OF c`, id, program, ref).Scan(&open)
	if errors.Is(err, pgx.ErrNoRows) {
		return core.Errorf(core.NotFound, "conversion", "no conversion %q for %q", id, ref)
	}
	if err != nil {
		return fmt.Errorf("read the dispute of conversion %s: %w", id, err)
	}
	if !open {
		return core.Errorf(core.Conflict, "conversion", "conversion %s has no open dispute", id)
	}
	_, err = tx.Exec(ctx, `UPDATE conversions SET dispute_settled_at = $2,
		dispute_settled_by = $3, dispute_note = $4 WHERE id = $1`, id, at.UTC(), by, note)
	if err != nil {
		return fmt.Errorf("settle the dispute of conversion %s: %w", id, err)
	}
	return nil
}

// DisputedConversions counts the open disputes of conversions by program
// and external program.
func (l *Ledger) DisputedConversions(ctx context.Context) ([]PendingConversions, error) {
	rows, err := l.pool.Query(ctx, `SELECT p.code, c.external_code, count(*),
			min(c.disputed_at)
		FROM conversions c JOIN programs p ON p.id = c.program_id
		WHERE c.disputed_at IS NOT NULL AND c.dispute_settled_at IS NULL
		GROUP BY p.code, c.external_code ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("count disputed conversions: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (PendingConversions, error) {
		var p PendingConversions
		err := r.Scan(&p.Program, &p.External, &p.Count, &p.Oldest)
		return p, err
	})
}

// ClaimConversion claims one pending conversion until until, unless a
// claim holds it at now: the reconciliation's hold on it while it asks the
// other program and settles on the answer, so that a person does not
// resolve it meanwhile. It reports whether the claim was taken.
func (l *Ledger) ClaimConversion(ctx context.Context, id string, now, until time.Time) (bool,
	error) {
	tag, err := l.pool.Exec(ctx, `UPDATE conversions SET claimed_until = $3
		WHERE id = $1 AND status = 'pending'
		  AND (claimed_until IS NULL OR claimed_until <= $2)`, id, now.UTC(), until.UTC())
	if err != nil {
		return false, fmt.Errorf("claim conversion: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// EndClaim ends a claim on conversion id that settled nothing: the one
// ClaimConversion made until until, and no other (a claim whose lease ran
// out may be another worker's since).
func (l *Ledger) EndClaim(ctx context.Context, id string, until time.Time) error {
	_, err := l.pool.Exec(ctx, `UPDATE conversions SET claimed_until = NULL
		WHERE id = $1 AND status = 'pending' AND claimed_until = $2`, id, until.UTC())
	if err != nil {
		return fmt.Errorf("end claim: %w", err)
	}
	return nil
}

// UnclaimConversion gives back a claim on conversion id that was not
// delivered: its attempt is not counted, and it is due again at next.
func (l *Ledger) UnclaimConversion(ctx context.Context, id string, next time.Time) error {
	_, err := l.pool.Exec(ctx, `UPDATE conversions SET attempts = greatest(attempts - 1, 0),
			next_attempt_at = $2, claimed_until = NULL
		WHERE id = $1 AND status = 'pending'`, id, next.UTC())
	if err != nil {
		return fmt.Errorf("give back claim: %w", err)
	}
	return nil
}

// RetryConversion records that an attempt at conversion id left its outcome
// unclear, and when to try again. It changes nothing once the conversion
// is settled.
func (l *Ledger) RetryConversion(ctx context.Context, id, why string, next time.Time) error {
	if len(why) > 500 {
		why = why[:500]
	}
	_, err := l.pool.Exec(ctx, `UPDATE conversions SET last_error = $2, next_attempt_at = $3,
			claimed_until = NULL
		WHERE id = $1 AND status = 'pending'`, id, why, next.UTC())
	if err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	return nil
}

// FinishConversion marks a pending conversion confirmed (with the other
// program's reference) or refused (with its code). Call it only after the
// hold was captured or released. It reports whether this call settled it:
// false when it was settled already, which is no error.
func (l *Ledger) FinishConversion(ctx context.Context, id, status, reference, code string,
	at time.Time) (bool, error) {
	if status != core.ConversionConfirmed && status != core.ConversionRefused {
		return false, fmt.Errorf("finish conversion: status %q", status)
	}
	tag, err := l.pool.Exec(ctx, `UPDATE conversions SET status = $2, reference = $3,
			refusal_code = $4, resolved_at = $5, last_error = '', claimed_until = NULL
		WHERE id = $1 AND status = 'pending'`, id, status, reference, code, at.UTC())
	if err != nil {
		return false, fmt.Errorf("finish conversion: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// RenewConversionHold pushes the expiry of a pending conversion's open hold
// to at least until, so that the ledger never releases points the other
// program may still credit. It reports whether an open hold was found.
func (l *Ledger) RenewConversionHold(ctx context.Context, id string, until time.Time) (bool,
	error) {
	tag, err := l.pool.Exec(ctx, `UPDATE holds h SET expires_at = $2
		FROM conversions c
		WHERE c.id = $1 AND c.status = 'pending' AND h.source = $3
		  AND h.txn_id = c.hold_txn_id AND h.status = 'open' AND h.expires_at < $2`,
		id, until.UTC(), core.SourceConversion)
	if err != nil {
		return false, fmt.Errorf("renew hold: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// ConversionsToReconcile lists, oldest first, the pending conversions
// requested before `before` and the conversions settled since `since`:
// what a reconciliation compares with the other programs' answers.
func (l *Ledger) ConversionsToReconcile(ctx context.Context, before, since time.Time,
	limit int) ([]core.Conversion, error) {
	rows, err := l.pool.Query(ctx, `SELECT `+conversionCols+`
		FROM conversions c JOIN programs p ON p.id = c.program_id
		WHERE (c.status = 'pending' AND c.requested_at < $1)
		   OR (c.status <> 'pending' AND c.resolved_at >= $2)
		ORDER BY c.requested_at, c.id LIMIT $3`, before.UTC(), since.UTC(), limit)
	if err != nil {
		return nil, fmt.Errorf("list conversions: %w", err)
	}
	return scanConversions(rows)
}
