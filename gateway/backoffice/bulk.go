package backoffice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/gateway/files"
)

// maxBulkUpload bounds a file uploaded through the browser; larger files
// go through the inbox folder or the REST API.
const maxBulkUpload = 256 << 20

// bulkErrorsShown is how many invalid or rejected lines the batch page
// lists; the result file has them all.
const bulkErrorsShown = 100

// batchStore reads and approves batches; the ledger is one.
type batchStore interface {
	Batch(ctx context.Context, program, id string) (*core.Batch, error)
	BatchLines(ctx context.Context, id string, after int64, limit int,
		errorsOnly bool) ([]core.BatchLine, error)
	ApproveBatch(ctx context.Context, program, id, actor string) (*core.Batch, error)
}

// bulkNotices are the fixed messages a redirect may ask the bulk pages to
// show.
var bulkNotices = map[string]string{
	"uploaded":  "The file was received; it is being validated. Nothing is posted yet.",
	"duplicate": "This file was already received for this program: here is its batch.",
	"approved":  "The batch was approved; it may be posted now.",
	"posting":   "Posting started. This page follows its progress.",
}

// bodyLimit is how large a POST body may be: a bulk file upload may be
// large, every other form is small.
func bodyLimit(r *http.Request) int64 {
	if r.URL.Path == "/admin/bulk" {
		return maxBulkUpload
	}
	return 64 << 10
}

// registerBulk adds the bulk loads pages, for operators and administrators.
func (s *Server) registerBulk(a *mux.Router) {
	one := "/bulk/{program}/{batch}"
	a.Handle("/bulk", s.auth(s.bulkPage, changers...)).Methods(http.MethodGet)
	a.Handle("/bulk", s.auth(s.bulkUpload, changers...)).Methods(http.MethodPost)
	a.Handle(one, s.auth(s.batchPage, changers...)).Methods(http.MethodGet)
	a.Handle(one+"/approve", s.auth(s.batchApprove, changers...)).Methods(http.MethodPost)
	a.Handle(one+"/post", s.auth(s.batchPost, changers...)).Methods(http.MethodPost)
	a.Handle(one+"/result.csv", s.auth(s.batchResult, changers...)).
		Methods(http.MethodGet)
}

// bulk returns the bulk-load service and the batch store, or answers 503.
func (s *Server) bulk(w http.ResponseWriter, r *http.Request,
	sess *session) (*files.Service, batchStore, bool) {
	var svc *files.Service
	if s.opt.Files != nil {
		svc = s.opt.Files()
	}
	store, ok := s.read.(batchStore)
	if svc == nil || !ok {
		s.fail(w, r, sess, http.StatusServiceUnavailable,
			"Bulk loads are served by a process that runs the ledger's core.", nil)
		return nil, nil, false
	}
	return svc, store, true
}

// batchRow is one batch in the list of recent uploads.
type batchRow struct {
	ID, Program, FileName, Status, UploadedBy string
	Lines, Invalid                            int64
	CreatedAt                                 time.Time
}

// bulkView is what bulk.html receives.
type bulkView struct {
	Programs []string
	Batches  []batchRow
}

// bulkPage shows the upload form and the 50 newest batches.
func (s *Server) bulkPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.showBulk(w, r, sess, http.StatusOK, "")
}

func (s *Server) showBulk(w http.ResponseWriter, r *http.Request, sess *session, status int,
	problem string) {
	ctx := r.Context()
	codes, err := s.programCodes(ctx)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	rows, err := s.db.Query(ctx, `SELECT id, program, file_name, status, uploaded_by, lines,
			invalid_lines, created_at
		FROM bulk_batches ORDER BY created_at DESC LIMIT 50`)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", fmt.Errorf("list batches: %w",
			err))
		return
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (batchRow, error) {
		var b batchRow
		err := row.Scan(&b.ID, &b.Program, &b.FileName, &b.Status, &b.UploadedBy, &b.Lines,
			&b.Invalid, &b.CreatedAt)
		return b, err
	})
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", fmt.Errorf("list batches: %w",
			err))
		return
	}
	s.render(w, r, status, "bulk.html", view{Title: "Bulk loads", User: sess,
		Problem: problem, Data: bulkView{Programs: codes, Batches: list}})
}

// bulkUpload stores the uploaded file as a batch and starts its
// validation, then shows the batch.
func (s *Server) bulkUpload(w http.ResponseWriter, r *http.Request, sess *session) {
	svc, _, ok := s.bulk(w, r, sess)
	if !ok {
		return
	}
	program := r.PostFormValue("program")
	f, err := files.ParseFormat(r.PostFormValue("charset"),
		strings.TrimSpace(r.PostFormValue("date_format")))
	if err != nil {
		s.showBulk(w, r, sess, http.StatusBadRequest, "The file was not received: "+
			err.Error())
		return
	}
	file, head, err := r.FormFile("file")
	if err != nil {
		s.showBulk(w, r, sess, http.StatusBadRequest, "Choose a file to upload.")
		return
	}
	defer file.Close()
	b, created, err := svc.Receive(r.Context(), files.Intake{Program: program,
		FileName: head.Filename, Format: f, UploadedBy: sess.Name, Channel: "backoffice"},
		file)
	var de *core.Error
	if errors.As(err, &de) && (de.Kind == core.Invalid || de.Kind == core.NotFound) {
		s.showBulk(w, r, sess, http.StatusBadRequest, "The file was not received: "+
			de.Error())
		return
	}
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	done := "duplicate"
	if created {
		svc.StartValidation(b)
		s.audit(r.Context(), sess.Name, "batch.uploaded", b.ID, nil,
			map[string]any{"program": b.Program, "file_name": b.FileName, "sha256": b.Checksum})
		done = "uploaded"
	}
	redirect(w, r, batchPath(b), nil, done)
}

func batchPath(b *core.Batch) string { return "/admin/bulk/" + b.Program + "/" + b.ID }

// batchView is what batch.html receives.
type batchView struct {
	Batch   *core.Batch
	Path    string
	Busy    bool // validating or posting: the page refreshes itself
	Percent int64
	Errors  []core.BatchLine
	More    bool
	// CanApprove and CanPost say which buttons the user is offered.
	CanApprove, CanPost, Waiting bool
}

// batchPage shows a batch: its summary, the first invalid or rejected
// lines, the approval and posting buttons and, while work goes on, its
// progress, reloading itself every two seconds.
func (s *Server) batchPage(w http.ResponseWriter, r *http.Request, sess *session) {
	_, store, ok := s.bulk(w, r, sess)
	if !ok {
		return
	}
	ctx := r.Context()
	b, err := store.Batch(ctx, mux.Vars(r)["program"], mux.Vars(r)["batch"])
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	v := batchView{Batch: b, Path: batchPath(b)}
	switch b.Status {
	case core.BatchReceived, core.BatchValidating, core.BatchPosting:
		v.Busy = true
	case core.BatchValidated:
		// Posting starts in the background: right after the post, the batch
		// may not say so yet, and the page must look again.
		v.Busy = r.URL.Query().Get("done") == "posting"
	}
	if b.Valid > 0 {
		v.Percent = b.Done() * 100 / b.Valid
	}
	if !v.Busy && b.Status != core.BatchFailed {
		lines, err := store.BatchLines(ctx, b.ID, 0, bulkErrorsShown+1, true)
		if err != nil {
			s.fail(w, r, sess, http.StatusInternalServerError, "", err)
			return
		}
		v.More = len(lines) > bulkErrorsShown
		v.Errors = lines[:min(len(lines), bulkErrorsShown)]
	}
	if b.Status == core.BatchValidated {
		approved := !b.NeedsApproval || b.ApprovedBy != ""
		v.CanPost = approved && b.Valid > 0
		v.CanApprove = !approved && b.UploadedBy != sess.Name
		v.Waiting = !approved && b.UploadedBy == sess.Name
	}
	page := view{Title: "Batch " + b.FileName, User: sess, Data: v}
	// The notices of work in progress go once the work is over.
	done := r.URL.Query().Get("done")
	if v.Busy || (done != "uploaded" && done != "posting") {
		page.Notice = bulkNotices[done]
	}
	if v.Busy {
		page.Refresh = 2
	}
	s.render(w, r, http.StatusOK, "batch.html", page)
}

// batchApprove records the second person's approval of a batch; an inbox
// batch is then posted.
func (s *Server) batchApprove(w http.ResponseWriter, r *http.Request, sess *session) {
	svc, store, ok := s.bulk(w, r, sess)
	if !ok {
		return
	}
	b, err := store.ApproveBatch(r.Context(), mux.Vars(r)["program"], mux.Vars(r)["batch"],
		sess.Name)
	if core.KindOf(err) == core.Forbidden {
		s.fail(w, r, sess, http.StatusForbidden,
			"The person who uploaded a batch cannot approve it.", nil)
		return
	}
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	s.audit(r.Context(), sess.Name, "batch.approved", b.ID, nil,
		map[string]any{"program": b.Program, "approved_by": b.ApprovedBy})
	svc.PostApprovedInbox(b)
	redirect(w, r, batchPath(b), nil, "approved")
}

// batchPost starts posting a batch in the background and shows its
// progress.
func (s *Server) batchPost(w http.ResponseWriter, r *http.Request, sess *session) {
	svc, store, ok := s.bulk(w, r, sess)
	if !ok {
		return
	}
	b, err := store.Batch(r.Context(), mux.Vars(r)["program"], mux.Vars(r)["batch"])
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	if b.Status == core.BatchPosted {
		redirect(w, r, batchPath(b), nil, "")
		return
	}
	if err := svc.StartPost(b, sess.Name); err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	s.audit(r.Context(), sess.Name, "batch.posted", b.ID, nil,
		map[string]any{"program": b.Program, "valid_lines": b.Valid})
	redirect(w, r, batchPath(b), nil, "posting")
}

// batchResult downloads the batch's result file.
func (s *Server) batchResult(w http.ResponseWriter, r *http.Request, sess *session) {
	svc, store, ok := s.bulk(w, r, sess)
	if !ok {
		return
	}
	b, err := store.Batch(r.Context(), mux.Vars(r)["program"], mux.Vars(r)["batch"])
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	if b.Status == core.BatchReceived || b.Status == core.BatchValidating ||
		b.Status == core.BatchFailed {
		s.fail(w, r, sess, http.StatusConflict,
			"The result file exists once the batch is validated.", nil)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+b.ID+`-result.csv"`)
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Hour))
	if err := svc.WriteResult(r.Context(), w, b); err != nil {
		s.log.Error("Back-office result file stopped", "batch_id", b.ID, "error", err)
	}
}
