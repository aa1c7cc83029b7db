// Package backoffice is the browser face of the gateway for the people who
// run loyalty programs: sign-in with roles, member look-up, manual
// adjustments with a second person's approval above a threshold, program
// parameters (programs, conversion rules with a simulation panel, tiers,
// rewards catalog, partners and their keys, external programs), bulk point
// loads from files and the audit log. Pages are rendered on the server from
// embedded templates; nothing is built for the browser.
package backoffice

import (
	"context"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/gateway/files"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Source is the source name of every command the back office sends: the
// first half of its (source, transaction id) pairs.
const Source = "backoffice"

// Publisher puts commands on the bus and lets the back office wait for the
// ledger's answer.
type Publisher interface {
	PublishCommand(ctx context.Context, cmd bus.Command) (duplicate bool, err error)
	SubscribeResult(source, txn string) (<-chan bus.Result, func(), error)
}

// Reader answers the member and program questions of the pages.
type Reader interface {
	Program(ctx context.Context, code string) (*core.Program, error)
	Member(ctx context.Context, program, ref string) (*core.Member, error)
	Balance(ctx context.Context, program, ref string) (*postgres.BalanceView, error)
	Statement(ctx context.Context, program, ref, cursor string,
		limit int) (*postgres.StatementPage, error)
}

// Options configures a Server. Zero values take the defaults.
type Options struct {
	// ApprovalThreshold is the largest adjustment, either way, that one
	// person may make alone; larger ones wait for a second person.
	// Default 10,000 points.
	ApprovalThreshold core.Points
	// SessionTTL is how long a sign-in lasts. Default 8 hours.
	SessionTTL time.Duration
	// Wait bounds how long an adjustment waits for the ledger. Default 5 s.
	Wait time.Duration
	// SecureCookies marks cookies Secure even on plain HTTP, for a gateway
	// behind a TLS-terminating proxy. Requests over TLS always get them.
	SecureCookies bool
	// ClickHouse returns a connection to the reporting database for the
	// reports pages; nil leaves them answering 503. The back office closes
	// the connection after each page only when CloseClickHouse is set.
	ClickHouse      func(ctx context.Context) (driver.Conn, error)
	CloseClickHouse bool
	// Files returns the bulk-load service for the bulk loads pages, or nil
	// while there is none (they answer 503 then).
	Files func() *files.Service
}

// Server serves the back office under /admin/.
type Server struct {
	db    *pgxpool.Pool
	pub   Publisher
	read  Reader
	log   *slog.Logger
	opt   Options
	pages map[string]*template.Template
	now   func() time.Time
}

// New returns a Server keeping its users, sessions and audit log in db.
func New(db *pgxpool.Pool, pub Publisher, read Reader, log *slog.Logger,
	opt Options) *Server {
	if opt.ApprovalThreshold <= 0 {
		opt.ApprovalThreshold = 10_000
	}
	if opt.SessionTTL <= 0 {
		opt.SessionTTL = 8 * time.Hour
	}
	if opt.Wait <= 0 {
		opt.Wait = 5 * time.Second
	}
	s := &Server{db: db, pub: pub, read: read, log: log, opt: opt, now: time.Now,
		pages: map[string]*template.Template{}}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	for _, n := range names {
		if n == "templates/layout.html" {
			continue
		}
		// A broken embedded template is a programming error caught by every test.
		s.pages[n[len("templates/"):]] = template.Must(template.New("layout.html").
			Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n))
	}
	return s
}

// Register adds the /admin/ routes to r.
func (s *Server) Register(r *mux.Router) {
	a := r.PathPrefix("/admin").Subrouter()
	a.Use(securityHeaders)
	static, _ := fs.Sub(staticFS, "static")
	a.PathPrefix("/static/").Handler(http.StripPrefix("/admin/static/",
		http.FileServer(http.FS(static)))).Methods(http.MethodGet)
	a.HandleFunc("/signin", s.signInPage).Methods(http.MethodGet)
	a.HandleFunc("/signin", s.signIn).Methods(http.MethodPost)
	a.Handle("/signout", s.auth(s.signOut, allRoles...)).Methods(http.MethodPost)
	a.Handle("/", s.auth(func(w http.ResponseWriter, r *http.Request, _ *session) {
		http.Redirect(w, r, "/admin/members", http.StatusSeeOther)
	}, allRoles...)).Methods(http.MethodGet)
	a.Handle("/members", s.auth(s.membersPage, allRoles...)).Methods(http.MethodGet)
	a.Handle("/members/adjust", s.auth(s.adjust, changers...)).Methods(http.MethodPost)
	a.Handle("/members/status", s.auth(s.memberStatus, changers...)).Methods(http.MethodPost)
	a.Handle("/members/conversions/resolve", s.auth(s.resolveConversion, changers...)).
		Methods(http.MethodPost)
	a.Handle("/members/conversions/dispute", s.auth(s.settleDispute, changers...)).
		Methods(http.MethodPost)
	// The address of a member form's answer, reloaded or bookmarked, leads
	// back to its page instead of a bare 404.
	for path, to := range map[string]string{"/members/adjust": "/admin/members",
		"/members/status": "/admin/members", "/members/conversions/resolve": "/admin/members",
		"/members/conversions/dispute":   "/admin/members",
		"/approvals/{id:[0-9]+}/approve": "/admin/approvals",
		"/approvals/{id:[0-9]+}/reject":  "/admin/approvals"} {
		a.Handle(path, http.RedirectHandler(to, http.StatusSeeOther)).Methods(http.MethodGet)
	}
	a.Handle("/approvals", s.auth(s.approvalsPage, allRoles...)).Methods(http.MethodGet)
	a.Handle("/approvals/{id:[0-9]+}/approve", s.auth(s.approve, changers...)).
		Methods(http.MethodPost)
	a.Handle("/approvals/{id:[0-9]+}/reject", s.auth(s.reject, changers...)).
		Methods(http.MethodPost)
	a.Handle("/programs", s.auth(s.programsPage, allRoles...)).Methods(http.MethodGet)
	a.Handle("/programs/{program}", s.auth(s.updateProgram, changers...)).
		Methods(http.MethodPost)
	a.Handle("/rules", s.auth(s.rulesPage, allRoles...)).Methods(http.MethodGet)
	a.Handle("/rules/{program}", s.auth(s.saveRule, changers...)).Methods(http.MethodPost)
	a.Handle("/rules/{program}/{code}/retire", s.auth(s.retireRule, changers...)).
		Methods(http.MethodPost)
	a.Handle("/tiers", s.auth(s.tiersPage, allRoles...)).Methods(http.MethodGet)
	a.Handle("/tiers/{program}", s.auth(s.saveTiers, changers...)).Methods(http.MethodPost)
	a.Handle("/catalog", s.auth(s.catalogPage, allRoles...)).Methods(http.MethodGet)
	a.Handle("/catalog/{program}", s.auth(s.saveReward, changers...)).
		Methods(http.MethodPost)
	a.Handle("/partners", s.auth(s.partnersPage, allRoles...)).Methods(http.MethodGet)
	a.Handle("/partners/{program}", s.auth(s.savePartner, changers...)).
		Methods(http.MethodPost)
	a.Handle("/partners/{program}/{partner}/keys", s.auth(s.issueKey, changers...)).
		Methods(http.MethodPost)
	a.Handle("/partners/{program}/{partner}/keys/{key}/revoke",
		s.auth(s.revokeKey, changers...)).Methods(http.MethodPost)
	a.Handle("/external", s.auth(s.externalPage, allRoles...)).Methods(http.MethodGet)
	a.Handle("/external/{program}", s.auth(s.saveExternal, changers...)).
		Methods(http.MethodPost)
	a.Handle("/account", s.auth(s.accountPage, allRoles...)).Methods(http.MethodGet)
	a.Handle("/account/password", s.auth(s.changePassword, allRoles...)).
		Methods(http.MethodPost)
	a.Handle("/audit", s.auth(s.auditPage, RoleAuditor, RoleAdministrator)).
		Methods(http.MethodGet)
	a.Handle("/reports", s.auth(s.reportsPage, reportRoles...)).Methods(http.MethodGet)
	a.Handle("/reports.csv", s.auth(s.reportsCSV, reportRoles...)).Methods(http.MethodGet)
	a.Handle("/users", s.auth(s.usersPage, RoleAdministrator)).Methods(http.MethodGet)
	a.Handle("/users", s.auth(s.createUser, RoleAdministrator)).Methods(http.MethodPost)
	a.Handle("/users/unlock", s.auth(s.unlockUser, RoleAdministrator)).
		Methods(http.MethodPost)
	a.Handle("/users/disable", s.auth(s.disableUser, RoleAdministrator)).
		Methods(http.MethodPost)
	a.Handle("/users/enable", s.auth(s.enableUser, RoleAdministrator)).
		Methods(http.MethodPost)
	s.registerBulk(a)
	s.registerDeadLetters(a)
}

// securityHeaders keeps pages out of frames and caches and scripts out of
// everything: the back office uses no JavaScript at all.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; "+
			"img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if r.URL.Path != "" && !strings.HasPrefix(r.URL.Path, "/admin/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// view is what every page template receives.
type view struct {
	Title   string
	User    *session
	Notice  string
	Problem string
	Data    any
	// Refresh, when above zero, reloads the page after that many seconds.
	Refresh int
}

// notices are the messages a redirect may ask the next page to show; only
// these fixed texts are shown, never text taken from the address.
var notices = map[string]string{
	"applied":  "The adjustment was applied to the ledger.",
	"queued":   "The adjustment is above the approval threshold: it waits for a second person.",
	"approved": "The adjustment was approved and applied to the ledger.",
	"rejected": "The adjustment was rejected; nothing was posted.",
	"created":  "The user was created.",
	"saved":    "The program's parameters were saved.",
	"unlocked": "The user may sign in again.",
	"accepted": "The ledger has the adjustment but has not answered yet; check the statement.",
	"rule":     "The rule was saved; the audit log has the change.",
	"retired":  "The rule was retired: it no longer gives points from now on.",
	"tiers":    "The tiers were saved; the audit log has the change.",
	"reward":   "The reward was saved; the audit log has the change.",
	"partner":  "The partner was saved; the audit log has the change.",
	"revoked":  "The key was revoked: the partner can no longer call with it.",
	"external": "The external program was saved; the audit log has the change.",
	"pending":  "The change was accepted and will apply shortly: the ledger has not answered yet.",
	"password": "Your password was changed. Your other sessions were ended.",
	"disabled": "The user was disabled and signed out everywhere.",
	"enabled":  "The user may sign in again.",
	"failed":   "The ledger could not be reached: the adjustment is marked failed and can be sent again.",
	"redriven": "The command is back on the bus; the ledger applies it shortly. One applied meanwhile is answered as a replay: nothing is posted twice.",
	"refusal":  "The command is back on the bus; the ledger refused it before and answers it with the same refusal: nothing is applied, even if its cause was mended since.",
	"dropped":  "The dead letter was removed; its command was not sent again.",
	"suspended": "The member was suspended: it keeps its points " +
		"but can neither earn nor start spending until reactivated.",
	"reactivated": "The member was reactivated: it earns and spends again.",
	"closed": "The member was closed; the points it " +
		"had were forfeited (the statement shows the forfeit).",
	"close-queued": "The close forfeits more points than the " +
		"approval threshold: it waits for a second person.",
	"resolved-confirmed": "The conversion was resolved as confirmed: the held points were taken for good.",
	"resolved-refused": "The conversion was resolved as refused: the " +
		"held points were given back to the member.",
	"close-rejected": "The close was rejected; nothing was changed.",
	"replayed": "This form was sent before, and the ledger had applied it " +
		"then: nothing changed now. The page shows the member as it is.",
	"dispute-settled": "The dispute was marked settled; the conversion keeps who settled it and how.",
	"withdrawn":       "You withdrew your request; nothing was changed.",
	"approval-sent": "The approval was sent, but the ledger has not answered yet. " +
		"This page reads its answer each time it is drawn; Check again sends it once more.",
	"close-approved": "The close was approved: the member was closed and its points forfeited.",
}

// render writes a page with status code status.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string,
	v view) {
	t, ok := s.pages[page]
	if !ok {
		s.log.Error("No such page template", "page", page)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if v.Notice == "" {
		v.Notice = notices[r.URL.Query().Get("done")]
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.ExecuteTemplate(w, "layout.html", v); err != nil {
		s.log.Error("Render page", "page", page, "error", err)
	}
}

// fail answers with the error page: 4xx for the user's mistakes (logged at
// Warn), 503 with its reason when a service around us is missing (Warn),
// 500 for ours.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, sess *session, status int,
	msg string, err error) {
	switch {
	case status == http.StatusServiceUnavailable && err == nil && msg != "":
		// A service around us is missing: the message says which.
		s.log.Warn("Back-office request not served", "path", r.URL.Path, "reason", msg)
	case status >= 500:
		s.log.Error("Back-office request failed", "path", r.URL.Path, "error", err)
		msg = "Something went wrong on our side. The error was logged."
	default:
		s.log.Warn("Back-office request refused", "path", r.URL.Path, "status", status,
			"reason", msg)
	}
	s.render(w, r, status, "error.html", view{Title: http.StatusText(status), User: sess,
		Problem: msg, Data: backTo(r)})
}

// backLink is where an error page leads back to: the member a form was
// about, the Approvals page, or the member search.
type backLink struct{ Path, Label string }

func backTo(r *http.Request) backLink {
	switch {
	case strings.HasPrefix(r.URL.Path, "/admin/approvals"):
		return backLink{"/admin/approvals", "Back to approvals"}
	case r.Method == http.MethodPost && r.PostFormValue("member") != "":
		q := url.Values{"program": {r.PostFormValue("program")},
			"member": {strings.TrimSpace(r.PostFormValue("member"))}}
		return backLink{"/admin/members?" + q.Encode(), "Back to the member"}
	}
	return backLink{"/admin/members", "Back to members"}
}

// redirect sends the browser to path after a successful POST, with one of
// the fixed notices.
func redirect(w http.ResponseWriter, r *http.Request, path string, q url.Values,
	done string) {
	if q == nil {
		q = url.Values{}
	}
	if done != "" {
		q.Set("done", done)
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
}

var funcs = template.FuncMap{
	"when": func(t any) string { return formatTime(t, time.UTC) },
	// local writes a time in the program's zone, as members see their dates.
	"local": formatTime,
	"pts":   func(p core.Points) string { return formatPoints(int64(p)) },
	"num":   formatPoints,
	// total is what a close would forfeit: every point the member has.
	"total": func(b core.Balance) core.Points { return core.Points(forfeitOf(b)) },
	// signed writes a change of points with its sign: +300, -1,200.
	"signed": func(p core.Points) string {
		if p > 0 {
			return "+" + formatPoints(int64(p))
		}
		return formatPoints(int64(p))
	},
	"neg": func(p core.Points) core.Points { return -p },
	// formid gives each member form drawn an id of its own (see formTxn).
	"formid": func() string { return uuid.NewString() },
	"plural": func(n int, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	},
	"list":  func(v ...string) []string { return v },
	"stock": stockText,
	"opt":   optText,
	"join":  joined,
	"deref": func(b *bool) bool { return b != nil && *b },
	"pick": func(path string, programs []string, program string) picker {
		return picker{Path: path, Programs: programs, Program: program}
	},
	"can": func(sess *session, what string) bool {
		if sess == nil {
			return false
		}
		switch what {
		case "change":
			return sess.Role == RoleOperator || sess.Role == RoleAdministrator
		case "audit":
			return sess.Role == RoleAuditor || sess.Role == RoleAdministrator
		case "users":
			return sess.Role == RoleAdministrator
		}
		return false
	},
}

// picker is the program selector at the top of the parameter pages.
type picker struct {
	Path     string
	Programs []string
	Program  string
}

// formatPoints writes n with thin groups of three digits: 12,500 or -300.
func formatPoints(n int64) string {
	neg := n < 0
	u := uint64(n)
	if neg {
		u = uint64(-n)
	}
	digits := []byte{}
	for i := 0; ; i++ {
		if i > 0 && i%3 == 0 {
			digits = append(digits, ',')
		}
		digits = append(digits, byte('0'+u%10))
		u /= 10
		if u == 0 {
			break
		}
	}
	if neg {
		digits = append(digits, '-')
	}
	for i, j := 0, len(digits)-1; i < j; i, j = i+1, j-1 {
		digits[i], digits[j] = digits[j], digits[i]
	}
	return string(digits)
}

// formatTime writes a time or *time.Time in loc to the minute; a nil
// *time.Time (a lot that never expires) is "never".
func formatTime(t any, loc *time.Location) string {
	if loc == nil {
		loc = time.UTC
	}
	switch v := t.(type) {
	case time.Time:
		if v.IsZero() {
			return ""
		}
		return v.In(loc).Format("2006-01-02 15:04 MST")
	case *time.Time:
		if v == nil {
			return "never"
		}
		return v.In(loc).Format("2006-01-02 15:04 MST")
	}
	return ""
}
