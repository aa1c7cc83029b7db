package files

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core"
)

// maxUpload bounds one uploaded file.
const maxUpload = 4 << 30

// Register adds the batch routes to v1, the gateway's authenticated /v1
// router.
func (s *Service) Register(v1 *mux.Router) {
	b := "/programs/{program}/batches"
	one := b + "/{batch}"
	// A nil Service (a gateway without the ledger's core) still lists the
	// routes, and answers them with 503.
	h := func(f http.HandlerFunc) http.HandlerFunc {
		if s == nil {
			return unavailable
		}
		return f
	}
	v1.HandleFunc(b, h(s.upload)).Methods(http.MethodPost)
	v1.HandleFunc(b, h(s.listBatches)).Methods(http.MethodGet)
	v1.HandleFunc(one, h(s.getBatch)).Methods(http.MethodGet)
	v1.HandleFunc(one+"/errors", h(s.getErrors)).Methods(http.MethodGet)
	v1.HandleFunc(one+"/approve", h(s.approve)).Methods(http.MethodPost)
	v1.HandleFunc(one+"/post", h(s.post)).Methods(http.MethodPost)
	v1.HandleFunc(one+"/result", h(s.getResult)).Methods(http.MethodGet)
}

// SetEdge gives the service the gateway's way to name the caller of a
// request and to answer with a problem document.
func (s *Service) SetEdge(source func(*http.Request) string,
	writeError func(http.ResponseWriter, *http.Request, error)) {
	s.opt.Source, s.opt.WriteError = source, writeError
}

func unavailable(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "urn:puntos:error:unavailable",
		"title": "Service unavailable", "status": http.StatusServiceUnavailable,
		"kind": "unavailable", "detail": "bulk loads are served by a process that runs core"})
}

func (s *Service) source(r *http.Request) string {
	if s.opt.Source == nil {
		return "unknown"
	}
	return s.opt.Source(r)
}

func (s *Service) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if s.opt.WriteError != nil {
		s.opt.WriteError(w, r, err)
		return
	}
	kind := core.KindOf(err)
	status := map[core.ErrorKind]int{core.Invalid: 400, core.NotFound: 404, core.Conflict: 409,
		core.Unauthorized: 401, core.Forbidden: 403, core.Unavailable: 503}[kind]
	if status == 0 {
		status = http.StatusInternalServerError
		s.log.Error("Request failed", "path", r.URL.Path, "error", err)
	}
	msg := "the request could not be completed"
	field := ""
	if de, ok := core.AsError(err); ok {
		msg, field = de.Error(), de.Field
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "urn:puntos:error:" + string(kind),
		"title": string(kind), "status": status, "detail": msg, "field": field,
		"kind": string(kind)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// actor is who acts: the X-Actor header, else the calling system.
func (s *Service) actor(r *http.Request) string {
	if a := strings.TrimSpace(r.Header.Get("X-Actor")); a != "" {
		return a
	}
	return s.source(r)
}

// BatchView is a batch as the API shows it, with its progress.
type BatchView struct {
	*core.Batch
	Progress  Progress          `json:"progress"`
	Duplicate bool              `json:"duplicate,omitempty"`
	Links     map[string]string `json:"links"`
}

// Progress is how far the posting step is.
type Progress struct {
	LinesDone      int64   `json:"lines_done"`
	LinesToPost    int64   `json:"lines_to_post"`
	Percent        float64 `json:"percent"`
	LinesPerSecond float64 `json:"lines_per_second"`
	Errors         int64   `json:"errors"`
}

func (s *Service) view(b *core.Batch) BatchView {
	v := BatchView{Batch: b, Progress: Progress{LinesDone: b.Done(), LinesToPost: b.Valid,
		Errors: b.Invalid + b.Rejected}}
	if b.Valid > 0 {
		v.Progress.Percent = float64(b.Done()*1000/b.Valid) / 10
	}
	if b.RunStartedAt != nil {
		end := s.now()
		if b.Status == core.BatchPosted && b.FinishedAt != nil {
			end = *b.FinishedAt
		}
		v.Progress.LinesPerSecond = rate(b.Done()-b.RunStartDone, end.Sub(*b.RunStartedAt))
	}
	base := "/v1/programs/" + b.Program + "/batches/" + b.ID
	v.Links = map[string]string{"self": base, "errors": base + "/errors",
		"result": base + "/result", "post": base + "/post"}
	if b.NeedsApproval {
		v.Links["approve"] = base + "/approve"
	}
	return v
}

// upload takes a file as the raw body or as the "file" part of a
// multipart form, stores it and starts its validation.
func (s *Service) upload(w http.ResponseWriter, r *http.Request) {
	program := mux.Vars(r)["program"]
	// A large file takes longer to send than the server's usual read limit.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(time.Hour))
	q := r.URL.Query()
	charset := q.Get("charset")
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if charset == "" {
		charset = params["charset"]
	}
	name := q.Get("file_name")
	r.Body = http.MaxBytesReader(w, r.Body, maxUpload)
	var body io.Reader = r.Body
	var complete func() error
	if mt == "multipart/form-data" {
		mr, err := r.MultipartReader()
		if err != nil {
			s.writeError(w, r, core.Errorf(core.Invalid, "body", "is not a multipart form"))
			return
		}
		for {
			part, err := mr.NextPart()
			if err != nil {
				s.writeError(w, r, core.Errorf(core.Invalid, "file",
					"the form has no part named file"))
				return
			}
			if part.FormName() == "file" {
				if name == "" {
					name = part.FileName()
				}
				if _, p, err := mime.ParseMediaType(part.Header.Get("Content-Type")); err == nil &&
					charset == "" {
					charset = p["charset"]
				}
				body = part
				break
			}
		}
		// A second file in the form would be dropped without a word.
		complete = func() error {
			for {
				part, err := mr.NextPart()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return core.Errorf(core.Invalid, "body", "is not a complete multipart form")
				}
				if part.FormName() == "file" {
					return core.Errorf(core.Invalid, "file", "the form has more than one part "+
						"named file; send one file per request")
				}
			}
		}
	}
	f, err := ParseFormat(charset, q.Get("date_format"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, created, err := s.Receive(r.Context(), Intake{Program: program, FileName: name,
		Format: f, UploadedBy: s.actor(r), Source: s.source(r), Channel: "rest",
		Complete: complete}, body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = core.Errorf(core.Invalid, "file", "is larger than %d bytes", int64(maxUpload))
		}
		s.writeError(w, r, err)
		return
	}
	v := s.view(b)
	w.Header().Set("Location", v.Links["self"])
	if !created {
		v.Duplicate = true
		writeJSON(w, http.StatusOK, v)
		return
	}
	s.validateThenMaybePost(b, false, "")
	writeJSON(w, http.StatusAccepted, v)
}

func (s *Service) batch(w http.ResponseWriter, r *http.Request) (*core.Batch, bool) {
	b, err := s.ledger.Batch(r.Context(), mux.Vars(r)["program"], mux.Vars(r)["batch"])
	if err != nil {
		s.writeError(w, r, err)
		return nil, false
	}
	return b, true
}

// BatchPage is one page of a program's batches, newest first.
type BatchPage struct {
	Batches []BatchView `json:"batches"`
	Next    string      `json:"next_cursor,omitempty"`
}

// listBatches answers a page of the program's batches, newest first: the
// way to find a batch an inbox file made, whose id only the log and the
// back office showed.
func (s *Service) listBatches(w http.ResponseWriter, r *http.Request) {
	program := mux.Vars(r)["program"]
	if _, err := s.ledger.Program(r.Context(), program); err != nil {
		s.writeError(w, r, err)
		return
	}
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			s.writeError(w, r, core.Errorf(core.Invalid, "limit",
				"must be a whole number from 1 to 500"))
			return
		}
		limit = n
	}
	list, err := s.ledger.Batches(r.Context(), program, r.URL.Query().Get("cursor"), limit+1)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page := BatchPage{Batches: []BatchView{}}
	for i, b := range list {
		if i == limit {
			page.Next = list[limit-1].ID
			break
		}
		page.Batches = append(page.Batches, s.view(b))
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Service) getBatch(w http.ResponseWriter, r *http.Request) {
	if b, ok := s.batch(w, r); ok {
		writeJSON(w, http.StatusOK, s.view(b))
	}
}

// ErrorPage is one page of a batch's invalid and rejected lines.
type ErrorPage struct {
	Batch  string           `json:"batch"`
	Errors []core.BatchLine `json:"errors"`
	Next   string           `json:"next_cursor,omitempty"`
}

func (s *Service) getErrors(w http.ResponseWriter, r *http.Request) {
	b, ok := s.batch(w, r)
	if !ok {
		return
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.writeError(w, r, core.Errorf(core.Invalid, "limit",
				"must be a whole number from 1 to 1000"))
			return
		}
		limit = n
	}
	var after int64
	if c := r.URL.Query().Get("cursor"); c != "" {
		n, err := strconv.ParseInt(c, 36, 64)
		if err != nil || n < 0 {
			s.writeError(w, r, core.Errorf(core.Invalid, "cursor",
				"is not a cursor from a previous page"))
			return
		}
		after = n
	}
	lines, err := s.ledger.BatchLines(r.Context(), b.ID, after, limit+1, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page := ErrorPage{Batch: b.ID, Errors: lines}
	if len(lines) > limit {
		page.Errors = lines[:limit]
		page.Next = strconv.FormatInt(lines[limit-1].Line, 36)
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Service) approve(w http.ResponseWriter, r *http.Request) {
	actor := strings.TrimSpace(r.Header.Get("X-Actor"))
	if actor == "" {
		s.writeError(w, r, core.Errorf(core.Invalid, "X-Actor",
			"header is required: the person who approves"))
		return
	}
	b, err := s.ledger.ApproveBatchAs(r.Context(), mux.Vars(r)["program"],
		mux.Vars(r)["batch"], actor, s.source(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("Batch approved", "batch_id", b.ID, "program", b.Program, "approved_by", actor)
	s.PostApprovedInbox(b)
	writeJSON(w, http.StatusOK, s.view(b))
}

// post starts (or resumes) the posting step in the background.
func (s *Service) post(w http.ResponseWriter, r *http.Request) {
	b, ok := s.batch(w, r)
	if !ok {
		return
	}
	if b.Status == core.BatchPosted {
		writeJSON(w, http.StatusOK, s.view(b))
		return
	}
	if err := s.StartPost(b, s.actor(r)); err != nil {
		s.writeError(w, r, err)
		return
	}
	v := s.view(b)
	w.Header().Set("Location", v.Links["self"])
	writeJSON(w, http.StatusAccepted, v)
}

// resultHeader is the first row of a result file.
var resultHeader = []string{"line", "txn_id", "member", "points", "status", "error_kind",
	"error_field", "error", "replayed"}

// getResult streams the result file: one row per line of the input, in
// order, posted or rejected (or, before posting, valid or invalid) and why.
func (s *Service) getResult(w http.ResponseWriter, r *http.Request) {
	b, ok := s.batch(w, r)
	if !ok {
		return
	}
	if b.Status == core.BatchReceived || b.Status == core.BatchValidating {
		s.writeError(w, r, core.Errorf(core.Conflict, "batch", "is still being validated"))
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+b.ID+`-result.csv"`)
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Hour))
	if err := s.WriteResult(r.Context(), w, b); err != nil {
		s.log.Error("Result file stopped", "batch_id", b.ID, "error", err)
	}
}

// WriteResult writes the batch's result file to out as CSV, reading the
// lines from the store a page at a time. Cells that a spreadsheet would
// run as a formula are escaped.
func (s *Service) WriteResult(ctx context.Context, out io.Writer, b *core.Batch) error {
	cw := csv.NewWriter(out)
	if err := cw.Write(resultHeader); err != nil {
		return err
	}
	row := make([]string, len(resultHeader))
	var after int64
	for {
		lines, err := s.ledger.BatchLines(ctx, b.ID, after, 5000, false)
		if err != nil {
			return err
		}
		if len(lines) == 0 {
			break
		}
		for _, x := range lines {
			row[0] = strconv.FormatInt(x.Line, 10)
			row[1] = safeCell(x.TxnID)
			row[2] = safeCell(x.Member)
			row[3] = strconv.FormatInt(int64(x.Points), 10)
			row[4] = x.Status
			row[5] = x.ErrorKind
			row[6] = safeCell(x.ErrorField)
			row[7] = safeCell(x.Error)
			// A line whose transaction id was applied before (this file loaded
			// again, say): the ledger gave its first answer, nothing new.
			row[8] = ""
			if x.Replayed {
				row[8] = "true"
			}
			if x.Status == core.LineInvalid && x.Points == 0 {
				row[3] = ""
			}
			if err := cw.Write(row); err != nil {
				return err
			}
		}
		after = lines[len(lines)-1].Line
		cw.Flush()
		if err := cw.Error(); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

var plainNumber = regexp.MustCompile(`^-?[0-9]+$`)

// safeCell keeps a spreadsheet from running a cell as a formula: a cell
// that starts with = + - @ (or a tab or carriage return) gets a leading
// apostrophe, unless it is a plain whole number.
func safeCell(v string) string {
	if v == "" || plainNumber.MatchString(v) {
		return v
	}
	switch v[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + v
	}
	return v
}
