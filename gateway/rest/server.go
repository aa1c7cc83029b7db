// Package rest is the REST face of the gateway: it authenticates callers,
// validates and normalises their JSON into bus commands, publishes them and
// waits a bounded time for the ledger's answer.
package rest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// Publisher puts commands on the bus and lets the gateway wait for results.
type Publisher interface {
	PublishCommand(ctx context.Context, cmd bus.Command) (duplicate bool, err error)
	SubscribeResult(source, txn string) (<-chan bus.Result, func(), error)
}

// Reader answers the queries the gateway serves without the bus.
type Reader interface {
	Program(ctx context.Context, code string) (*core.Program, error)
	Programs(ctx context.Context) ([]core.Program, error)
	Member(ctx context.Context, program, ref string) (*core.Member, error)
	Members(ctx context.Context, program, status, cursor string,
		limit int) (*postgres.MemberPage, error)
	Balance(ctx context.Context, program, ref string) (*postgres.BalanceView, error)
	BalanceSummary(ctx context.Context, program, ref string) (*postgres.BalanceView, error)
	Statement(ctx context.Context, program, ref, cursor string,
		limit int) (*postgres.StatementPage, error)
	CommandResult(ctx context.Context, source, txn string) (*bus.Result, error)
	ResultOf(ctx context.Context, cmd bus.Command) (*bus.Result, error)
}

// Caller is an authenticated client system. Its name is the source half of
// every (source, transaction id) pair it sends.
type Caller struct {
	Source string
	keySum [32]byte
}

// Server serves the REST API.
type Server struct {
	pub     Publisher
	read    Reader
	log     *slog.Logger
	wait    time.Duration
	callers []Caller
	now     func() time.Time
	files   *filesService // bulk point loads; nil answers 503
	reports *ReportStore  // report reads; nil answers 503

	pending      *answeredPending // commands answered 202 lately (pending.go)
	searches     chan struct{}    // bus searches of status polls running
	searchesMu   sync.Mutex
	bySource     map[string]chan struct{} // each caller's searches running
	statusLookup func(how string)
}

// Options configures a Server.
type Options struct {
	// Wait bounds how long a write waits for the ledger before answering 202.
	Wait time.Duration
	// Keys maps API keys to the caller (source) names they authenticate.
	Keys map[string]string
	// StatusLookup, when set, is told how each status poll for a command
	// the ledger has no result for was answered: LookupRemembered,
	// LookupSearched or LookupBusy.
	StatusLookup func(how string)
}

// New returns a Server.
func New(pub Publisher, read Reader, log *slog.Logger, opt Options) *Server {
	s := &Server{pub: pub, read: read, log: log, wait: opt.Wait, now: time.Now,
		pending: newAnsweredPending(time.Now), searches: make(chan struct{}, maxSearches+1),
		bySource:     map[string]chan struct{}{},
		statusLookup: opt.StatusLookup}
	if s.wait <= 0 {
		s.wait = 5 * time.Second
	}
	for key, source := range opt.Keys {
		s.callers = append(s.callers, Caller{Source: source, keySum: sha256.Sum256([]byte(key))})
	}
	return s
}

// maxBody bounds a request body.
const maxBody = 64 << 10

// Register adds the /v1 routes to r.
func (s *Server) Register(r *mux.Router) {
	s.registerPartnerAPI(r) // first: partner keys, not operator keys
	v1 := r.PathPrefix("/v1").Subrouter()
	v1.Use(s.authenticate)
	v1.Use(s.checkParams) // after: a stranger learns nothing of the paths
	p := "/programs/{program}"
	m := p + "/members/{member}"
	v1.HandleFunc("/programs", s.listPrograms).Methods(http.MethodGet)
	v1.HandleFunc(p, s.putProgram).Methods(http.MethodPut)
	v1.HandleFunc(p, s.getProgram).Methods(http.MethodGet)
	v1.HandleFunc(p+"/members", s.enroll).Methods(http.MethodPost)
	v1.HandleFunc(p+"/members", s.listMembers).Methods(http.MethodGet)
	v1.HandleFunc(m, s.getMember).Methods(http.MethodGet)
	v1.HandleFunc(m+"/balance", s.getBalance).Methods(http.MethodGet)
	v1.HandleFunc(m+"/movements", s.getMovements).Methods(http.MethodGet)
	v1.HandleFunc(m+"/events", s.accrue).Methods(http.MethodPost)
	v1.HandleFunc(m+"/credits", s.credit).Methods(http.MethodPost)
	v1.HandleFunc(m+"/redemptions", s.redeem).Methods(http.MethodPost)
	v1.HandleFunc(m+"/holds", s.authorize).Methods(http.MethodPost)
	v1.HandleFunc(m+"/holds/{hold}/capture", s.capture).Methods(http.MethodPost)
	v1.HandleFunc(m+"/holds/{hold}/release", s.release).Methods(http.MethodPost)
	v1.HandleFunc(m+"/reversals", s.reverse).Methods(http.MethodPost)
	v1.HandleFunc(m+"/adjustments", s.adjust).Methods(http.MethodPost)
	v1.HandleFunc(m+"/transfers", s.transfer).Methods(http.MethodPost)
	v1.HandleFunc(m+"/merge", s.merge).Methods(http.MethodPost)
	v1.HandleFunc(m+"/suspend", s.status(core.KindSuspend)).Methods(http.MethodPost)
	v1.HandleFunc(m+"/reactivate", s.status(core.KindReactivate)).Methods(http.MethodPost)
	v1.HandleFunc(m+"/close", s.status(core.KindClose)).Methods(http.MethodPost)
	v1.HandleFunc("/commands/{txn}", s.getCommand).Methods(http.MethodGet)
	s.registerExpiry(v1)
	s.registerRules(v1)
	s.registerConversions(v1)
	s.registerFiles(v1)
	s.registerAccrualBatches(v1)
	s.registerCatalog(v1)
	s.registerReports(v1)
	s.registerErasure(v1)
	v1.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, core.Errorf(core.NotFound, "path", "no such route"))
	})
	v1.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, core.Errorf(core.Invalid, "method", "%s is not allowed here",
			r.Method))
	})
}

type callerKey struct{}

// authenticate accepts "Authorization: Bearer KEY" or "X-Api-Key: KEY".
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-Api-Key")
		if h := r.Header.Get("Authorization"); key == "" && strings.HasPrefix(h, "Bearer ") {
			key = strings.TrimPrefix(h, "Bearer ")
		}
		if key == "" {
			s.writeError(w, r, core.Errorf(core.Unauthorized, "Authorization",
				"an API key is required"))
			return
		}
		sum := sha256.Sum256([]byte(key))
		var found *Caller
		for i := range s.callers {
			if subtle.ConstantTimeCompare(sum[:], s.callers[i].keySum[:]) == 1 {
				found = &s.callers[i]
			}
		}
		if found == nil {
			s.writeError(w, r, core.Errorf(core.Unauthorized, "Authorization",
				"the API key is not valid"))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, found)))
	})
}

func caller(r *http.Request) *Caller { return r.Context().Value(callerKey{}).(*Caller) }

// decodeBody reads a JSON object strictly: bounded size, no unknown fields,
// nothing after it. Errors name the field at fault.
func decodeBody(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return core.Errorf(core.Invalid, "body", "cannot be read")
	}
	if len(body) > maxBody {
		return core.Errorf(core.Invalid, "body", "is larger than %d bytes", maxBody)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	// The JSON decoder would quietly put U+FFFD in place of bad bytes; the
	// caller is told instead.
	if !utf8.Valid(body) {
		return core.Errorf(core.Invalid, "body", "is not valid UTF-8")
	}
	// No text the ledger stores may hold NUL, which PostgreSQL refuses;
	// found here, it is a 400 instead of a command that can never apply.
	if hasNULEscape(body) {
		return core.Errorf(core.Invalid, nulField(body), "must not contain the NUL character "+
			"(\\u0000)")
	}
	if field, ok := repeatedKey(body); ok {
		return repeatedError(field)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		var tpe *time.ParseError
		switch {
		case errors.As(err, &te):
			field := te.Field
			if field == "" {
				field = "body"
			}
			if strings.HasPrefix(te.Value, "number") && strings.Contains(te.Type.Kind().String(),
				"int") {
				return core.Errorf(core.Invalid, field, "must be a JSON integer; %s is out of "+
					"range or not whole", strings.TrimPrefix(te.Value, "number "))
			}
			switch te.Type.Kind() {
			case reflect.Struct, reflect.Map:
				return core.Errorf(core.Invalid, field, "must be a JSON object")
			case reflect.Slice, reflect.Array:
				return core.Errorf(core.Invalid, field, "must be a JSON array")
			}
			return core.Errorf(core.Invalid, field, "must be a JSON %s", jsonKind(te.Type.String()))
		case errors.As(err, &se):
			return core.Errorf(core.Invalid, "body", "is not valid JSON at byte %d", se.Offset)
		case errors.As(err, &tpe) || strings.Contains(err.Error(), "Time.UnmarshalJSON"):
			// The decoder names no field: the first timestamp of the body
			// that does not read is the one.
			field := badTimeField(body, v)
			if field == "" {
				field = "body"
			}
			return core.Errorf(core.Invalid, field,
				"must be an RFC 3339 timestamp with an offset, such as 2026-03-01T10:00:00-03:00")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			if f == "" {
				f = "body"
			}
			return core.Errorf(core.Invalid, f, "is not a known field")
		}
		return core.Errorf(core.Invalid, "body", "cannot be read: %v", err)
	}
	if dec.More() {
		return core.Errorf(core.Invalid, "body", "has data after the JSON object")
	}
	return nil
}

// repeatedError refuses a body that gives field twice (repeatedKey).
func repeatedError(field string) error {
	return core.Errorf(core.Invalid, field, "is given twice (keys are compared without "+
		"regard to case); give each field once")
}

// nulField names where a JSON text holds a NUL: the field whose value (or
// name) has it, as a path such as attributes.segments[1]; body when it
// cannot tell.
func nulField(body []byte) string {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return "body"
	}
	var walk func(v any, path string) (string, bool)
	walk = func(v any, path string) (string, bool) {
		switch x := v.(type) {
		case string:
			return path, strings.ContainsRune(x, 0)
		case []any:
			for i, e := range x {
				if p, ok := walk(e, fmt.Sprintf("%s[%d]", path, i)); ok {
					return p, true
				}
			}
		case map[string]any:
			for k, e := range x {
				p := k
				if path != "" {
					p = path + "." + k
				}
				if strings.ContainsRune(k, 0) {
					return p, true
				}
				if p, ok := walk(e, p); ok {
					return p, true
				}
			}
		}
		return "", false
	}
	if p, ok := walk(v, ""); ok && p != "" {
		return p
	}
	return "body"
}

// hasNULEscape reports whether a JSON text holds the escape \u0000 (raw
// control characters are not valid JSON, so this is the only way in).
func hasNULEscape(body []byte) bool {
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		if bytes.HasPrefix(body[i+1:], []byte("u0000")) {
			return true
		}
		i++ // the escaped character, which may be a backslash
	}
	return false
}

func jsonKind(goType string) string {
	switch {
	case strings.Contains(goType, "int"), goType == "core.Points":
		return "integer"
	case goType == "string":
		return "string"
	case strings.Contains(goType, "Time"):
		return "RFC 3339 timestamp string"
	}
	return "value of type " + goType
}

// txnID reads and checks the Idempotency-Key header.
func txnID(r *http.Request) (string, error) {
	k := r.Header.Get("Idempotency-Key")
	if k == "" {
		return "", core.Errorf(core.Invalid, "Idempotency-Key",
			"header is required on every write: the caller's transaction id")
	}
	if err := core.CheckRef("Idempotency-Key", "", k); err != nil {
		return "", err
	}
	return k, nil
}

// submit publishes cmd and answers with its result: 201 when the ledger
// answered in time, 202 with a status URL when it did not.
func (s *Server) submit(w http.ResponseWriter, r *http.Request, cmd bus.Command) {
	ctx := r.Context()
	results, unsubscribe, err := s.pub.SubscribeResult(cmd.Source, cmd.TxnID)
	if err != nil {
		s.writeError(w, r, core.Errorf(core.Unavailable, "", "the bus is unavailable"))
		return
	}
	defer unsubscribe()

	duplicate, err := s.pub.PublishCommand(ctx, cmd)
	if err != nil {
		s.log.Error("Publish failed", "txn_id", cmd.TxnID, "error", err)
		s.writeError(w, r, core.Errorf(core.Unavailable, "", "the bus is unavailable; retry "+
			"with the same Idempotency-Key"))
		return
	}
	if duplicate {
		// A retry the bus already holds: its result may be stored already,
		// or the bus may have set it aside, when no result will come.
		res, err := s.read.ResultOf(ctx, cmd)
		lookup, cancel := context.WithTimeout(ctx, s.wait)
		aside := core.KindOf(err) == core.NotFound && s.setAside(lookup, cmd)
		cancel()
		if aside {
			// Applied meanwhile? The ledger is asked again.
			if res, err = s.read.ResultOf(ctx, cmd); core.KindOf(err) == core.NotFound {
				s.writeError(w, r, errSetAside)
				return
			}
		}
		if err == nil {
			s.writeResult(w, r, *res)
			return
		}
	}
	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	for {
		select {
		case heard := <-results:
			res, ok := bus.Answer(ctx, s.read, cmd, heard)
			if !ok {
				continue
			}
			s.writeResult(w, r, res)
			return
		case <-timer.C:
			s.pending.add(cmd.Source, cmd.TxnID)
			w.Header().Set("Location", statusURL(cmd))
			writeJSON(w, http.StatusAccepted, map[string]any{
				"status": "accepted", "txn_id": cmd.TxnID, "command_id": cmd.ID,
				"status_url": statusURL(cmd),
			})
			return
		case <-ctx.Done():
			return
		}
	}
}

// writeResult answers with a ledger result: 201 for an applied command (and
// its replays, flagged by a header), a problem document for a refusal.
func (s *Server) writeResult(w http.ResponseWriter, r *http.Request, res bus.Result) {
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	if res.Status == bus.StatusRejected && res.Error != nil {
		s.writeError(w, r, &core.Error{Kind: core.ErrorKind(res.Error.Kind),
			Field: res.Error.Field, Message: res.Error.Message})
		return
	}
	writeJSON(w, http.StatusCreated, res)
}

// checkOccurred refuses Go's zero time as occurred_at: further on it would
// read as "not sent" and become the time of arrival.
func checkOccurred(at *time.Time) error {
	if at != nil && at.IsZero() {
		return core.Errorf(core.Invalid, "occurred_at", "is not a real date (0001-01-01T00:00:00Z)")
	}
	if at != nil {
		return core.CheckSince1970("occurred_at", *at)
	}
	return nil
}

// newCommand builds the command of a request to (program, member).
func (s *Server) newCommand(r *http.Request, kind, member string, payload any,
	occurred *time.Time) (bus.Command, error) {
	txn, err := txnID(r)
	if err != nil {
		return bus.Command{}, err
	}
	if err := checkOccurred(occurred); err != nil {
		return bus.Command{}, err
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return bus.Command{}, err
	}
	body, sent, err := core.SealPayload(s.read, kind, mux.Vars(r)["program"], member, body)
	if err != nil {
		return bus.Command{}, err
	}
	now := s.now().UTC()
	cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind,
		Source: caller(r).Source, TxnID: txn, Program: mux.Vars(r)["program"], Member: member,
		Actor: r.Header.Get("X-Actor"), Channel: r.Header.Get("X-Channel"), Payload: body,
		ReceivedAt: now}
	// The digest covers what the caller sent: a time it left out is not part
	// of the request, so a retry later is still the same request.
	if occurred != nil {
		cmd.OccurredAt = occurred.UTC()
	}
	cmd.Seal()
	cmd.Payload = sent // a partner secret is hashed as a keyed digest and sent sealed
	cmd.Audit = auditOf(&cmd, body)
	if occurred == nil {
		cmd.OccurredAt = now
	}
	return cmd, nil
}

// statusURL is where the caller of a command answered 202 polls for its
// result: its transaction id, and the start of its hash, which tells the
// request apart from another sent under the same id.
func statusURL(cmd bus.Command) string {
	u := "/v1/commands/" + cmd.TxnID
	if len(cmd.Hash) >= postgres.RequestDigits {
		u += "?request=" + cmd.Hash[:postgres.RequestDigits]
	}
	return u
}

// requestReader is a Reader that can answer one request under a
// transaction id (postgres.Ledger.RequestResult).
type requestReader interface {
	RequestResult(ctx context.Context, source, txn, request string) (*bus.Result, error)
}

func (s *Server) getCommand(w http.ResponseWriter, r *http.Request) {
	source, txn := caller(r).Source, mux.Vars(r)["txn"]
	if err := core.CheckRef("txn", "", txn); err != nil {
		s.writeError(w, r, err)
		return
	}
	// With ?request= (the status URL of a 202 answer), the answer is about
	// that request: a different one sent under the same id is a conflict,
	// not the other's result.
	read := s.read.CommandResult
	if q, ok := r.URL.Query()["request"]; ok {
		request := ""
		if len(q) == 1 {
			request = q[0]
		}
		if len(request) != postgres.RequestDigits || strings.Trim(request,
			"0123456789abcdef") != "" {
			s.writeError(w, r, core.Errorf(core.Invalid, "request", "must be the %d "+
				"hexadecimal digits of the status URL a 202 answer gave",
				postgres.RequestDigits))
			return
		}
		if rr, ok := s.read.(requestReader); ok {
			read = func(ctx context.Context, source, txn string) (*bus.Result, error) {
				return rr.RequestResult(ctx, source, txn, request)
			}
		}
	}
	res, err := read(r.Context(), source, txn)
	if core.KindOf(err) == core.NotFound {
		where := s.whereabouts(r.Context(), source, txn)
		if where != bus.Waiting {
			// Core may have applied it between the two reads: ask the
			// ledger again.
			res, err = read(r.Context(), source, txn)
		}
		switch {
		case core.KindOf(err) != core.NotFound:
		case where == bus.DeadLettered:
			writeJSON(w, http.StatusOK, failedCommand{Status: "failed", TxnID: txn,
				Error: bus.Error{Kind: string(core.Internal), Message: bus.DeadLetteredMessage}})
			return
		case where == bus.Unknown:
			s.writeError(w, r, core.Errorf(core.NotFound, "txn",
				"no command with this transaction id was received from this caller"))
			return
		}
	}
	if err != nil {
		if core.KindOf(err) == core.NotFound {
			writeJSON(w, http.StatusOK, map[string]any{"status": "pending",
				"txn_id": mux.Vars(r)["txn"]})
			return
		}
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// failedCommand is the status of a command the bus dead-lettered without a
// result in the ledger.
type failedCommand struct {
	Status string    `json:"status"`
	TxnID  string    `json:"txn_id"`
	Error  bus.Error `json:"error"`
}

// locator is a Publisher that can tell where it holds a command that the
// ledger has no result for.
type locator interface {
	Locate(ctx context.Context, source, txn string) (bus.Whereabouts, error)
}

// errSetAside answers a retry of a command that the bus set aside as a dead
// letter and the ledger has no result for: no result will come for it, and
// the bus drops the retry as a duplicate.
var errSetAside = core.Errorf(core.Internal, "", "%s", bus.DeadLetteredMessage)

// setAside reports whether the bus set cmd aside for good, so that a
// dropped retry of it will get no result (bus.SetAsideForGood). The caller
// bounds the lookup with ctx: a batch gives all its lookups the result wait.
func (s *Server) setAside(ctx context.Context, cmd bus.Command) bool {
	return bus.SetAsideForGood(ctx, s.pub, cmd, s.log)
}

// onBus tells where the bus holds the command (source, txn); when it cannot
// tell, it answers bus.Waiting.
func (s *Server) onBus(ctx context.Context, source, txn string) bus.Whereabouts {
	l, ok := s.pub.(locator)
	if !ok {
		return bus.Waiting
	}
	where, err := l.Locate(ctx, source, txn)
	if err != nil {
		s.log.Warn("Could not ask the bus about a command", "txn_id", txn, "error", err)
		return bus.Waiting
	}
	return where
}

func queryInt(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 500 {
		return 0, core.Errorf(core.Invalid, name, "must be a whole number from 1 to 500")
	}
	return n, nil
}
