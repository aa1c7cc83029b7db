package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// Ledger applies commands to the PostgreSQL ledger and answers queries.
type Ledger struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	// Clock gives the processing time; tests set it to move time forward.
	Clock func() time.Time
	// Secrets seals the credentials of external programs when they are
	// stored and opens them for PartnerConfig. Nil holds no key: storing a
	// secret is then refused (never stored in plain text) and a sealed one
	// cannot be read; set it before the ledger applies any command.
	Secrets *secrets.Keyring
	// afterSweepBatch, when set, runs after each committed sweep batch;
	// tests use it to stop a sweep halfway.
	afterSweepBatch func(SweepResult)
	// rowByRow turns the set-based path for accruals and credits off, so
	// that every command runs on its own (tests compare the two paths).
	rowByRow bool
	// copyRuns is the length from which a set-based run writes its rows by
	// COPY (see writePlans); 0 means defaultCopyRuns. Tests lower it to
	// take that way with short runs.
	copyRuns int
	// setBased counts the commands the set-based path applied.
	setBased atomic.Int64
}

// New returns a Ledger on pool.
func New(pool *pgxpool.Pool, log *slog.Logger) *Ledger {
	return &Ledger{pool: pool, log: log, Clock: time.Now}
}

// Pool is the ledger's connection pool.
func (l *Ledger) Pool() *pgxpool.Pool { return l.pool }

// ErrCommandRaced refuses a batch's transaction when another transaction
// recorded one of its commands while it worked (a copy of the command
// delivered twice at once, or another request reusing its transaction id).
// Nothing of the batch is written; applied again, the batch finds the
// command recorded and answers it as a replay or a conflict. ApplyBatch
// applies the batch again itself, as often as the batch has commands; each
// race leaves one more of them recorded, so the last attempt cannot race.
var ErrCommandRaced = errors.New("a command of the batch was recorded by another transaction")

// Applied is the outcome of one command of a batch.
type Applied struct {
	Result bus.Result
	// Encoded is Result as JSON when the ledger wrote it so for storing
	// (set-based accruals), so that announcing it does not encode it again;
	// empty otherwise.
	Encoded []byte
	// Dead is set when the command can never succeed as sent (unknown member,
	// invalid payload): the consumer dead-letters it with this reason.
	Dead string
}

// program is a program row with its id.
type program struct {
	core.Program
	// rates are the flat rates the program has had, oldest first, each in
	// force from its from (migration 0026).
	rates []programRate
}

// programRate is a flat rate of a program and when it came in force. The
// instant comes as microseconds since 1970: JSON of a timestamptz is
// written in the session's time zone, whose offsets before 1900 have
// seconds (and "BC" years) that no RFC 3339 parser takes.
type programRate struct {
	FromUS   int64         `json:"from_us"`
	From     time.Time     `json:"-"`
	Rate     string        `json:"rate"`
	Rounding core.Rounding `json:"rounding"`
}

// rateAt is the flat rate and rounding in force at t: the latest that came
// in force at or before t, else the first.
func (p *program) rateAt(t time.Time) (string, core.Rounding) {
	if len(p.rates) == 0 {
		return p.PointsPerUnit, p.AccrualRounding
	}
	r := p.rates[0]
	for _, x := range p.rates[1:] {
		if x.From.After(t) {
			break
		}
		r = x
	}
	return r.Rate, r.Rounding
}

// txn is the state of one batch transaction.
type txn struct {
	tx  pgx.Tx
	now time.Time
	// recorded, when set, is when the postings are written, for a sweep run
	// as of an earlier instant (now); zero means now (recordedAt).
	recorded time.Time
	cmd      *bus.Command
	system   string // source of system postings (expiry), empty for commands
	// datedExpiry dates expiry postings when their lots expired (see
	// expireByTime), not when they are written.
	datedExpiry bool
	programs    map[string]*program
	events      []bus.Event
	postings    []int64
	lastMoves   []core.LotMove
	coverBack   []coverReturn // what the last settleReturns sent to covering lots
	touched     map[string]bool
	ruleCache   ruleCache
	setBased    int // commands the set-based path applied
	copyRuns    int // see Ledger.copyRuns
	secrets     *secrets.Keyring

	// expiryDate, when set, dates expiry postings (expireReleased: points
	// a hold kept until it ended).
	expiryDate time.Time
}

// recordedAt is when the transaction's postings are written: now, or the
// real time of a sweep run as of an earlier instant.
func (t *txn) recordedAt() time.Time {
	if !t.recorded.IsZero() {
		return t.recorded
	}
	return t.now
}

func (l *Ledger) newTxn(tx pgx.Tx) *txn {
	copyRuns := l.copyRuns
	if copyRuns <= 0 {
		copyRuns = defaultCopyRuns
	}
	return &txn{tx: tx, now: l.Clock().UTC(), programs: map[string]*program{},
		touched: map[string]bool{}, copyRuns: copyRuns, secrets: l.Secrets}
}

// batchTx begins a command batch's transaction. Its statements are planned
// once per connection (generic plans) instead of at each execution: with the
// few commands of a transaction under single requests, planning at each
// bind cost about a tenth of PostgreSQL's CPU, and a batch's statements (key
// lookups and inserts from arrays) have one good plan whatever their values.
// The setting ends with the transaction and costs no round trip: it travels
// with BEGIN.
var batchTx = pgx.TxOptions{BeginQuery: "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan"}

// ApplyBatch applies cmds in one transaction, in order. Each command runs in
// its own savepoint: a command refused by a business rule changes nothing
// and its refusal is stored as its result, so that a replay gets the same
// answer. A replay of a stored command returns the stored result; the same
// transaction id with another payload is a conflict. An error return means
// the transaction did not commit and the whole batch may be retried.
//
// Runs of consecutive accruals and credits take a set-based path (batch.go)
// that gives the same results in a few statements per run; any command of
// the run it cannot handle exactly falls back to its own savepoint, in its
// place in the order.
func (l *Ledger) ApplyBatch(ctx context.Context, cmds []bus.Command) ([]Applied, error) {
	out := make([]Applied, len(cmds))
	runnable := l.setBasedCandidates(cmds)
	var t *txn
	apply := func(tx pgx.Tx) error {
		clear(out)
		t = l.newTxn(tx)
		for i := 0; i < len(cmds); {
			if runnable[i] {
				j := i + 1
				for j < len(cmds) && runnable[j] {
					j++
				}
				if err := t.applyRun(ctx, cmds[i:j], out[i:j]); err != nil {
					return err
				}
				i = j
				continue
			}
			a, err := t.apply(ctx, &cmds[i])
			if err != nil {
				return fmt.Errorf("command %s/%s: %w", cmds[i].Source, cmds[i].TxnID, err)
			}
			out[i] = a
			i++
		}
		return t.flushEvents(ctx)
	}
	// The transaction that recorded a command first has committed by the
	// time ours learns of it: applied again, the batch finds the command and
	// answers it as a replay (or a conflict). Each such race leaves one more
	// of the batch's commands recorded for good, so the batch cannot race
	// more times than it has commands. Two batches that use one transaction
	// id for different members can also wait on each other (each holds a
	// member, then records the id): PostgreSQL refuses one of them as a
	// deadlock, and it goes again once the other is done.
	var err error
	for raced, deadlocked := 0, 0; ; {
		err = pgx.BeginTxFunc(ctx, l.pool, batchTx, apply)
		if errors.Is(err, ErrCommandRaced) && raced < len(cmds) {
			raced++
		} else if isDeadlock(err) && deadlocked < 3 {
			deadlocked++
		} else {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	l.setBased.Add(int64(t.setBased))
	return out, nil
}

func (t *txn) apply(ctx context.Context, cmd *bus.Command) (Applied, error) {
	res := bus.Result{CommandID: cmd.ID, Source: cmd.Source, TxnID: cmd.TxnID, Kind: cmd.Kind}

	// Claim the transaction id; the unique key decides between racing replays.
	// The claim is made before the command's savepoint so that a refusal
	// keeps it: a racing copy waits for this transaction, then replays. Both
	// travel in one round trip.
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO commands (source, txn_id, command_id, kind, hash, status, result)
		VALUES ($1, $2, $3, $4, $5, 'applying', '{}') ON CONFLICT DO NOTHING RETURNING true`,
		cmd.Source, cmd.TxnID, cmd.ID, cmd.Kind, cmd.Hash)
	b.Queue(`SAVEPOINT cmd`)
	br := t.tx.SendBatch(ctx, b)
	var claimed bool
	claimErr := br.QueryRow().Scan(&claimed)
	_, spErr := br.Exec()
	if err := br.Close(); err != nil && claimErr == nil {
		claimErr = err
	}
	if claimErr == pgx.ErrNoRows && spErr == nil {
		a, reclaimed, err := t.replay(ctx, cmd, res)
		if err != nil || !reclaimed {
			return a, err
		}
	} else {
		if claimErr != nil {
			return Applied{}, fmt.Errorf("claim command: %w", claimErr)
		}
		if spErr != nil {
			return Applied{}, spErr
		}
	}
	return t.run(ctx, cmd, res)
}

// run applies a claimed command inside the savepoint "cmd", which it
// releases, and stores its result or its refusal. A command with an audit
// note writes its audit entry in the same savepoint (dispatchAudited).
func (t *txn) run(ctx context.Context, cmd *bus.Command, res bus.Result) (Applied, error) {
	t.cmd = cmd
	t.lastMoves = nil
	t.postings = nil
	nEvents := len(t.events)
	data, err := t.dispatchAudited(ctx, cmd)
	t.cmd = nil
	if err != nil {
		derr, ok := core.AsError(err)
		if !ok {
			return Applied{}, err
		}
		// Undo everything the command did, then store the refusal.
		t.events = t.events[:nEvents]
		t.postings = nil
		res.Status = bus.StatusRejected
		res.Error = &bus.Error{Kind: string(derr.Kind), Field: derr.Field, Message: derr.Message}
		body, _ := json.Marshal(res)
		// The rollback runs on its own: pgx prepares a batch's statements
		// before running any, and nothing can be prepared while the
		// transaction is aborted.
		if _, err := t.tx.Exec(ctx, `ROLLBACK TO SAVEPOINT cmd`); err != nil {
			return Applied{}, fmt.Errorf("roll back refused command: %w", err)
		}
		err = t.send(ctx, `RELEASE SAVEPOINT cmd`, "", storeResult, cmd.Source, cmd.TxnID,
			res.Status, body)
		if err != nil {
			return Applied{}, fmt.Errorf("store refusal: %w", err)
		}
		a := Applied{Result: res}
		if derr.Kind == core.NotFound || derr.Kind == core.Invalid {
			a.Dead = derr.Error()
		}
		return a, nil
	}

	res.Status = bus.StatusOK
	res.Data, err = json.Marshal(data)
	if err != nil {
		return Applied{}, err
	}
	body, _ := json.Marshal(res)
	err = t.send(ctx, `RELEASE SAVEPOINT cmd`, "", storeResult, cmd.Source, cmd.TxnID,
		res.Status, body)
	if err != nil {
		return Applied{}, fmt.Errorf("store result: %w", err)
	}
	return Applied{Result: res}, nil
}

// storeResult records a command's result on its claimed row.
const storeResult = `UPDATE commands SET status = $3, result = $4
	WHERE source = $1 AND txn_id = $2`

// send runs up to two argument-less statements and then query with args,
// in one round trip.
func (t *txn) send(ctx context.Context, first, second, query string, args ...any) error {
	b := &pgx.Batch{}
	for _, q := range []string{first, second} {
		if q != "" {
			b.Queue(q)
		}
	}
	b.Queue(query, args...)
	return t.tx.SendBatch(ctx, b).Close()
}

// replay answers a command whose transaction id the ledger already holds:
// the first result for the same request, a conflict for another one. The
// one exception is a stored refusal as invalid: an invalid request never
// used up its id, so a corrected request takes the claim over (reclaimed)
// and is then applied in a fresh savepoint.
func (t *txn) replay(ctx context.Context, cmd *bus.Command,
	res bus.Result) (a Applied, reclaimed bool, err error) {
	var hash, status string
	var body []byte
	err = t.tx.QueryRow(ctx, `SELECT hash, status, result FROM commands
		WHERE source = $1 AND txn_id = $2 FOR UPDATE`, cmd.Source, cmd.TxnID).Scan(&hash,
		&status, &body)
	if err != nil {
		return Applied{}, false, fmt.Errorf("read stored command: %w", err)
	}
	var stored bus.Result
	if err := json.Unmarshal(body, &stored); err != nil {
		return Applied{}, false, fmt.Errorf("decode stored result: %w", err)
	}
	if hash != cmd.Hash && status == bus.StatusRejected && stored.Error != nil &&
		stored.Error.Kind == string(core.Invalid) {
		// The claim changes outside the command's savepoint, so that a
		// refusal of the corrected request keeps the new claim.
		err := t.send(ctx, `RELEASE SAVEPOINT cmd`, "", `UPDATE commands SET command_id = $3,
				kind = $4, hash = $5, status = 'applying', result = '{}'
			WHERE source = $1 AND txn_id = $2`, cmd.Source, cmd.TxnID, cmd.ID, cmd.Kind, cmd.Hash)
		if err == nil {
			_, err = t.tx.Exec(ctx, `SAVEPOINT cmd`)
		}
		if err != nil {
			return Applied{}, false, fmt.Errorf("reclaim command: %w", err)
		}
		return Applied{}, true, nil
	}
	if _, err := t.tx.Exec(ctx, `RELEASE SAVEPOINT cmd`); err != nil {
		return Applied{}, false, err
	}
	if hash != cmd.Hash {
		res.Status = bus.StatusRejected
		res.Error = &bus.Error{Kind: string(core.Conflict), Field: "txn_id",
			Message: "this transaction id was already used for a different request"}
		return Applied{Result: res}, false, nil
	}
	stored.Replayed = true
	return Applied{Result: stored}, false, nil
}

// flushEvents writes the queued ledger events to the outbox, in their
// order, with one COPY.
func (t *txn) flushEvents(ctx context.Context) error {
	if len(t.events) == 0 {
		return nil
	}
	cp := newBinCopy("outbox", []string{"event_id", "subject", "body"}, len(t.events)*480)
	var body []byte
	for i := range t.events {
		ev := &t.events[i]
		id := pgUUID(ev.ID)
		if !id.Valid {
			return fmt.Errorf("write outbox: event id %q is not a uuid", ev.ID)
		}
		var err error
		if body, err = appendEvent(body[:0], ev); err != nil {
			return err
		}
		cp.row()
		cp.uuid(id)
		cp.text(bus.EventSubject(ev.Program, ev.Kind))
		cp.json(body)
	}
	if err := cp.send(ctx, t.tx.Conn()); err != nil {
		return err
	}
	t.events = t.events[:0]
	return nil
}

// queueEvents queues an INSERT of the queued ledger events into the outbox
// on b, in their order, and empties the queue: the set-based path sends
// them with its other writes instead of in a COPY of their own.
func (t *txn) queueEvents(b *pgx.Batch) error {
	if len(t.events) == 0 {
		return nil
	}
	ids := make([]string, len(t.events))
	subjects := make([]string, len(t.events))
	bodies := make([]string, len(t.events))
	var buf []byte
	for i := range t.events {
		ev := &t.events[i]
		var err error
		if buf, err = appendEvent(buf[:0], ev); err != nil {
			return err
		}
		ids[i], subjects[i], bodies[i] = ev.ID, bus.EventSubject(ev.Program, ev.Kind), string(buf)
	}
	b.Queue(`INSERT INTO outbox (event_id, subject, body)
		SELECT e, s, b::json FROM unnest($1::uuid[], $2::text[], $3::text[])
			WITH ORDINALITY AS v(e, s, b, n)
		ORDER BY n`, uuidArg(ids), subjects, bodies)
	t.events = t.events[:0]
	return nil
}

// event queues the ledger event of a posting.
func (t *txn) event(m *member, postingID int64, p posting) {
	prog := ""
	for _, pr := range t.programs {
		if pr.ID == m.programID {
			prog = pr.Code
		}
	}
	ev := bus.Event{
		ID: uuid.Must(uuid.NewV7()).String(), Kind: p.kind, Program: prog, Member: m.id,
		MemberRef: m.ref, Points: p.points + p.pendingDelta, OccurredAt: p.occurredAt.UTC(),
		RecordedAt: t.recordedAt(), Source: "puntos", RuleVersion: p.ruleVersion,
		Partner:   p.partner,
		PostingID: postingID, Tier: m.tier,
	}
	if t.cmd != nil {
		ev.Source, ev.TxnID, ev.Channel = t.cmd.Source, t.cmd.TxnID, t.cmd.Channel
	}
	if t.system != "" {
		ev.Source, ev.TxnID = t.system, ""
	}
	t.events = append(t.events, ev)
}

// loadProgram reads a program by code, once per transaction.
func (t *txn) loadProgram(ctx context.Context, code string) (*program, error) {
	if p, ok := t.programs[code]; ok {
		return p, nil
	}
	p, err := readProgram(ctx, t.tx, `code = $1`, code)
	if err != nil {
		return nil, err
	}
	t.programs[code] = p
	return p, nil
}

func (t *txn) programByID(ctx context.Context, id string) (*program, error) {
	for _, p := range t.programs {
		if p.ID == id {
			return p, nil
		}
	}
	p, err := readProgram(ctx, t.tx, `id = $1`, id)
	if err != nil {
		return nil, err
	}
	t.programs[p.Code] = p
	return p, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func readProgram(ctx context.Context, q querier, where string, arg any) (*program, error) {
	p, err := scanProgram(q.QueryRow(ctx, `SELECT `+programCols+` FROM programs WHERE `+where,
		arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "program", "no program %v", arg)
	}
	if err != nil {
		return nil, fmt.Errorf("read program: %w", err)
	}
	return p, nil
}

const programCols = `id, code, name, time_zone, currency, points_per_unit::text,
	accrual_rounding, expiry_unit, expiry_length, expiry_round, pending_days,
	negative_balance, hold_ttl_seconds,
	(SELECT json_agg(json_build_object(
		'from_us', floor(extract(epoch FROM r.valid_from) * 1000000)::bigint,
		'rate', r.points_per_unit::text, 'rounding', r.accrual_rounding) ORDER BY r.valid_from)
	 FROM program_rates r WHERE r.program_id = programs.id)`

func scanProgram(row pgx.Row) (*program, error) {
	p := &program{}
	var rates []byte
	err := row.Scan(&p.ID, &p.Code, &p.Name, &p.TimeZone, &p.Currency, &p.PointsPerUnit,
		&p.AccrualRounding, &p.ExpiryUnit, &p.ExpiryLength, &p.ExpiryRound, &p.PendingDays,
		&p.NegativeBalance, &p.HoldTTLSeconds, &rates)
	if err == nil && rates != nil {
		if jerr := json.Unmarshal(rates, &p.rates); jerr != nil {
			return nil, fmt.Errorf("read program %s rates: %w", p.Code, jerr)
		}
		for i := range p.rates {
			p.rates[i].From = time.UnixMicro(p.rates[i].FromUS).UTC()
		}
	}
	return p, err
}

// uuidArg is ids as a uuid[] parameter in binary form. Given strings, pgx
// first tries the binary form, fails, builds an error and falls back to
// text, which PostgreSQL parses again: a few per cent of a batch's CPU.
// Should an id not parse here, ids go as they are and PostgreSQL refuses
// them with its own error, as before.
func uuidArg(ids []string) any {
	out := make([]pgtype.UUID, len(ids))
	for i, s := range ids {
		u, err := uuid.Parse(s)
		if err != nil {
			return ids
		}
		out[i] = pgtype.UUID{Bytes: u, Valid: true}
	}
	return out
}

// isDeadlock reports whether PostgreSQL refused err's transaction as one of
// a cycle of waits.
func isDeadlock(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "40P01"
}
