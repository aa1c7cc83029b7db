package rest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// contractFile is the OpenAPI document outsiders code against.
const contractFile = "../../contracts/openapi.yaml"

// opsRoutes are documented in the contract but served by internal/app, next
// to the routes Register adds, so the router built here does not have them.
var opsRoutes = []string{"GET /healthz", "GET /readyz", "GET /metrics"}

// contractOp is one operation of the document, as far as the tests need it.
type contractOp struct {
	method  string // upper case
	path    string
	line    int
	kind    string   // x-command-kind: the bus command a write becomes
	example string   // the request body example, one line of JSON
	refs    []string // names of the components/parameters it refers to
}

func (o contractOp) key() string { return o.method + " " + o.path }

// headerParam is a header declared in components/parameters.
type headerParam struct {
	name     string
	required bool
}

// contract is what the tests read from the document.
type contract struct {
	ops     []contractOp
	headers map[string]headerParam // by component name
	kinds   map[string]int         // the error-kind table: kind → HTTP status
}

var (
	pathKeyRE  = regexp.MustCompile(`^  ['"]?(/[^'"]*)['"]?:\s*$`)
	opKeyRE    = regexp.MustCompile(`^    (get|put|post|delete|patch|head|options|trace):\s*$`)
	paramRefRE = regexp.MustCompile(`#/components/parameters/([A-Za-z0-9_.-]+)`)
	kindRowRE  = regexp.MustCompile(`^\s*\|\s*([a-z_]+)\s*\|\s*([0-9]{3})\s*\|`)
)

// loadContract reads the document with a line scan, relying on the layout
// its header comment states (the module has no YAML parser). What breaks
// that layout where it matters (a path key it cannot read, a path item by
// $ref, an example that is not one line of JSON) fails the test.
func loadContract(t *testing.T) contract {
	t.Helper()
	f, err := os.Open(contractFile)
	if err != nil {
		t.Fatalf("open the contract: %v", err)
	}
	defer f.Close()

	c := contract{headers: map[string]headerParam{}, kinds: map[string]int{}}
	var (
		section string      // the top-level key being read
		sub     string      // the second-level key, under components
		path    string      // the path key being read
		op      *contractOp // the operation being read
		inBody  bool        // inside op's requestBody
		param   string      // the components/parameters entry being read
		paramIn string      // where that parameter goes
		header  headerParam // what it says, should it be a header
		paths   = map[string]int{}
		lineNo  int
	)
	finishOp := func() {
		if op != nil {
			c.ops = append(c.ops, *op)
		}
		op, inBody = nil, false
	}
	finishParam := func() {
		if param != "" && paramIn == "header" {
			c.headers[param] = header
		}
		param, paramIn, header = "", "", headerParam{}
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if strings.HasPrefix(line[indent:], "\t") {
			t.Fatalf("%s:%d: a tab in the indentation", contractFile, lineNo)
		}
		if m := kindRowRE.FindStringSubmatch(line); m != nil && section == "info" {
			status, _ := strconv.Atoi(m[2])
			c.kinds[m[1]] = status
		}

		// A top-level key closes whatever was open.
		if indent == 0 {
			finishOp()
			finishParam()
			section, _, _ = strings.Cut(trimmed, ":")
			sub = ""
			continue
		}

		switch section {
		case "paths":
			switch {
			case indent == 2:
				finishOp()
				m := pathKeyRE.FindStringSubmatch(line)
				if m == nil {
					t.Fatalf("%s:%d: expected a path key at two spaces, got %q",
						contractFile, lineNo, trimmed)
				}
				if first, dup := paths[m[1]]; dup {
					t.Fatalf("%s:%d: path %s already listed at line %d", contractFile, lineNo,
						m[1], first)
				}
				paths[m[1]] = lineNo
				path = m[1]
			case indent == 4:
				finishOp()
				if strings.HasPrefix(trimmed, "$ref:") {
					t.Fatalf("%s:%d: a path item by $ref hides its methods from this test",
						contractFile, lineNo)
				}
				if m := opKeyRE.FindStringSubmatch(line); m != nil {
					op = &contractOp{method: strings.ToUpper(m[1]), path: path, line: lineNo}
				}
			case op == nil:
				// Path-level fields such as the shared path parameters.
			case indent == 6:
				inBody = strings.HasPrefix(trimmed, "requestBody:")
				if v, ok := strings.CutPrefix(trimmed, "x-command-kind:"); ok {
					op.kind = strings.TrimSpace(v)
				}
			default:
				if m := paramRefRE.FindStringSubmatch(line); m != nil && !inBody {
					op.refs = append(op.refs, m[1])
				}
				if v, ok := strings.CutPrefix(trimmed, "example:"); ok && inBody {
					op.example = strings.TrimSpace(v)
					if !json.Valid([]byte(op.example)) {
						t.Fatalf("%s:%d: the request example is not one line of JSON",
							contractFile, lineNo)
					}
				}
			}
		case "components":
			switch {
			case indent == 2:
				finishParam()
				sub, _, _ = strings.Cut(trimmed, ":")
			case sub != "parameters":
			case indent == 4:
				finishParam()
				param, _, _ = strings.Cut(trimmed, ":")
			case indent == 6 && param != "":
				k, v, _ := strings.Cut(trimmed, ":")
				v = strings.Trim(strings.TrimSpace(v), `'"`)
				switch k {
				case "name":
					header.name = v
				case "in":
					paramIn = v
				case "required":
					header.required = v == "true"
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read the contract: %v", err)
	}
	finishOp()
	finishParam()
	if len(c.ops) == 0 {
		t.Fatalf("%s: no operations found under paths:", contractFile)
	}
	return c
}

// requiredHeaders are the headers op declares as required.
func (c contract) requiredHeaders(op contractOp) []string {
	var out []string
	for _, ref := range op.refs {
		if h, ok := c.headers[ref]; ok && h.required {
			out = append(out, h.name)
		}
	}
	return out
}

var paramPatternRE = regexp.MustCompile(`\{([^}:]+):[^}]*\}`)

// registeredRoutes walks the router Register builds: "METHOD /path" keys.
func registeredRoutes(t *testing.T) []string {
	t.Helper()
	r := mux.NewRouter()
	New(nil, nil, slog.New(slog.DiscardHandler), Options{}).Register(r)
	var out []string
	err := r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		if route.GetHandler() == nil {
			return nil // the /v1 prefix that holds the subrouter
		}
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return fmt.Errorf("a route without a path: %w", err)
		}
		methods, err := route.GetMethods()
		if err != nil {
			return fmt.Errorf("%s: registered without methods, so the contract cannot "+
				"describe it: %w", tpl, err)
		}
		tpl = paramPatternRE.ReplaceAllString(tpl, "{$1}")
		for _, m := range methods {
			out = append(out, m+" "+tpl)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestContractListsEveryRoute fails when a route is registered but not
// documented, or documented but not registered.
func TestContractListsEveryRoute(t *testing.T) {
	c := loadContract(t)
	documented := map[string]int{}
	for _, op := range c.ops {
		documented[op.key()] = op.line
	}
	registered := registeredRoutes(t)
	if len(registered) == 0 {
		t.Fatal("Register added no routes")
	}

	for _, k := range registered {
		if _, ok := documented[k]; !ok {
			t.Errorf("%s is served but missing from %s", k, contractFile)
		}
	}
	for _, k := range opsRoutes {
		if _, ok := documented[k]; !ok {
			t.Errorf("%s is served by internal/app but missing from %s", k, contractFile)
		}
	}
	for _, op := range c.ops {
		k := op.key()
		if !slices.Contains(registered, k) && !slices.Contains(opsRoutes, k) {
			t.Errorf("%s:%d: %s is documented but not served", contractFile, op.line, k)
		}
	}
}

// TestContractErrorTable checks the kind → status table of the document
// against the one the gateway answers with.
func TestContractErrorTable(t *testing.T) {
	c := loadContract(t)
	for kind, status := range statusOf {
		if got, ok := c.kinds[string(kind)]; !ok || got != status {
			t.Errorf("kind %s: the document says %d, the gateway answers %d", kind, got, status)
		}
	}
	for kind := range c.kinds {
		if _, ok := statusOf[core.ErrorKind(kind)]; !ok {
			t.Errorf("kind %s is documented but unknown to the gateway", kind)
		}
	}
}

// contractBus is a bus that records commands and can answer them at once.
type contractBus struct {
	mu        sync.Mutex
	sent      []bus.Command
	results   chan bus.Result
	answer    bool // answer each command with an applied result
	duplicate bool // report each publish as a retry the bus already holds
	held      bool // report every command as still waiting on the bus
	dead      bool // report every command as dead-lettered
}

func (b *contractBus) Locate(context.Context, string, string) (bus.Whereabouts, error) {
	switch {
	case b.held:
		return bus.Waiting, nil
	case b.dead:
		return bus.DeadLettered, nil
	}
	return bus.Unknown, nil
}

func (b *contractBus) SubscribeResult(source, txn string) (<-chan bus.Result, func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.results = make(chan bus.Result, 1)
	return b.results, func() {}, nil
}

func (b *contractBus) PublishCommand(_ context.Context, cmd bus.Command) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent = append(b.sent, cmd)
	if b.answer {
		b.results <- bus.Result{CommandID: cmd.ID, Source: cmd.Source, TxnID: cmd.TxnID,
			Kind: cmd.Kind, Status: bus.StatusOK, Data: json.RawMessage(`{"member":"m"}`)}
	}
	return b.duplicate, nil
}

func (b *contractBus) take() []bus.Command {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.sent
	b.sent = nil
	return out
}

// contractReader knows one stored result and nothing else.
type contractReader struct {
	stored   *bus.Result
	programs bool // every program exists; else none does
}

func (r contractReader) Program(_ context.Context, code string) (*core.Program, error) {
	if r.programs {
		return &core.Program{Code: code}, nil
	}
	return nil, core.Errorf(core.NotFound, "program", "unknown")
}

func (contractReader) Programs(context.Context) ([]core.Program, error) {
	return []core.Program{}, nil
}

func (contractReader) Members(_ context.Context, program, _, _ string,
	_ int) (*postgres.MemberPage, error) {
	return nil, core.Errorf(core.NotFound, "program", "no program %q", program)
}

func (contractReader) Member(context.Context, string, string) (*core.Member, error) {
	return nil, core.Errorf(core.NotFound, "member", "unknown")
}

func (contractReader) Balance(context.Context, string, string) (*postgres.BalanceView, error) {
	return nil, core.Errorf(core.NotFound, "member", "unknown")
}

func (contractReader) BalanceSummary(context.Context, string,
	string) (*postgres.BalanceView, error) {
	return nil, core.Errorf(core.NotFound, "member", "unknown")
}

func (contractReader) Statement(context.Context, string, string, string,
	int) (*postgres.StatementPage, error) {
	return nil, core.Errorf(core.NotFound, "member", "unknown")
}

// ResultOf answers as the ledger does for the same request: the stored
// result, flagged as a replay.
func (r contractReader) ResultOf(_ context.Context, cmd bus.Command) (*bus.Result, error) {
	res, err := r.CommandResult(context.Background(), cmd.Source, cmd.TxnID)
	if err == nil {
		res.Replayed = true
	}
	return res, err
}

func (r contractReader) CommandResult(context.Context, string, string) (*bus.Result, error) {
	if r.stored == nil {
		return nil, core.Errorf(core.NotFound, "txn_id", "unknown")
	}
	res := *r.stored
	return &res, nil
}

const contractKey = "contract-test-key"

// contractNow is the gateway's clock in these tests, after every example.
var contractNow = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

// newContractServer returns a router serving the API on b and read.
func newContractServer(b *contractBus, read Reader, wait time.Duration) (*mux.Router, *Server) {
	s := New(b, read, slog.New(slog.DiscardHandler),
		Options{Wait: wait, Keys: map[string]string{contractKey: "contract"}})
	s.now = func() time.Time { return contractNow }
	r := mux.NewRouter()
	s.Register(r)
	return r, s
}

// fillPath puts sample values in a path template's parameters, each of the
// shape its rule asks for (checkParams).
func fillPath(tpl string) string {
	return strings.NewReplacer("{program}", "movil", "{member}", "56912345678",
		"{hold}", "hold-77", "{txn}", "txn-1", "{code}", "sample-code",
		"{partner}", "cafe-sur", "{reward}", "cinema-2x1",
		"{key}", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		"{order}", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c",
		"{conversion}", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d",
		"{batch}", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5e", "{name}", "flows").Replace(tpl)
}

// TestContractWritesAcceptTheirExamples sends every write's documented
// example with the documented headers through the real handlers: it must
// reach the bus as the documented command kind. Without any one required
// header it must be refused with 400 naming that header.
func TestContractWritesAcceptTheirExamples(t *testing.T) {
	c := loadContract(t)
	b := &contractBus{answer: true}
	router, _ := newContractServer(b, contractReader{}, 2*time.Second)

	for i, op := range c.ops {
		if op.method == http.MethodGet || !strings.HasPrefix(op.path, "/v1/") {
			continue
		}
		if strings.Contains(op.path, "/batches") {
			continue // files and batches, not one command each: gateway/files tests them
		}
		if strings.HasPrefix(op.path, "/v1/partner/") {
			continue // partner keys, not operator keys: see partners_test.go
		}
		t.Run(op.key(), func(t *testing.T) {
			required := c.requiredHeaders(op)
			if !slices.Contains(required, "Idempotency-Key") {
				t.Fatalf("%s:%d: a write must require the Idempotency-Key header",
					contractFile, op.line)
			}
			if op.kind == "" || op.example == "" {
				t.Fatalf("%s:%d: a write needs x-command-kind and a request example",
					contractFile, op.line)
			}
			txn := fmt.Sprintf("contract-%d", i)
			send := func(skip string) *httptest.ResponseRecorder {
				req := httptest.NewRequest(op.method, fillPath(op.path),
					strings.NewReader(op.example))
				req.Header.Set("Authorization", "Bearer "+contractKey)
				req.Header.Set("Content-Type", "application/json")
				for _, h := range required {
					if h == skip {
						continue
					}
					v := "contract value"
					if h == "Idempotency-Key" {
						v = txn
					}
					req.Header.Set(h, v)
				}
				w := httptest.NewRecorder()
				router.ServeHTTP(w, req)
				return w
			}

			w := send("")
			if w.Code != http.StatusCreated {
				t.Fatalf("example answered %d, want 201: %s", w.Code, w.Body)
			}
			sent := b.take()
			if len(sent) != 1 || sent[0].Kind != op.kind || sent[0].TxnID != txn ||
				sent[0].Source != "contract" {
				got := make([]string, len(sent))
				for i, cmd := range sent {
					got[i] = cmd.Kind + " " + cmd.Source + "/" + cmd.TxnID
				}
				t.Fatalf("published %v, want one %s command contract/%s", got, op.kind, txn)
			}
			var res bus.Result
			if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil ||
				res.Status != bus.StatusOK || res.TxnID != txn {
				t.Fatalf("201 body %s is not the applied result (%v)", w.Body, err)
			}

			for _, h := range required {
				w := send(h)
				p := decodeProblem(t, w)
				if w.Code != http.StatusBadRequest || p.Field != h {
					t.Errorf("without %s: %d field %q, want 400 naming the header", h, w.Code,
						p.Field)
				}
				if sent := b.take(); len(sent) != 0 {
					t.Errorf("without %s: %d commands published", h, len(sent))
				}
			}
		})
	}
}

func decodeProblem(t *testing.T, w *httptest.ResponseRecorder) Problem {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d with Content-Type %q, want application/problem+json", w.Code, ct)
	}
	var p Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %s: %v", w.Body, err)
	}
	if p.Status != w.Code || p.Type != "urn:puntos:error:"+p.Kind || p.Title == "" {
		t.Fatalf("problem %+v does not match its status %d", p, w.Code)
	}
	return p
}

// TestContractPromises checks the shapes the document promises for a slow
// ledger (202), a retry (the first result, flagged) and a missing key (401).
func TestContractPromises(t *testing.T) {
	path := "/v1/programs/movil/members/56912345678/redemptions"
	send := func(router *mux.Router, key, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("X-Api-Key", key)
		}
		req.Header.Set("Idempotency-Key", "bill-7")
		w := httptest.NewRecorder()
		router.ServeHTTP(w, req)
		return w
	}
	post := func(router *mux.Router, key string) *httptest.ResponseRecorder {
		return send(router, key, `{"points": 1200}`)
	}

	t.Run("202", func(t *testing.T) {
		router, _ := newContractServer(&contractBus{}, contractReader{}, 10*time.Millisecond)
		w := post(router, contractKey)
		var a map[string]string
		if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
			t.Fatalf("202 body %s: %v", w.Body, err)
		}
		if w.Code != http.StatusAccepted || a["status"] != "accepted" ||
			a["txn_id"] != "bill-7" || a["command_id"] == "" ||
			!regexp.MustCompile(`^/v1/commands/bill-7\?request=[0-9a-f]{16}$`).
				MatchString(a["status_url"]) ||
			w.Header().Get("Location") != a["status_url"] {
			t.Fatalf("answered %d %s Location %q, want 202 with the status URL", w.Code,
				w.Body, w.Header().Get("Location"))
		}
	})

	t.Run("replay", func(t *testing.T) {
		first := bus.Result{CommandID: "first", Source: "contract", TxnID: "bill-7",
			Kind: core.KindRedeem, Status: bus.StatusOK, Data: json.RawMessage(`{"points":-1200}`)}
		router, _ := newContractServer(&contractBus{duplicate: true},
			contractReader{stored: &first}, time.Second)
		w := post(router, contractKey)
		var res bus.Result
		_ = json.Unmarshal(w.Body.Bytes(), &res)
		if w.Code != http.StatusCreated || w.Header().Get("Idempotent-Replayed") != "true" ||
			res.CommandID != "first" || !res.Replayed {
			t.Fatalf("answered %d %s, want 201 with the first result, flagged", w.Code, w.Body)
		}
	})

	t.Run("same request later", func(t *testing.T) {
		// A retry is the same command, whenever it comes; another body is not.
		b := &contractBus{}
		router, s := newContractServer(b, contractReader{}, time.Millisecond)
		post(router, contractKey)
		s.now = func() time.Time { return contractNow.Add(time.Hour) }
		post(router, contractKey)
		send(router, contractKey, `{"points": 1300}`)
		sent := b.take()
		if len(sent) != 3 || sent[0].Hash != sent[1].Hash || sent[0].Hash == sent[2].Hash {
			t.Fatalf("published %d commands; a retry must keep the digest, another body "+
				"must change it", len(sent))
		}
	})

	t.Run("status", func(t *testing.T) {
		// Waiting on the bus: pending. Known to neither bus nor ledger: 404.
		get := func(b *contractBus) *httptest.ResponseRecorder {
			router, _ := newContractServer(b, contractReader{}, time.Second)
			req := httptest.NewRequest(http.MethodGet, "/v1/commands/bill-7", nil)
			req.Header.Set("X-Api-Key", contractKey)
			w := httptest.NewRecorder()
			router.ServeHTTP(w, req)
			return w
		}
		w := get(&contractBus{held: true})
		var st map[string]string
		_ = json.Unmarshal(w.Body.Bytes(), &st)
		if w.Code != http.StatusOK || st["status"] != "pending" || st["txn_id"] != "bill-7" {
			t.Fatalf("held command: %d %s, want 200 pending", w.Code, w.Body)
		}
		w = get(&contractBus{})
		if p := decodeProblem(t, w); w.Code != http.StatusNotFound ||
			p.Kind != string(core.NotFound) || p.Field != "txn" {
			t.Fatalf("unknown command: %d %+v, want 404 not_found naming txn", w.Code, p)
		}
		// Dead-lettered, and no result in the ledger: failed, with an
		// error that says nothing changed.
		w = get(&contractBus{dead: true})
		var failed struct {
			Status string    `json:"status"`
			TxnID  string    `json:"txn_id"`
			Error  bus.Error `json:"error"`
		}
		_ = json.Unmarshal(w.Body.Bytes(), &failed)
		if w.Code != http.StatusOK || failed.Status != "failed" || failed.TxnID != "bill-7" ||
			failed.Error.Kind != string(core.Internal) ||
			!strings.Contains(failed.Error.Message, "nothing changed") {
			t.Fatalf("dead-lettered command: %d %s, want 200 failed", w.Code, w.Body)
		}

	})

	t.Run("401", func(t *testing.T) {
		router, _ := newContractServer(&contractBus{}, contractReader{}, time.Second)
		w := post(router, "")
		p := decodeProblem(t, w)
		if w.Code != http.StatusUnauthorized || p.Kind != string(core.Unauthorized) ||
			w.Header().Get("WWW-Authenticate") == "" {
			t.Fatalf("answered %d %+v, want 401 unauthorized with WWW-Authenticate", w.Code, p)
		}
	})
}
