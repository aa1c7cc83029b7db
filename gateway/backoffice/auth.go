package backoffice

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/text/unicode/norm"

	"github.com/puntos-loyalty/puntos/core"
)

// Role is what a back-office user may do.
type Role string

// The roles. Analysts and auditors read; operators also adjust members and
// approve adjustments; administrators also manage users.
const (
	RoleAdministrator Role = "administrator"
	RoleOperator      Role = "operator"
	RoleAnalyst       Role = "analyst"
	RoleAuditor       Role = "auditor"
)

var (
	allRoles = []Role{RoleAdministrator, RoleOperator, RoleAnalyst, RoleAuditor}
	changers = []Role{RoleAdministrator, RoleOperator}
)

// Sign-in limits: after maxFailures wrong passwords in a row the user is
// locked out for lockout, whatever password comes next.
const (
	maxFailures = 5
	lockout     = 15 * time.Minute
	minPassword = 12
	cookieName  = "puntos_bo_session"
	preCookie   = "puntos_bo_signin"
)

// bcryptCost is the work factor of new password hashes (2^12 rounds);
// tests lower it to keep sign-ins quick.
var bcryptCost = 12

var userName = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)

// ErrLocked means too many wrong passwords were given for the user lately.
var ErrLocked = errors.New("too many failed sign-ins; try again later")

// signInRefused is the sign-in page's one answer to a wrong password, an
// unknown name and a locked account.
const signInRefused = "The name or the password is not right. After five wrong passwords " +
	"an account is locked for 15 minutes; an administrator can lift the lock."

// errUnknownUser is checkPassword's answer for a name no user has; the
// sign-in page answers it as errBadCredentials.
var errUnknownUser = errors.New("no user has that name")

// errBadCredentials is checkPassword's answer for a wrong password; the sign-in
// page gives an unknown name and a locked account the same answer.
var errBadCredentials = errors.New("the name or the password is not right")

// dummyHash is compared against when the user does not exist, so that an
// unknown name takes as long to refuse as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a real password at all"),
	bcryptCost)

// session is a signed-in user.
type session struct {
	UserID int64
	Name   string
	Role   Role
	CSRF   string

	// hash is the password hash a sign-in was checked against: its
	// session is stored only while the user still has it.
	hash string
}

// passwordProblem says what is wrong with a new password, or "" when
// nothing is. The least is counted in characters, so that accented letters
// (two bytes each in UTF-8, or a letter and a combining accent when typed
// decomposed) do not make a short password long enough: code points once
// composed (NFC). The most is counted in bytes as sent, the most bcrypt
// reads.
func passwordProblem(p string) string {
	switch {
	case utf8.RuneCountInString(norm.NFC.String(p)) < minPassword:
		return fmt.Sprintf("must be at least %d characters", minPassword)
	case len(p) > 72:
		return "must be at most 72 bytes, the most bcrypt reads (a letter with an accent " +
			"takes two)"
	}
	return ""
}

// CreateUser adds a back-office user with a bcrypt hash of password, and
// its audit entry under actor in the same transaction. Errors: invalid
// (bad name, role or a password under 12 characters), conflict (the name
// is taken, in any case: "Ana" beside "ana" would be two people to the
// eye and to the approvals alike).
func CreateUser(ctx context.Context, db *pgxpool.Pool, name string, role Role,
	password, actor string) error {
	return createUser(ctx, db, name, role, password, actor, time.Now())
}

// createUser is CreateUser with the audit entry dated at.
func createUser(ctx context.Context, db *pgxpool.Pool, name string, role Role,
	password, actor string, at time.Time) error {
	if !userName.MatchString(name) {
		return core.Errorf(core.Invalid, "name",
			"must be 1-64 letters, digits or . _ @ -")
	}
	if !slices.Contains(allRoles, role) {
		return core.Errorf(core.Invalid, "role",
			"must be administrator, operator, analyst or auditor")
	}
	if problem := passwordProblem(password); problem != "" {
		return core.Errorf(core.Invalid, "password", "%s", problem)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// Names are compared without case under a lock, so that two
		// creations at once cannot both pass.
		if _, err := tx.Exec(ctx, `LOCK TABLE bo_users IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return fmt.Errorf("lock users: %w", err)
		}
		var taken string
		err := tx.QueryRow(ctx, `SELECT name FROM bo_users WHERE lower(name) = lower($1)`,
			name).Scan(&taken)
		if err == nil {
			return core.Errorf(core.Conflict, "name", "a user named %q exists", taken)
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read users: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO bo_users (name, role, password_hash)
			VALUES ($1, $2, $3)`, name, string(role), string(hash)); err != nil {
			return fmt.Errorf("insert user: %w", err)
		}
		after, err := json.Marshal(map[string]any{"name": name, "role": role})
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO bo_audit (at, actor, action, target, before, after)
			VALUES ($1, $2, 'user.created', $3, NULL, $4)`, at, actor, name, after)
		if err != nil {
			return fmt.Errorf("write audit entry: %w", err)
		}
		return nil
	})
}

// UnlockUser lifts the lock that wrong passwords put on the user name, as
// the users page does, and writes the audit entry under actor: the way back
// in when every administrator is locked out. Errors: not_found.
func UnlockUser(ctx context.Context, db *pgxpool.Pool, name, actor string) error {
	return unlockUser(ctx, db, name, actor, time.Now())
}

// unlockUser is UnlockUser with the audit entry dated at.
func unlockUser(ctx context.Context, db *pgxpool.Pool, name, actor string,
	at time.Time) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var failed int
		var until *time.Time
		err := tx.QueryRow(ctx, `SELECT failed_count, locked_until FROM bo_users
			WHERE name = $1 FOR UPDATE`, name).Scan(&failed, &until)
		if errors.Is(err, pgx.ErrNoRows) {
			return core.Errorf(core.NotFound, "user", "there is no user named %q", name)
		}
		if err != nil {
			return fmt.Errorf("read user: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE bo_users SET failed_count = 0, locked_until = NULL
			WHERE name = $1`, name); err != nil {
			return fmt.Errorf("unlock user: %w", err)
		}
		before, err := json.Marshal(map[string]any{"locked": until != nil && at.Before(*until),
			"failed_sign_ins": failed})
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO bo_audit (at, actor, action, target, before, after)
			VALUES ($1, $2, 'user.unlocked', $3, $4, '{"locked": false, "failed_sign_ins": 0}')`,
			at, actor, name, before)
		if err != nil {
			return fmt.Errorf("write audit entry: %w", err)
		}
		return nil
	})
}

// checkPassword verifies a sign-in and keeps the failure count: it returns
// the user, ErrLocked, errBadCredentials or errUnknownUser.
func (s *Server) checkPassword(ctx context.Context, name, password string) (*session, error) {
	now := s.now()
	// The row is read without a lock and bcrypt runs outside any: sign-ins
	// of one name waiting on each other would take longer, in a burst, than
	// those of a name no one has, and tell which names exist. The counts
	// are then moved by single statements.
	var u session
	var hash string
	var locked *time.Time
	var disabled bool
	err := s.db.QueryRow(ctx, `SELECT id, name, role, password_hash, locked_until,
			disabled_at IS NOT NULL
		FROM bo_users WHERE name = $1`, name).
		Scan(&u.UserID, &u.Name, &u.Role, &hash, &locked, &disabled)
	if errors.Is(err, pgx.ErrNoRows) {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return nil, errUnknownUser
	}
	if err != nil {
		return nil, fmt.Errorf("read user: %w", err)
	}
	right := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
	if locked != nil && now.Before(*locked) {
		// The sign-in page answers ErrLocked as it answers a wrong
		// password or an unknown name: telling the right password apart
		// would let guesses go on during the lock, and telling the lock
		// apart would name the accounts that exist.
		if !right {
			return nil, errBadCredentials
		}
		return nil, ErrLocked
	}
	if !right {
		// The fifth failure in a row locks the account and starts the count
		// again; failures while a lock holds (another request's) count for
		// nothing.
		var until *time.Time
		err := s.db.QueryRow(ctx, `UPDATE bo_users SET
				failed_count = CASE WHEN failed_count + 1 >= $3 THEN 0
					ELSE failed_count + 1 END,
				locked_until = CASE WHEN failed_count + 1 >= $3 THEN $4
					ELSE locked_until END
			WHERE id = $1 AND (locked_until IS NULL OR locked_until <= $2)
			RETURNING locked_until`, u.UserID, now, maxFailures, now.Add(lockout)).Scan(&until)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("count failure: %w", err)
		}
		if err == nil && until != nil && until.After(now) {
			s.audit(ctx, u.Name, "user.locked", u.Name, nil,
				map[string]any{"locked_until": until})
		}
		return nil, errBadCredentials
	}
	// Only the right password learns that the user is disabled.
	if disabled {
		return nil, errDisabled
	}
	tag, err := s.db.Exec(ctx, `UPDATE bo_users SET failed_count = 0, locked_until = NULL
		WHERE id = $1 AND (locked_until IS NULL OR locked_until <= $2)
		  AND password_hash = $3 AND disabled_at IS NULL`, u.UserID, now, hash)
	if err != nil {
		return nil, fmt.Errorf("reset failures: %w", err)
	}
	if tag.RowsAffected() == 0 {
		// Locked by other requests meanwhile, or the password changed, or
		// the user was disabled.
		return nil, ErrLocked
	}
	u.hash = hash
	return &u, nil
}

// newSession stores a session for u and returns the cookie value. Only its
// SHA-256 is kept.
func (s *Server) newSession(ctx context.Context, u *session) (string, error) {
	id, csrf := randomToken(), randomToken()
	sum := sha256.Sum256([]byte(id))
	now := s.now()
	// Stored only while the user keeps the password the sign-in was
	// checked against and is not disabled. The row is read FOR SHARE: a
	// password change or a disabling waits for this insert and then ends
	// the session with the others, or this insert waits for it and finds
	// another hash or the user disabled.
	tag, err := s.db.Exec(ctx, `INSERT INTO bo_sessions (id_hash, user_id, csrf, created_at,
			expires_at)
		SELECT $1, u.id, $3, $4, $5 FROM bo_users u
		WHERE u.id = $2 AND ($6 = '' OR u.password_hash = $6) AND u.disabled_at IS NULL
		FOR SHARE`, sum[:], u.UserID,
		csrf, now, now.Add(s.opt.SessionTTL), u.hash)
	if err != nil {
		return "", fmt.Errorf("insert session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return "", errBadCredentials // the password changed while it was checked
	}
	// Expired sessions of anyone are cleared now and then.
	_, _ = s.db.Exec(ctx, `DELETE FROM bo_sessions WHERE expires_at < $1`, now)
	return id, nil
}

// lookup returns the live session of the request, or nil.
func (s *Server) lookup(r *http.Request) (*session, error) {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return nil, nil
	}
	sum := sha256.Sum256([]byte(c.Value))
	var u session
	err = s.db.QueryRow(r.Context(), `SELECT u.id, u.name, u.role, s.csrf
		FROM bo_sessions s JOIN bo_users u ON u.id = s.user_id
		WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL`, sum[:],
		s.now()).
		Scan(&u.UserID, &u.Name, &u.Role, &u.CSRF)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read session: %w", err)
	}
	return &u, nil
}

// auth serves h to signed-in users whose role is among roles. Every POST
// must carry the session's CSRF token in the "csrf" form field.
func (s *Server) auth(h func(http.ResponseWriter, *http.Request, *session),
	roles ...Role) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := s.lookup(r)
		if err != nil {
			s.fail(w, r, nil, http.StatusInternalServerError, "", err)
			return
		}
		if sess == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/admin/signin", http.StatusSeeOther)
				return
			}
			s.fail(w, r, nil, http.StatusUnauthorized,
				"Your session has ended. Sign in again.", nil)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, bodyLimit(r))
			var tooLarge *http.MaxBytesError
			err := r.ParseForm() // a url-encoded form; a multipart one is read below
			if err == nil {
				err = r.ParseMultipartForm(32 << 20)
			}
			if errors.As(err, &tooLarge) {
				s.fail(w, r, sess, http.StatusRequestEntityTooLarge, fmt.Sprintf("The form "+
					"is larger than the %d KiB this page takes; nothing was changed.",
					tooLarge.Limit>>10), nil)
				return
			}
			if !sameToken(r.PostFormValue("csrf"), sess.CSRF) {
				s.fail(w, r, sess, http.StatusForbidden,
					"The form was not sent from this session (CSRF check failed). "+
						"Reload the page and try again.", nil)
				return
			}
		}
		if !slices.Contains(roles, sess.Role) {
			s.fail(w, r, sess, http.StatusForbidden,
				fmt.Sprintf("The %s role may not do this.", sess.Role), nil)
			return
		}
		if name := notText(r); name != "" {
			s.fail(w, r, sess, http.StatusBadRequest, fmt.Sprintf("The value of %q is not "+
				"text (bytes that are not UTF-8, or NUL); nothing was read or changed.", name),
				nil)
			return
		}
		h(w, r, sess)
	})
}

// notText names the first path variable, query parameter or form field of r
// whose name or value is not UTF-8 or holds NUL, which the database cannot
// take (a page asked for program=%FF answered 500); "" when all are text.
func notText(r *http.Request) string {
	ok := func(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }
	check := func(vals map[string][]string) string {
		names := make([]string, 0, len(vals))
		for k := range vals {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			if !ok(k) {
				return strings.ToValidUTF8(strings.ReplaceAll(k, "\x00", ""), "?")
			}
			for _, v := range vals[k] {
				if !ok(v) {
					return k
				}
			}
		}
		return ""
	}
	vars := map[string][]string{}
	for k, v := range mux.Vars(r) {
		vars[k] = []string{v}
	}
	if name := check(vars); name != "" {
		return name
	}
	if err := r.ParseForm(); err == nil {
		if name := check(r.Form); name != "" {
			return name
		}
	}
	if r.MultipartForm != nil {
		return check(r.MultipartForm.Value)
	}
	return ""
}

func (s *Server) signInPage(w http.ResponseWriter, r *http.Request) {
	s.showSignIn(w, r, http.StatusOK, "")
}

// showSignIn renders the form with a fresh pre-session CSRF token, held in
// a cookie and a hidden field that must match (double submit).
func (s *Server) showSignIn(w http.ResponseWriter, r *http.Request, status int,
	problem string) {
	token := randomToken()
	http.SetCookie(w, s.cookie(r, preCookie, token, 30*time.Minute))
	s.render(w, r, status, "signin.html", view{Title: "Sign in", Problem: problem,
		Data: token})
}

func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	pre, err := r.Cookie(preCookie)
	if err != nil || !sameToken(r.PostFormValue("csrf"), pre.Value) {
		s.log.Warn("Sign-in refused: CSRF check failed")
		s.showSignIn(w, r, http.StatusForbidden,
			"The form had expired or did not come from this site. Try again.")
		return
	}
	name := r.PostFormValue("name")
	u, err := s.checkPassword(r.Context(), name, r.PostFormValue("password"))
	switch {
	case errors.Is(err, errDisabled):
		s.log.Warn("Sign-in refused: user disabled", "user", name)
		s.showSignIn(w, r, http.StatusForbidden,
			"This account is disabled. Ask an administrator to enable it.")
		return
	case errors.Is(err, ErrLocked), errors.Is(err, errBadCredentials),
		errors.Is(err, errUnknownUser):
		// One answer for the three. The log names a user that exists (not
		// what was typed for one that does not: it may be a password).
		switch {
		case errors.Is(err, ErrLocked):
			s.log.Warn("Sign-in refused: locked out", "user", name, "remote", r.RemoteAddr)
		case errors.Is(err, errBadCredentials):
			s.log.Warn("Sign-in refused: wrong password", "user", name, "remote",
				r.RemoteAddr)
		default:
			s.log.Warn("Sign-in refused: no such user", "remote", r.RemoteAddr)
		}
		s.showSignIn(w, r, http.StatusUnauthorized, signInRefused)
		return
	case err != nil:
		s.fail(w, r, nil, http.StatusInternalServerError, "", err)
		return
	}
	id, err := s.newSession(r.Context(), u)
	if errors.Is(err, errBadCredentials) {
		s.log.Warn("Sign-in refused: the password changed meanwhile", "user", name,
			"remote", r.RemoteAddr)
		s.showSignIn(w, r, http.StatusUnauthorized, signInRefused)
		return
	}
	if err != nil {
		s.fail(w, r, nil, http.StatusInternalServerError, "", err)
		return
	}
	http.SetCookie(w, s.cookie(r, cookieName, id, s.opt.SessionTTL))
	http.SetCookie(w, s.cookie(r, preCookie, "", -1))
	s.audit(r.Context(), u.Name, "user.signed_in", u.Name, nil, nil)
	http.Redirect(w, r, "/admin/members", http.StatusSeeOther)
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request, sess *session) {
	if c, err := r.Cookie(cookieName); err == nil {
		sum := sha256.Sum256([]byte(c.Value))
		if _, err := s.db.Exec(r.Context(), `DELETE FROM bo_sessions WHERE id_hash = $1`,
			sum[:]); err != nil {
			s.fail(w, r, sess, http.StatusInternalServerError, "", err)
			return
		}
	}
	http.SetCookie(w, s.cookie(r, cookieName, "", -1))
	http.Redirect(w, r, "/admin/signin", http.StatusSeeOther)
}

// cookie builds a back-office cookie: HttpOnly, SameSite=Strict, scoped to
// /admin/, Secure over TLS, including TLS a proxy ended (X-Forwarded-Proto:
// https; a client forging it only keeps the cookie from itself on plain
// HTTP). A negative ttl deletes it.
func (s *Server) cookie(r *http.Request, name, value string, ttl time.Duration) *http.Cookie {
	// Of proxies in a row, the first names the scheme the browser used.
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	secure := r.TLS != nil || s.opt.SecureCookies ||
		strings.EqualFold(strings.TrimSpace(proto), "https")
	c := &http.Cookie{Name: name, Value: value, Path: "/admin/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secure}
	if ttl < 0 {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(ttl / time.Second)
	}
	return c
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func sameToken(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// audit records one change made through the back office. A failure to
// record is logged, not shown: the change itself has happened.
// Parameter changes, queued and rejected adjustments and changes to users
// write theirs in the transaction of the change instead: parameter commands
// carry an audit note on the bus and the ledger writes the entry as it
// applies them (bus.Audit); the others use auditIn.
// User creation (CreateUser, shared with the command line) does the same.
// Ledger adjustments and approvals go through the
// bus without a note, so their entry can only follow the ledger's answer.
func (s *Server) audit(ctx context.Context, actor, action, target string, before,
	after any) {
	_, err := s.db.Exec(ctx, `INSERT INTO bo_audit (at, actor, action, target, before, after)
		VALUES ($1, $2, $3, $4, $5, $6)`, s.now(), actor, action, target, before, after)
	if err != nil {
		s.log.Error("Write audit entry", "action", action, "error", err)
	}
}
