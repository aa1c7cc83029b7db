package backoffice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// memberView is what the members page shows.
type memberView struct {
	Programs  []string
	Program   string
	Ref       string
	Searched  bool
	Balance   *postgres.BalanceView
	Statement *postgres.StatementPage
	Threshold core.Points
	Pending   []pendingAdjustment
	// Tier is the member's tier now; nil when the program has none.
	Tier *core.TierStatus
	// Zone is the program's time zone: dates show as members see them.
	Zone *time.Location
	// Similar are references that start with what was searched, offered
	// when no member has it exactly.
	Similar []string
	// Conversions are the member's pending conversions into other
	// companies' programs, however old, then its latest settled ones.
	Conversions []core.Conversion
	// WaitingClose is the request number of a close of the member waiting
	// on the Approvals page, or 0.
	WaitingClose int64
}

// conversionReader lists a member's conversions; the ledger has them.
type conversionReader interface {
	Conversions(ctx context.Context, program, ref, cursor string, limit int) (
		*postgres.ConversionPage, error)
	PendingConversions(ctx context.Context, program, ref string) ([]core.Conversion, error)
}

// tierReader reviews a member's tier; the ledger has it.
type tierReader interface {
	MemberTier(ctx context.Context, program, ref string, at time.Time) (*core.TierStatus, error)
}

func (s *Server) membersPage(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	q := r.URL.Query()
	v := memberView{Program: q.Get("program"), Ref: strings.TrimSpace(q.Get("member")),
		Threshold: s.opt.ApprovalThreshold}
	var err error
	if v.Programs, err = s.programCodes(ctx); err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	if v.Program == "" && len(v.Programs) > 0 {
		v.Program = v.Programs[0]
	}
	page := view{Title: "Members", User: sess, Data: &v}
	if v.Ref == "" {
		s.render(w, r, http.StatusOK, "members.html", page)
		return
	}
	v.Searched = true
	v.Zone = time.UTC
	if p, err := s.read.Program(ctx, v.Program); err == nil {
		if loc, err := time.LoadLocation(p.TimeZone); err == nil {
			v.Zone = loc
		}
	}
	v.Balance, err = s.read.Balance(ctx, v.Program, v.Ref)
	if core.KindOf(err) == core.NotFound {
		page.Problem = fmt.Sprintf("No member %q in program %q.", v.Ref, v.Program)
		if v.Similar, err = s.similarRefs(ctx, v.Program, v.Ref); err != nil {
			s.fail(w, r, sess, http.StatusInternalServerError, "", err)
			return
		}
		s.render(w, r, http.StatusNotFound, "members.html", page)
		return
	}
	if err == nil {
		v.Statement, err = s.read.Statement(ctx, v.Program, v.Ref, "", 50)
	}
	if err == nil {
		err = s.settleSent(ctx)
	}
	if err == nil {
		v.Pending, err = s.pendingAdjustments(ctx, v.Program, v.Balance.Member)
	}
	if cr, ok := s.read.(conversionReader); ok && err == nil {
		v.Conversions, err = memberConversions(ctx, cr, v.Program, v.Ref)
	}
	if err == nil {
		v.WaitingClose, _, err = s.waitingClose(ctx, v.Program, v.Balance.Member)
	}
	if tr, ok := s.read.(tierReader); ok && err == nil {
		v.Tier, err = tr.MemberTier(ctx, v.Program, v.Ref, s.now())
		if core.KindOf(err) == core.NotFound { // the program has no tiers
			v.Tier, err = nil, nil
		}
	}
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	s.render(w, r, http.StatusOK, "members.html", page)
}

// memberConversions are a member's pending and disputed conversions,
// however old, then the latest ten other settled ones, newest first.
func memberConversions(ctx context.Context, cr conversionReader, program, ref string) (
	[]core.Conversion, error) {
	out, err := cr.PendingConversions(ctx, program, ref)
	if err != nil {
		return nil, err
	}
	page, err := cr.Conversions(ctx, program, ref, "", min(10+len(out), 500))
	if err != nil {
		return nil, err
	}
	settled := 0
	for _, c := range page.Conversions {
		if c.Status != core.ConversionPending && c.DisputedAt == nil && settled < 10 {
			out = append(out, c)
			settled++
		}
	}
	return out, nil
}

// similarRefs are up to ten references of the program's members that start
// with ref as typed, in upper or in lower case (a part of a phone number, a
// reference typed in the wrong case), read by ranges of the members' index
// by program and reference.
func (s *Server) similarRefs(ctx context.Context, program, ref string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, prefix := range []string{ref, strings.ToUpper(ref), strings.ToLower(ref)} {
		if seen["\x00"+prefix] {
			continue
		}
		seen["\x00"+prefix] = true
		rows, err := s.db.Query(ctx, `SELECT m.customer_ref FROM members m
			WHERE m.program_id = (SELECT id FROM programs WHERE code = $1)
			  AND m.customer_ref >= $2 AND m.merged_into IS NULL
			ORDER BY m.customer_ref LIMIT 10`, program, prefix)
		if err != nil {
			return nil, fmt.Errorf("similar members: %w", err)
		}
		refs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("similar members: %w", err)
		}
		for _, r := range refs {
			if strings.HasPrefix(r, prefix) && !seen[r] && len(out) < 10 {
				seen[r] = true
				out = append(out, r)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// adjust makes a manual adjustment, or queues it for a second person when
// it is larger than the threshold either way.
func (s *Server) adjust(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	program := r.PostFormValue("program")
	ref := strings.TrimSpace(r.PostFormValue("member"))
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	back := url.Values{"program": {program}, "member": {ref}}
	points, err := wholeNumber(strings.TrimSpace(r.PostFormValue("points")))
	switch {
	case err != nil || points == 0 || points > int64(core.MaxPoints) ||
		points < -int64(core.MaxPoints):
		s.fail(w, r, sess, http.StatusBadRequest, fmt.Sprintf("Points must be a whole "+
			"number other than zero, at most %d either way (thousands may be grouped as "+
			"1,500 or 1.500).", core.MaxPoints), nil)
		return
	case reason == "":
		s.fail(w, r, sess, http.StatusBadRequest,
			"A reason is required for every adjustment.", nil)
		return
	case utf8.RuneCountInString(reason) > core.MaxReason:
		s.fail(w, r, sess, http.StatusBadRequest, fmt.Sprintf("The reason is %d characters "+
			"long; it may be at most %d. Nothing was changed.", utf8.RuneCountInString(reason),
			core.MaxReason), nil)
		return
	}
	if err := core.CheckReason(reason, true); err != nil {
		s.failForm(w, r, sess, err)
		return
	}
	m, err := s.read.Member(ctx, program, ref)
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}

	// A person's adjustments of one member add up over a day: one large
	// adjustment split into small ones still waits for a second person.
	// The lock keeps two forms of the same person (for one member, or one
	// form sent for two) from both passing the checks before either is
	// applied: a person's adjustments go one at a time.
	conn, err := s.db.Acquire(ctx)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	defer conn.Release()
	lockKey := "adjust/" + sess.Name
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended($1, 0))`,
		lockKey); err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	defer func() {
		// A connection whose unlock failed would go back to the pool still
		// holding the lock, and the person's next adjustment would wait
		// for good: it is closed instead, which releases it.
		uctx := context.WithoutCancel(ctx)
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`,
			lockKey); err != nil {
			_ = conn.Conn().Close(uctx)
		}
	}()
	txn := formTxn(r)
	alone, err := s.adjustedAlone(ctx, conn, program, m.CustomerRef, sess.Name, txn)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	// A form sent again takes the way it took the first time, whatever its
	// points now: queued, the queue says whether it is the same request;
	// sent alone, the ledger does. (Queued once and applied alone the
	// second time, one form made two adjustments.)
	var queuedBefore, sentBefore bool
	var form any // none without a form id
	if id := formID(r); id != "" {
		form = id
	}
	err = conn.QueryRow(ctx, `SELECT
			EXISTS (SELECT 1 FROM bo_pending_adjustments WHERE form_id = $1),
			EXISTS (SELECT 1 FROM bo_adjusted_alone WHERE txn_id = $2)`,
		form, txn).Scan(&queuedBefore, &sentBefore)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}

	// Large adjustments wait for a second person.
	// The request and its audit entry are stored together; a form sent
	// twice queues it once.
	if queuedBefore || !sentBefore && abs(points)+alone > int64(s.opt.ApprovalThreshold) {
		reused := false
		err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
			var id int64
			err := tx.QueryRow(ctx, `INSERT INTO bo_pending_adjustments (program, member,
				points, reason, requested_by, requested_at, form_id)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (form_id) DO NOTHING RETURNING id`, program, m.CustomerRef,
				points, reason, sess.Name, s.now(), form).Scan(&id)
			if errors.Is(err, pgx.ErrNoRows) {
				same, err := s.queuedByForm(ctx, form.(string), "adjust", program,
					m.CustomerRef, points, sess.Name)
				reused = !same
				return err
			}
			if err != nil {
				return fmt.Errorf("queue adjustment: %w", err)
			}
			return s.auditIn(ctx, tx, sess.Name, "adjustment.requested",
				program+"/"+m.CustomerRef, nil,
				map[string]any{"pending_id": id, "points": points, "reason": reason})
		})
		if err != nil {
			s.fail(w, r, sess, http.StatusInternalServerError, "", err)
			return
		}
		if reused {
			s.failFormReused(w, r, sess)
			return
		}
		redirect(w, r, "/admin/members", back, "queued")
		return
	}

	// Counted before it is sent: a later form of the same person finds it
	// even while the ledger has not applied it yet (answered 202).
	tag, err := conn.Exec(ctx, `INSERT INTO bo_adjusted_alone (person, program, member,
			points, txn_id, at) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (txn_id) DO NOTHING`, sess.Name, program, m.CustomerRef, points, txn,
		s.now())
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	counted := tag.RowsAffected() == 1
	res, err := s.memberChange(ctx, sess, core.KindAdjust, program, m.CustomerRef, txn,
		core.Adjust{Points: core.Points(points), Reason: reason}, "adjustment.applied")
	var ce *core.Error
	if counted && res.Status == bus.StatusRejected &&
		!(errors.As(err, &ce) && ce.Field == "txn_id") {
		// Counted by this request, so no earlier sending of the form is
		// (one applied stays counted), and refused by the ledger: nothing
		// was adjusted under it. A refusal of the txn itself (used for
		// another request) stays counted, to be safe; so does one refused
		// after a 202 answer.
		if _, derr := conn.Exec(context.WithoutCancel(ctx), `DELETE FROM bo_adjusted_alone
			WHERE txn_id = $1`, txn); derr != nil {
			s.log.Error("Uncount a refused adjustment", "txn_id", txn, "error", derr)
		}
	}
	if err != nil {
		s.failSent(w, r, sess, res, err)
		return
	}
	done := "applied"
	if res.Status == "" {
		done = "accepted"
	}
	if res.Replayed {
		done = "replayed"
	}
	redirect(w, r, "/admin/members", back, done)
}

// adjustedAlone is how many points, either way, person has adjusted the
// member by in the back office over the last day without a second person,
// as sent to the ledger (applied or not yet), but the form txn itself
// (sent again, it is the same adjustment); approvals are not counted.
func (s *Server) adjustedAlone(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, program, member, person, txn string) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `SELECT coalesce(sum(abs(points)), 0)::bigint
		FROM bo_adjusted_alone
		WHERE person = $1 AND program = $2 AND member = $3 AND at > $4 AND txn_id <> $5`,
		person, program, member, s.now().Add(-24*time.Hour), txn).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("read the day's adjustments: %w", err)
	}
	return n, nil
}

// pendingAdjustment is an adjustment waiting for, or given, a decision.
type pendingAdjustment struct {
	ID int64
	// Kind is "adjust" or "close"; a close's Points is what it forfeits.
	Kind        string
	Program     string
	Member      string
	Points      core.Points
	Reason      string
	RequestedBy string
	RequestedAt time.Time
	Status      string
	DecidedBy   string
	Outcome     string
	DecidedAt   *time.Time // read for the recent decisions only
}

const selectPending = `SELECT id, kind, program, member, points, reason, requested_by,
	requested_at, status, coalesce(decided_by, ''), outcome FROM bo_pending_adjustments`

func (s *Server) pendingAdjustments(ctx context.Context, program, member string) (
	[]pendingAdjustment, error) {
	where, args := ` WHERE status IN ('pending', 'failed', 'submitted')`, []any{}
	if member != "" {
		where, args = ` WHERE program = $1 AND member = $2`, []any{program, member}
	}
	rows, err := s.db.Query(ctx, selectPending+where+` ORDER BY id DESC LIMIT 200`, args...)
	if err != nil {
		return nil, fmt.Errorf("read pending adjustments: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pendingAdjustment, error) {
		var p pendingAdjustment
		err := row.Scan(&p.ID, &p.Kind, &p.Program, &p.Member, &p.Points, &p.Reason,
			&p.RequestedBy, &p.RequestedAt, &p.Status, &p.DecidedBy, &p.Outcome)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("read pending adjustments: %w", err)
	}
	return list, nil
}

// recentDecisions are the last adjustments given a decision (applied,
// refused by the ledger or rejected), newest first, so that the person who
// asked sees what became of a request that left the list.
func (s *Server) recentDecisions(ctx context.Context) ([]pendingAdjustment, error) {
	rows, err := s.db.Query(ctx, `SELECT id, kind, program, member, points, reason,
			requested_by, requested_at, status, coalesce(decided_by, ''), outcome, decided_at
		FROM bo_pending_adjustments WHERE status IN ('applied', 'refused', 'rejected')
		ORDER BY decided_at DESC NULLS LAST, id DESC LIMIT 20`)
	if err != nil {
		return nil, fmt.Errorf("read decided adjustments: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pendingAdjustment, error) {
		var p pendingAdjustment
		err := row.Scan(&p.ID, &p.Kind, &p.Program, &p.Member, &p.Points, &p.Reason,
			&p.RequestedBy, &p.RequestedAt, &p.Status, &p.DecidedBy, &p.Outcome, &p.DecidedAt)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("read decided adjustments: %w", err)
	}
	return list, nil
}

func (s *Server) approvalsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	if err := s.settleSent(r.Context()); err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	list, err := s.pendingAdjustments(r.Context(), "", "")
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	decided, err := s.recentDecisions(r.Context())
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	batches, err := s.batchesAwaitingApproval(r.Context())
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	s.render(w, r, http.StatusOK, "approvals.html", view{Title: "Approvals", User: sess,
		Data: approvalsView{Adjustments: list, Decided: decided, Batches: batches}})
}

// approvalsView is what approvals.html receives: the adjustments and the
// bulk files that wait for a second person.
type approvalsView struct {
	Adjustments []pendingAdjustment
	Decided     []pendingAdjustment
	Batches     []awaitingBatch
}

// awaitingBatch is a validated bulk file above the approval limit that
// nobody has approved yet.
type awaitingBatch struct {
	ID, Program, FileName, UploadedBy string
	Points                            int64
	CreatedAt                         time.Time
}

// Path is the batch's page, where it is approved.
func (b awaitingBatch) Path() string { return "/admin/bulk/" + b.Program + "/" + b.ID }

func (s *Server) batchesAwaitingApproval(ctx context.Context) ([]awaitingBatch, error) {
	rows, err := s.db.Query(ctx, `SELECT id::text, program, file_name, uploaded_by,
			credit_points + debit_points, created_at
		FROM bulk_batches WHERE status = 'validated' AND needs_approval AND approved_by = ''
		ORDER BY created_at, id LIMIT 200`)
	if err != nil {
		return nil, fmt.Errorf("read batches awaiting approval: %w", err)
	}
	defer rows.Close()
	var out []awaitingBatch
	for rows.Next() {
		var b awaitingBatch
		if err := rows.Scan(&b.ID, &b.Program, &b.FileName, &b.UploadedBy, &b.Points,
			&b.CreatedAt); err != nil {
			return nil, fmt.Errorf("read batches awaiting approval: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// approve sends a queued adjustment to the ledger. The approver must not be
// the person who asked for it; the database checks that too.
func (s *Server) approve(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		s.fail(w, r, sess, http.StatusNotFound, "There is no such request.", nil)
		return
	}
	var p pendingAdjustment
	var was string
	var bound *int64
	// A failed approval (the ledger was out of reach), or one sent whose
	// answer did not come in time, may be sent again by anyone but its
	// requester. It keeps its first approver and, for a close, the bound
	// fixed then, so that the command is the same as the first one,
	// transaction id and all: if the first did reach the ledger, this one
	// only hears its result again.
	err = s.db.QueryRow(ctx, `WITH old AS (
			SELECT id, status FROM bo_pending_adjustments WHERE id = $1 FOR UPDATE)
		UPDATE bo_pending_adjustments b
		SET status = 'submitted',
			decided_by = CASE WHEN b.status IN ('failed', 'submitted') THEN b.decided_by
				ELSE $2 END,
			decided_at = CASE WHEN b.status IN ('failed', 'submitted') THEN b.decided_at
				ELSE $3 END,
			max_forfeit = CASE WHEN b.status IN ('failed', 'submitted') THEN b.max_forfeit
				WHEN b.kind = 'close' THEN -b.points + $4 END
		FROM old
		WHERE b.id = old.id AND b.status IN ('pending', 'failed', 'submitted')
		  AND b.requested_by <> $2
		RETURNING old.status, b.kind, b.program, b.member, b.points, b.reason,
			b.requested_by, b.decided_by, b.max_forfeit`, id, sess.Name, s.now(),
		int64(s.opt.ApprovalThreshold)).Scan(&was, &p.Kind, &p.Program, &p.Member, &p.Points,
		&p.Reason, &p.RequestedBy, &p.DecidedBy, &bound)
	if errors.Is(err, pgx.ErrNoRows) {
		s.failNotWaiting(w, r, sess, id)
		return
	}
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}

	// The transaction id is the queue entry's, so a retry cannot post twice.
	// The ledger writes the approval's audit entry when it applies it, under
	// the first approver, once however many times it is sent.
	reason := approvalReason(p)
	kind, payload, name := core.KindAdjust, any(core.Adjust{Points: p.Points, Reason: reason}),
		"adjustment"
	if p.Kind == "close" {
		// The approver saw what the close would take when it was asked for;
		// the member may have earned since. It may take that much more as
		// one person could close alone, and the ledger refuses more.
		mf := core.Points(-p.Points) + s.opt.ApprovalThreshold
		if bound != nil {
			mf = core.Points(*bound)
		}
		kind, payload, name = core.KindClose,
			core.StatusChange{Reason: reason, MaxForfeit: &mf}, "close"
	}
	cmd, err := s.command(kind, p.Program, p.Member, approvalTxn(id), p.DecidedBy, payload)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	cmd.Audit = &bus.Audit{Action: name + ".approved", Target: p.Program + "/" + p.Member}
	res, err := s.send(ctx, cmd)
	status, outcome := approvalOutcome(res, err)
	// The outcome is stored even when the request was cancelled meanwhile,
	// by the first answer to arrive: a second approver's replay of the same
	// command records nothing more.
	tag, uerr := s.db.Exec(context.WithoutCancel(ctx), `UPDATE bo_pending_adjustments
		SET status = $2, outcome = $3 WHERE id = $1 AND status = 'submitted'`, id, status,
		outcome)
	if uerr != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", uerr)
		return
	}
	// What the ledger did not write: a refusal, a failure to reach it, and
	// the first sending of an approval whose answer is late.
	if tag.RowsAffected() == 1 && (status == "refused" || status == "failed" ||
		(status == "submitted" && was == "pending")) {
		action := map[string]string{"submitted": ".sent", "failed": ".failed",
			"refused": ".refused"}[status]
		s.audit(ctx, sess.Name, name+action, p.Program+"/"+p.Member,
			map[string]any{"pending_id": id},
			map[string]any{"points": p.Points, "requested_by": p.RequestedBy,
				"approved_by": p.DecidedBy, "outcome": outcome})
	}
	if status == "failed" {
		s.log.Error("Approved request did not reach the ledger", "pending_id", id,
			"kind", p.Kind, "error", err)
		redirect(w, r, "/admin/approvals", nil, "failed")
		return
	}
	var le *core.Error
	if errors.As(err, &le) && le.Field == "max_forfeit" {
		s.fail(w, r, sess, http.StatusUnprocessableEntity, fmt.Sprintf("The ledger refused "+
			"the close: the member has earned since it was asked for, and it would now "+
			"forfeit more than the %s points asked for plus the %s one person may close "+
			"alone. Nothing was changed; the request is marked refused. Ask for the close "+
			"again from the member's page.", formatPoints(-int64(p.Points)),
			formatPoints(int64(s.opt.ApprovalThreshold))), nil)
		return
	}
	if errors.As(err, &le) {
		s.fail(w, r, sess, http.StatusUnprocessableEntity,
			"The ledger refused the "+name+": "+ledgerMessage(le), nil)
		return
	}
	if status == "submitted" {
		redirect(w, r, "/admin/approvals", nil, "approval-sent")
		return
	}
	done := "approved"
	if p.Kind == "close" {
		done = "close-approved"
	}
	redirect(w, r, "/admin/members", url.Values{"program": {p.Program},
		"member": {p.Member}}, done)
}

// failNotWaiting says why request id cannot be approved by sess's user.
func (s *Server) failNotWaiting(w http.ResponseWriter, r *http.Request, sess *session,
	id int64) {
	var status, by string
	err := s.db.QueryRow(r.Context(), `SELECT status, requested_by FROM bo_pending_adjustments
		WHERE id = $1`, id).Scan(&status, &by)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		s.fail(w, r, sess, http.StatusNotFound, fmt.Sprintf("There is no request %d.", id), nil)
	case err != nil:
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
	case by == sess.Name:
		s.fail(w, r, sess, http.StatusConflict, "You asked for this request yourself: a "+
			"second person must approve it.", nil)
	default:
		s.fail(w, r, sess, http.StatusConflict, fmt.Sprintf("This request was decided "+
			"already (%s).", status), nil)
	}
}

// approvalTxn is the ledger transaction id of an approved request.
func approvalTxn(id int64) string { return fmt.Sprintf("backoffice-approval-%d", id) }

// settleSent records the ledger's answer to approvals sent without one
// (the wait ran out): the ledger keeps every command's result, so the
// request need not wait for someone to check again. A refusal is audited
// here; an applied request was audited by the ledger.
func (s *Server) settleSent(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `UPDATE bo_pending_adjustments b
		SET status = CASE WHEN c.status = 'ok' THEN 'applied' ELSE 'refused' END,
			outcome = CASE WHEN c.status = 'ok' THEN ''
				ELSE coalesce(c.result->'error'->>'message', 'refused') END
		FROM commands c
		WHERE b.status = 'submitted' AND c.source = $1
		  AND c.txn_id = 'backoffice-approval-' || b.id
		  AND c.kind = CASE b.kind WHEN 'close' THEN 'member.close' ELSE 'points.adjust' END
		RETURNING b.id, b.kind, b.program, b.member, b.points, b.requested_by,
			coalesce(b.decided_by, ''), b.status, b.outcome`, Source)
	if err != nil {
		return fmt.Errorf("settle sent approvals: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pendingAdjustment, error) {
		var p pendingAdjustment
		err := row.Scan(&p.ID, &p.Kind, &p.Program, &p.Member, &p.Points, &p.RequestedBy,
			&p.DecidedBy, &p.Status, &p.Outcome)
		return p, err
	})
	if err != nil {
		return fmt.Errorf("settle sent approvals: %w", err)
	}
	for _, p := range list {
		if p.Status == "refused" {
			name := map[string]string{"adjust": "adjustment", "close": "close"}[p.Kind]
			s.audit(ctx, p.DecidedBy, name+".refused", p.Program+"/"+p.Member,
				map[string]any{"pending_id": p.ID},
				map[string]any{"points": p.Points, "requested_by": p.RequestedBy,
					"approved_by": p.DecidedBy, "outcome": p.Outcome})
		}
	}
	return nil
}

// approvalOutcome is the status and outcome text an approval keeps after
// its command was sent: applied, refused by the ledger, submitted (the wait
// ran out; the ledger has it), or failed (the bus or the ledger was out of
// reach, so it may never have arrived; it can be sent again).
func approvalOutcome(res bus.Result, err error) (status, outcome string) {
	var le *core.Error
	switch {
	case errors.As(err, &le) && le.Kind == core.Unavailable:
		return "failed", "not sent: " + le.Message
	case errors.As(err, &le):
		return "refused", le.Message
	case err != nil:
		return "failed", "not confirmed: " + err.Error()
	case res.Status == "":
		return "submitted", "sent; the ledger has not answered yet"
	}
	return "applied", ""
}

func (s *Server) reject(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		s.fail(w, r, sess, http.StatusNotFound, "There is no such request.", nil)
		return
	}
	var p pendingAdjustment
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		// Its requester may withdraw a request; anyone else rejects it.
		err := tx.QueryRow(ctx, `UPDATE bo_pending_adjustments
			SET status = 'rejected', decided_by = $2, decided_at = $3,
				outcome = CASE WHEN requested_by = $2 THEN 'withdrawn by the requester'
					ELSE 'rejected by a second person' END
			WHERE id = $1 AND status = 'pending'
			RETURNING kind, program, member, points, requested_by`,
			id, sess.Name, s.now()).Scan(&p.Kind, &p.Program, &p.Member, &p.Points,
			&p.RequestedBy)
		if err != nil {
			return err
		}
		action := map[string]string{"adjust": "adjustment", "close": "close"}[p.Kind] +
			".rejected"
		if p.RequestedBy == sess.Name {
			action = strings.TrimSuffix(action, "rejected") + "withdrawn"
		}
		return s.auditIn(ctx, tx, sess.Name, action, p.Program+"/"+p.Member,
			map[string]any{"pending_id": id, "status": "pending"},
			map[string]any{"pending_id": id, "status": "rejected", "points": p.Points})
	})
	if errors.Is(err, pgx.ErrNoRows) {
		s.fail(w, r, sess, http.StatusConflict, "This request was decided already, or was "+
			"sent to the ledger: only a request still waiting can be rejected.", nil)
		return
	}
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	done := "rejected"
	switch {
	case p.RequestedBy == sess.Name:
		done = "withdrawn"
	case p.Kind == "close":
		done = "close-rejected"
	}
	redirect(w, r, "/admin/approvals", nil, done)
}

// submit publishes a command and waits for the ledger. A refusal comes back
// as a *core.Error; a result with an empty Status means the wait ran out.
func (s *Server) submit(ctx context.Context, kind, program, member, txn, actor string,
	payload any) (bus.Result, error) {
	cmd, err := s.command(kind, program, member, txn, actor, payload)
	if err != nil {
		return bus.Result{}, err
	}
	return s.send(ctx, cmd)
}

// send publishes cmd and waits for the ledger, as submit does.
func (s *Server) send(ctx context.Context, cmd bus.Command) (bus.Result, error) {
	txn := cmd.TxnID
	if s.pub == nil {
		return bus.Result{}, core.Errorf(core.Unavailable, "", "the bus is not connected")
	}
	results, unsubscribe, err := s.pub.SubscribeResult(Source, txn)
	if err != nil {
		return bus.Result{}, core.Errorf(core.Unavailable, "", "the bus is unavailable")
	}
	defer unsubscribe()
	duplicate, err := s.pub.PublishCommand(ctx, cmd)
	if err != nil {
		s.log.Error("Publish failed", "txn_id", txn, "error", err)
		return bus.Result{}, core.Errorf(core.Unavailable, "", "the bus is unavailable")
	}
	// The bus drops a command it holds already, so no new result will come:
	// the ledger may have the first one's.
	store, _ := s.read.(bus.ResultStore)
	if store != nil && duplicate {
		if res, err := store.ResultOf(ctx, cmd); err == nil {
			return resultOf(*res)
		}
	}
	timer := time.NewTimer(s.opt.Wait)
	defer timer.Stop()
	for {
		select {
		case heard := <-results:
			if store == nil {
				if heard.TxnID == txn {
					return resultOf(heard)
				}
				continue
			}
			if res, ok := bus.Answer(ctx, store, cmd, heard); ok {
				return resultOf(res)
			}
		case <-timer.C:
			return bus.Result{TxnID: txn}, nil
		case <-ctx.Done():
			return bus.Result{}, ctx.Err()
		}
	}
}

// resultOf returns a ledger result, with its refusal as a *core.Error.
func resultOf(res bus.Result) (bus.Result, error) {
	if res.Status == bus.StatusRejected && res.Error != nil {
		return res, &core.Error{Kind: core.ErrorKind(res.Error.Kind),
			Field: res.Error.Field, Message: res.Error.Message}
	}
	return res, nil
}

// command builds a back-office command: source "backoffice", channel
// "backoffice", occurred and received now.
func (s *Server) command(kind, program, member, txn, actor string,
	payload any) (bus.Command, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return bus.Command{}, err
	}
	body, sent, err := core.SealPayload(s.read, kind, program, member, body)
	if err != nil {
		return bus.Command{}, err
	}
	now := s.now().UTC()
	cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind,
		Source: Source, TxnID: txn, Program: program, Member: member, Actor: actor,
		Channel: "backoffice", Payload: body, ReceivedAt: now}
	cmd.Seal()
	cmd.Payload = sent // a partner secret is hashed as a keyed digest and sent sealed
	cmd.OccurredAt = now
	return cmd, nil
}

// failLedger shows a ledger or bus error with the status its kind calls for.
func (s *Server) failLedger(w http.ResponseWriter, r *http.Request, sess *session,
	err error) {
	var ce *core.Error
	if !errors.As(err, &ce) {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	s.fail(w, r, sess, statusOf(ce.Kind), "The ledger refused: "+ledgerMessage(ce), nil)
}

// failForm shows a form's own check of a field, made before anything was
// sent to the ledger.
func (s *Server) failForm(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	var ce *core.Error
	if !errors.As(err, &ce) {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	s.fail(w, r, sess, statusOf(ce.Kind), "Nothing was sent: "+ledgerMessage(ce), nil)
}

// ledgerMessage is an error's message with its field in front, unless the
// message names the field already ("member \"x\" is closed").
func ledgerMessage(ce *core.Error) string {
	msg := ce.Message
	if ce.Field != "" && !strings.Contains(msg, ce.Field) {
		msg = ce.Field + " " + msg
	}
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}

// statusOf is the HTTP status of an error kind: the one table of the back
// office.
func statusOf(k core.ErrorKind) int {
	status := map[core.ErrorKind]int{core.Invalid: http.StatusBadRequest,
		core.NotFound: http.StatusNotFound, core.Conflict: http.StatusConflict,
		core.Insufficient: http.StatusUnprocessableEntity,
		core.Unauthorized: http.StatusForbidden, core.Forbidden: http.StatusForbidden,
		core.Unavailable: http.StatusServiceUnavailable}[k]
	if status == 0 {
		status = http.StatusUnprocessableEntity
	}
	return status
}

func (s *Server) balanceAfter(ctx context.Context, program, member string) *core.Balance {
	m, err := s.read.Member(ctx, program, member)
	if err != nil {
		return nil
	}
	return &m.Balance
}

func (s *Server) programCodes(ctx context.Context) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT code FROM programs ORDER BY code`)
	if err != nil {
		return nil, fmt.Errorf("read programs: %w", err)
	}
	codes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read programs: %w", err)
	}
	return codes, nil
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}
