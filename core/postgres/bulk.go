package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/core"
)

// This file stores bulk point loads (gateway/files): batches and their lines.
// It writes no ledger table; the lines reach the ledger through
// PostBatchLines (bulk_post.go), which records their outcomes too.

const batchColumns = `id, program, checksum, file_name, stored_path, size_bytes, charset,
	date_format, uploaded_by, uploaded_source, channel, status, error, lines, valid_lines, invalid_lines,
	credit_points, debit_points, needs_approval, approved_by, approved_at, posted_by,
	posted_through, posted_lines, replayed_lines, rejected_lines, run_started_at,
	run_start_done, created_at, validated_at, started_at, finished_at`

func scanBatch(row pgx.Row) (*core.Batch, error) {
	b := &core.Batch{}
	err := row.Scan(&b.ID, &b.Program, &b.Checksum, &b.FileName, &b.Path, &b.Size, &b.Charset,
		&b.DateFormat, &b.UploadedBy, &b.UploadedSource, &b.Channel, &b.Status, &b.Error, &b.Lines, &b.Valid,
		&b.Invalid, &b.Credit, &b.Debit, &b.NeedsApproval, &b.ApprovedBy, &b.ApprovedAt,
		&b.PostedBy, &b.PostedThrough, &b.Posted, &b.Replayed, &b.Rejected, &b.RunStartedAt,
		&b.RunStartDone, &b.CreatedAt, &b.ValidatedAt, &b.StartedAt, &b.FinishedAt)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// CreateBatch stores a new batch, unless the program already has one of
// the same file read the same way (same checksum, charset and date
// pattern): then it returns that one and created is false. The same bytes
// declared in another charset or date pattern are another batch, as their
// lines read otherwise; their transaction ids keep a line from being
// applied twice.
func (l *Ledger) CreateBatch(ctx context.Context, b *core.Batch) (*core.Batch, bool, error) {
	tag, err := l.pool.Exec(ctx, `INSERT INTO bulk_batches (id, program, checksum, file_name,
			stored_path, size_bytes, charset, date_format, uploaded_by, channel, created_at,
			uploaded_source)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT (program, checksum, charset, date_format) DO NOTHING`, b.ID, b.Program,
		b.Checksum, b.FileName, b.Path, b.Size, b.Charset, b.DateFormat, b.UploadedBy,
		b.Channel, b.CreatedAt, b.UploadedSource)
	if err != nil {
		return nil, false, fmt.Errorf("insert batch: %w", err)
	}
	created := tag.RowsAffected() == 1
	row := l.pool.QueryRow(ctx, `SELECT `+batchColumns+` FROM bulk_batches
		WHERE program = $1 AND checksum = $2 AND charset = $3 AND date_format = $4`,
		b.Program, b.Checksum, b.Charset, b.DateFormat)
	stored, err := scanBatch(row)
	if err != nil {
		return nil, false, fmt.Errorf("read batch: %w", err)
	}
	return stored, created, nil
}

// Batch returns a batch of the program. Errors: not_found.
func (l *Ledger) Batch(ctx context.Context, program, id string) (*core.Batch, error) {
	b, err := scanBatch(l.pool.QueryRow(ctx, `SELECT `+batchColumns+` FROM bulk_batches
		WHERE program = $1 AND id::text = $2`, program, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "batch", "no batch %q in program %q", id, program)
	}
	if err != nil {
		return nil, fmt.Errorf("read batch: %w", err)
	}
	return b, nil
}

// Batches lists a program's batches, newest first: at most limit of them,
// after the batch named by after when it is not empty (the last of the
// previous page). Errors: not_found when after names no batch of the
// program.
func (l *Ledger) Batches(ctx context.Context, program, after string,
	limit int) ([]*core.Batch, error) {
	var created time.Time
	id := "ffffffff-ffff-ffff-ffff-ffffffffffff"
	if after != "" {
		b, err := l.Batch(ctx, program, after)
		if err != nil {
			return nil, core.Errorf(core.NotFound, "cursor", "no batch %q in program %q",
				after, program)
		}
		created, id = b.CreatedAt, b.ID
	} else {
		created = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	}
	rows, err := l.pool.Query(ctx, `SELECT `+batchColumns+` FROM bulk_batches
		WHERE program = $1 AND (created_at, id) < ($2, $3::uuid)
		ORDER BY created_at DESC, id DESC LIMIT $4`, program, created, id, limit)
	if err != nil {
		return nil, fmt.Errorf("list batches: %w", err)
	}
	return scanBatches(rows)
}

// scanBatches reads every batch of rows, and closes them.
func scanBatches(rows pgx.Rows) ([]*core.Batch, error) {
	defer rows.Close()
	out := []*core.Batch{}
	for rows.Next() {
		b, err := scanBatch(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// UnfinishedBatches lists the batches a stopped process left in the middle
// of validating or posting, oldest first.
func (l *Ledger) UnfinishedBatches(ctx context.Context) ([]*core.Batch, error) {
	rows, err := l.pool.Query(ctx, `SELECT `+batchColumns+` FROM bulk_batches
		WHERE status IN ('received', 'validating', 'posting') ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list unfinished batches: %w", err)
	}
	return scanBatches(rows)
}

// bulkDB is where the validation of a batch writes: the pool, or the
// connection that holds the batch's validation lock.
type bulkDB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// StartValidation forgets any lines of an earlier, interrupted validation
// and marks the batch as validating.
func (l *Ledger) StartValidation(ctx context.Context, id string) error {
	return startValidation(ctx, l.pool, id)
}

func startValidation(ctx context.Context, db bulkDB, id string) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM bulk_lines WHERE batch_id = $1`, id); err != nil {
			return fmt.Errorf("clear lines: %w", err)
		}
		_, err := tx.Exec(ctx, `UPDATE bulk_batches SET status = 'validating', error = '',
			lines = 0, valid_lines = 0, invalid_lines = 0 WHERE id = $1`, id)
		return err
	})
}

// AddBatchLines stores validated lines of a batch.
func (l *Ledger) AddBatchLines(ctx context.Context, id string, lines []core.BatchLine) error {
	return l.pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
		return addBatchLines(ctx, c.Conn(), id, lines)
	})
}

func addBatchLines(ctx context.Context, conn *pgx.Conn, id string,
	lines []core.BatchLine) error {
	batch, err := uuid.Parse(id)
	if err != nil {
		return core.Errorf(core.Invalid, "batch", "%q is not a batch id", id)
	}
	cp := newBinCopy("bulk_lines", []string{"batch_id", "line", "member", "points", "reason",
		"effective_at", "expires_at", "txn_id", "status", "error_kind", "error_field",
		"error"}, len(lines)*160)
	for i := range lines {
		x := &lines[i]
		cp.row()
		cp.uuid(pgtype.UUID{Bytes: batch, Valid: true})
		cp.int8(x.Line)
		cp.text(storable(x.Member))
		cp.int8(int64(x.Points))
		cp.text(storable(x.Reason))
		cp.timestamptzOrNull(x.EffectiveAt)
		cp.timestamptzOrNull(x.ExpiresAt)
		cp.text(storable(x.TxnID))
		cp.text(x.Status)
		cp.text(x.ErrorKind)
		cp.text(x.ErrorField)
		cp.text(storable(x.Error))
	}
	if err := cp.send(ctx, conn); err != nil {
		return fmt.Errorf("store batch lines: %w", err)
	}
	return nil
}

// storable is text as PostgreSQL can keep it: bad UTF-8 and NUL become
// U+FFFD. Validation refuses lines holding either, so only the text of an
// invalid line, kept to show what was wrong, is ever changed.
func storable(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// FinishValidation runs the checks that need the whole file or the ledger:
// a transaction id repeated in the file (every repeat after the first is
// invalid) and members the program does not have. It then counts the lines
// and totals, decides whether the batch needs a second person's approval
// (total points moved above approvalPoints, when that is positive) and
// marks the batch validated.
func (l *Ledger) FinishValidation(ctx context.Context, id string,
	approvalPoints int64) (*core.Batch, error) {
	return finishValidation(ctx, l.pool, id, approvalPoints)
}

func finishValidation(ctx context.Context, db bulkDB, id string,
	approvalPoints int64) (*core.Batch, error) {
	// Fresh statistics, so that the planner joins a million new lines by hash.
	if _, err := db.Exec(ctx, `ANALYZE bulk_lines`); err != nil {
		return nil, fmt.Errorf("analyze batch lines: %w", err)
	}
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE bulk_lines l SET status = 'invalid',
				error_kind = 'invalid', error_field = 'txn_id',
				error = 'repeats the transaction id of line ' || d.first
			FROM (SELECT txn_id, min(line) AS first FROM bulk_lines
				WHERE batch_id = $1 AND txn_id <> '' GROUP BY txn_id HAVING count(*) > 1) d
			WHERE l.batch_id = $1 AND l.txn_id = d.txn_id AND l.line > d.first
				AND l.status = 'valid'`, id)
		if err != nil {
			return fmt.Errorf("mark repeated transaction ids: %w", err)
		}
		_, err = tx.Exec(ctx, `UPDATE bulk_lines l SET status = 'invalid',
				error_kind = 'not_found', error_field = 'member',
				error = 'no member ' || l.member || ' in this program'
			FROM bulk_batches b
			WHERE b.id = $1 AND l.batch_id = $1 AND l.status = 'valid'
				AND NOT EXISTS (SELECT 1 FROM members m JOIN programs p ON p.id = m.program_id
					WHERE p.code = b.program AND m.customer_ref = l.member)`, id)
		if err != nil {
			return fmt.Errorf("mark unknown members: %w", err)
		}
		_, err = tx.Exec(ctx, `UPDATE bulk_batches b SET status = 'validated',
				validated_at = clock_timestamp(), lines = s.n, valid_lines = s.valid,
				invalid_lines = s.n - s.valid, credit_points = s.credit,
				debit_points = s.debit,
				needs_approval = $2 > 0 AND s.credit + s.debit > $2
			FROM (SELECT count(*) AS n, count(*) FILTER (WHERE status = 'valid') AS valid,
					coalesce(sum(points) FILTER (WHERE status = 'valid' AND points > 0), 0)
						AS credit,
					coalesce(-sum(points) FILTER (WHERE status = 'valid' AND points < 0), 0)
						AS debit
				FROM bulk_lines WHERE batch_id = $1) s
			WHERE b.id = $1`, id, approvalPoints)
		if err != nil {
			return fmt.Errorf("count batch: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return batchByID(ctx, db, id)
}

func (l *Ledger) batchByID(ctx context.Context, id string) (*core.Batch, error) {
	return batchByID(ctx, l.pool, id)
}

func batchByID(ctx context.Context, db bulkDB, id string) (*core.Batch, error) {
	b, err := scanBatch(db.QueryRow(ctx, `SELECT `+batchColumns+` FROM bulk_batches
		WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("read batch: %w", err)
	}
	return b, nil
}

// FailBatch marks a batch that cannot be read as failed, with the reason.
func (l *Ledger) FailBatch(ctx context.Context, id, reason string) error {
	_, err := l.pool.Exec(ctx, `UPDATE bulk_batches SET status = 'failed', error = $2,
		finished_at = now() WHERE id = $1`, id, reason)
	if err != nil {
		return fmt.Errorf("fail batch: %w", err)
	}
	return nil
}

// validationLockClass is the first key of the advisory locks that let one
// process at a time validate a batch (the second key is a hash of the
// batch id). The other advisory locks of Puntos take one bigint key, and
// PostgreSQL never confuses the two kinds.
const validationLockClass = 7263003

// BatchValidation is the right of one process to validate one batch: a
// PostgreSQL session advisory lock held on a connection of its own, which
// also carries every write of the validation. A process that stops, or
// whose connection is cut, loses the lock and can write nothing more with
// it, so another process may take the batch over without two validations
// ever writing its lines at once.
type BatchValidation struct {
	id   string
	conn *pgxpool.Conn
}

// LockValidation takes the right to validate batch id, until Release.
// Errors: conflict (it is being validated now, by another process or
// another part of this one).
func (l *Ledger) LockValidation(ctx context.Context, id string) (*BatchValidation, error) {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("validation lock: %w", err)
	}
	var got bool
	err = conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1::int4, hashtext($2::text))`,
		validationLockClass, id).Scan(&got)
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("validation lock: %w", err)
	}
	if !got {
		conn.Release()
		return nil, core.Errorf(core.Conflict, "batch", "is being validated by another process")
	}
	return &BatchValidation{id: id, conn: conn}, nil
}

// Release gives the right up. A connection that cannot say so is closed,
// which ends the lock as well.
func (v *BatchValidation) Release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := v.conn.Exec(ctx, `SELECT pg_advisory_unlock($1::int4, hashtext($2::text))`,
		validationLockClass, v.id)
	if err != nil {
		_ = v.conn.Conn().Close(ctx)
	}
	v.conn.Release()
}

// Batch reads the batch as it is now.
func (v *BatchValidation) Batch(ctx context.Context) (*core.Batch, error) {
	return batchByID(ctx, v.conn, v.id)
}

// Start is StartValidation under the lock.
func (v *BatchValidation) Start(ctx context.Context) error {
	return startValidation(ctx, v.conn, v.id)
}

// AddLines is AddBatchLines under the lock.
func (v *BatchValidation) AddLines(ctx context.Context, lines []core.BatchLine) error {
	return addBatchLines(ctx, v.conn.Conn(), v.id, lines)
}

// Finish is FinishValidation under the lock.
func (v *BatchValidation) Finish(ctx context.Context, approvalPoints int64) (*core.Batch,
	error) {
	return finishValidation(ctx, v.conn, v.id, approvalPoints)
}

// Fail is FailBatch under the lock.
func (v *BatchValidation) Fail(ctx context.Context, reason string) error {
	_, err := v.conn.Exec(ctx, `UPDATE bulk_batches SET status = 'failed', error = $2,
		finished_at = now() WHERE id = $1`, v.id, reason)
	if err != nil {
		return fmt.Errorf("fail batch: %w", err)
	}
	return nil
}

// Abandon gives a batch whose validation could not finish back as
// received, with the reason, so that it is validated again (from the
// start) when asked to, instead of seeming to be validated still.
func (v *BatchValidation) Abandon(ctx context.Context, reason string) error {
	_, err := v.conn.Exec(ctx, `UPDATE bulk_batches SET status = 'received', error = $2
		WHERE id = $1 AND status IN ('received', 'validating')`, v.id, reason)
	if err != nil {
		return fmt.Errorf("abandon validation: %w", err)
	}
	return nil
}

// ApproveBatch records a second person's approval of a validated batch.
// Errors: not_found, conflict (not validated, already approved, or not in
// need of approval), unauthorized (the approver is the uploader).
func (l *Ledger) ApproveBatch(ctx context.Context, program, id,
	actor string) (*core.Batch, error) {
	return l.ApproveBatchAs(ctx, program, id, actor, "")
}

// ApproveBatchAs is ApproveBatch through the API, by the key of source: a
// key that uploaded the batch cannot approve it, whatever person X-Actor
// names, since the key sets that header as it likes. Errors: as
// ApproveBatch; unauthorized (the uploader's key).
func (l *Ledger) ApproveBatchAs(ctx context.Context, program, id, actor,
	source string) (*core.Batch, error) {
	b, err := l.Batch(ctx, program, id)
	if err != nil {
		return nil, err
	}
	switch {
	case !b.NeedsApproval:
		return nil, core.Errorf(core.Conflict, "batch", "does not need an approval")
	case b.ApprovedBy != "":
		return nil, core.Errorf(core.Conflict, "batch", "was already approved by %s",
			b.ApprovedBy)
	case b.Status != core.BatchValidated:
		return nil, core.Errorf(core.Conflict, "batch", "is %s, not validated", b.Status)
	case samePerson(actor, b.UploadedBy):
		return nil, core.Errorf(core.Forbidden, "X-Actor",
			"the approver must be another person than the uploader")
	case source != "" && source == b.UploadedSource:
		return nil, core.Errorf(core.Forbidden, "Authorization", "the API key that "+
			"uploaded the batch cannot approve it: approve with another system's key, or "+
			"in the back office")
	}
	tag, err := l.pool.Exec(ctx, `UPDATE bulk_batches SET approved_by = $2, approved_at = now()
		WHERE id = $1 AND approved_by = ''`, b.ID, actor)
	if err != nil {
		return nil, fmt.Errorf("approve batch: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return nil, core.Errorf(core.Conflict, "batch", "was approved meanwhile")
	}
	return l.batchByID(ctx, b.ID)
}

// samePerson reports whether two actor names name one person: case and
// the spaces around them do not tell people apart ("ana" and " ANA").
func samePerson(a, b string) bool {
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}

// StartPosting marks a batch as posting and notes where this run starts.
// A batch already posting (an interrupted run) may be started again.
// Errors: conflict (not validated, or awaiting approval).
func (l *Ledger) StartPosting(ctx context.Context, id, actor string) (*core.Batch, error) {
	b, err := l.batchByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if b.Status != core.BatchValidated && b.Status != core.BatchPosting {
		return nil, core.Errorf(core.Conflict, "batch", "is %s; only a validated batch posts",
			b.Status)
	}
	if b.NeedsApproval && b.ApprovedBy == "" {
		return nil, core.Errorf(core.Conflict, "batch",
			"moves %d points, above the approval limit: another person must approve it first",
			b.Credit+b.Debit)
	}
	_, err = l.pool.Exec(ctx, `UPDATE bulk_batches SET status = 'posting',
			posted_by = CASE WHEN posted_by = '' THEN $2 ELSE posted_by END,
			started_at = coalesce(started_at, now()), run_started_at = now(),
			run_start_done = posted_lines + rejected_lines
		WHERE id = $1`, id, actor)
	if err != nil {
		return nil, fmt.Errorf("start posting: %w", err)
	}
	return l.batchByID(ctx, id)
}

// PendingLines returns up to limit valid lines after line number after, in
// file order: what the posting step has still to apply.
func (l *Ledger) PendingLines(ctx context.Context, id string, after int64,
	limit int) ([]core.BatchLine, error) {
	return l.readLines(ctx, `status = 'valid'`, id, after, limit)
}

// BatchLines returns up to limit lines after line number after, in file
// order; onlyErrors keeps the invalid and rejected ones.
func (l *Ledger) BatchLines(ctx context.Context, id string, after int64, limit int,
	onlyErrors bool) ([]core.BatchLine, error) {
	where := `true`
	if onlyErrors {
		where = `status IN ('invalid', 'rejected')`
	}
	return l.readLines(ctx, where, id, after, limit)
}

func (l *Ledger) readLines(ctx context.Context, where, id string, after int64,
	limit int) ([]core.BatchLine, error) {
	rows, err := l.pool.Query(ctx, `SELECT line, member, points, reason, effective_at,
			expires_at, txn_id, status, error_kind, error_field, error, replayed
		FROM bulk_lines WHERE batch_id = $1 AND line > $2 AND `+where+`
		ORDER BY line LIMIT $3`, id, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read batch lines: %w", err)
	}
	defer rows.Close()
	out := make([]core.BatchLine, 0, limit)
	for rows.Next() {
		var x core.BatchLine
		if err := rows.Scan(&x.Line, &x.Member, &x.Points, &x.Reason, &x.EffectiveAt,
			&x.ExpiresAt, &x.TxnID, &x.Status, &x.ErrorKind, &x.ErrorField, &x.Error,
			&x.Replayed); err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// execer runs a statement on a pool or in a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// recordOutcomes stores the outcome of lines (each posted or rejected), adds
// them to the batch's counts and moves its posted_through mark to through
// when that is further on.
func recordOutcomes(ctx context.Context, q execer, id string, lines []core.BatchLine,
	through int64) error {
	n := len(lines)
	nums, statuses := make([]int64, n), make([]string, n)
	kinds, fields, msgs := make([]string, n), make([]string, n), make([]string, n)
	replayed := make([]bool, n)
	for i, x := range lines {
		nums[i], statuses[i], kinds[i], fields[i], msgs[i] = x.Line, x.Status, x.ErrorKind,
			x.ErrorField, x.Error
		replayed[i] = x.Replayed
	}
	first, last := int64(0), int64(-1) // no line when there is none
	if n > 0 {
		first, last = slices.Min(nums), slices.Max(nums)
	}
	// Only lines still valid change, so that recording a chunk twice counts
	// it once. The range of line numbers keeps the planner on the primary
	// key: joined by line number alone, it read every line of the table to
	// hash them, once per chunk, so that a file's posting slowed down with
	// the file's length (and with every file loaded before).
	_, err := q.Exec(ctx, `WITH u AS (
			UPDATE bulk_lines l SET status = u.status, error_kind = u.kind,
				error_field = u.field, error = u.msg, replayed = u.replayed
			FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
				$7::boolean[]) AS u(line, status, kind, field, msg, replayed)
			WHERE l.batch_id = $1 AND l.line BETWEEN $9 AND $10 AND l.line = u.line
				AND l.status = 'valid'
			RETURNING l.status, l.replayed)
		UPDATE bulk_batches SET posted_through = greatest(posted_through, $8),
			posted_lines = posted_lines + (SELECT count(*) FROM u WHERE status = 'posted'),
			replayed_lines = replayed_lines +
				(SELECT count(*) FROM u WHERE status = 'posted' AND replayed),
			rejected_lines = rejected_lines + (SELECT count(*) FROM u WHERE status = 'rejected')
		WHERE id = $1`, id, nums, statuses, kinds, fields, msgs, replayed, through, first, last)
	if err != nil {
		return fmt.Errorf("record line outcomes: %w", err)
	}
	return nil
}

// MarkPostedThrough moves the batch's posted_through mark to through: every
// valid line up to it is settled. A resumed run starts after the mark.
func (l *Ledger) MarkPostedThrough(ctx context.Context, id string, through int64) error {
	_, err := l.pool.Exec(ctx, `UPDATE bulk_batches
		SET posted_through = greatest(posted_through, $2) WHERE id = $1`, id, through)
	if err != nil {
		return fmt.Errorf("mark posting progress: %w", err)
	}
	return nil
}

// FinishPosting marks a batch as posted.
func (l *Ledger) FinishPosting(ctx context.Context, id string, at time.Time) (*core.Batch, error) {
	_, err := l.pool.Exec(ctx, `UPDATE bulk_batches SET status = 'posted', finished_at = $2
		WHERE id = $1`, id, at)
	if err != nil {
		return nil, fmt.Errorf("finish posting: %w", err)
	}
	return l.batchByID(ctx, id)
}
