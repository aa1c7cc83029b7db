package soap

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// WS-Security password types.
const (
	tokenProfile = "http://docs.oasis-open.org/wss/2004/01/" +
		"oasis-200401-wss-username-token-profile-1.0"
	passwordText   = tokenProfile + "#PasswordText"
	passwordDigest = tokenProfile + "#PasswordDigest"
)

// Credential is one calling system: its name (the source of every command it
// sends), its password and the operations granted to it.
type Credential struct {
	Name string
	// sum is the SHA-256 of the password, for Basic and PasswordText.
	sum [32]byte
	// secret is the password itself, which PasswordDigest needs to recompute
	// the caller's digest; nil when the password was configured as a hash.
	secret []byte
	ops    map[string]bool
}

// Allows reports whether the credential is granted operation op.
func (c *Credential) Allows(op string) bool { return c.ops["*"] || c.ops[op] }

// ParseUsers reads credentials written as comma-separated entries
// "name:password:Op1|Op2", where "*" grants every operation. A password
// written "sha256:HEX" is kept as that hash only; such a credential can use
// HTTP Basic and PasswordText but not PasswordDigest, which needs the
// password itself. Errors name the entry, never the password.
func ParseUsers(spec string) ([]Credential, error) {
	var out []Credential
	seen := map[string]bool{}
	for i, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, rest, ok := strings.Cut(entry, ":")
		cut := strings.LastIndexByte(rest, ':')
		if !ok || cut < 0 {
			return nil, fmt.Errorf("soap-users: entry %d must be name:password:operations", i+1)
		}
		password, grants := rest[:cut], rest[cut+1:]
		if core.ReservedSource(name) {
			return nil, fmt.Errorf("soap-users: entry %d: %q is a name Puntos gives its own "+
				"commands (a SOAP user's name is the source of its calls); choose another",
				i+1, name)
		}
		if !core.ValidRef(name) || strings.ContainsAny(name, ":,") {
			return nil, fmt.Errorf("soap-users: entry %d: the name must be 1-128 letters, "+
				"digits or - . _ ~ @ ! $ & ' ( ) * + ; =", i+1)
		}
		if seen[name] {
			return nil, fmt.Errorf("soap-users: %s appears twice", name)
		}
		seen[name] = true
		c := Credential{Name: name, ops: map[string]bool{}}
		if h, ok := strings.CutPrefix(password, "sha256:"); ok {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != 32 {
				return nil, fmt.Errorf("soap-users: %s: sha256: must be followed by 64 hex "+
					"digits", name)
			}
			copy(c.sum[:], b)
		} else {
			if len(password) < 12 {
				return nil, fmt.Errorf("soap-users: %s: the password must have at least 12 "+
					"characters", name)
			}
			c.sum = sha256.Sum256([]byte(password))
			c.secret = []byte(password)
		}
		for _, op := range strings.Split(grants, "|") {
			op = strings.TrimSpace(op)
			if op != "*" && operations[op] == nil {
				return nil, fmt.Errorf("soap-users: %s: unknown operation %q", name, op)
			}
			c.ops[op] = true
		}
		out = append(out, c)
	}
	return out, nil
}

// nonceCache remembers the digest nonces seen within the freshness window,
// so that a captured UsernameToken cannot be sent twice.
type nonceCache struct {
	mu   sync.Mutex
	seen map[string]time.Time // user+nonce → when it may be forgotten
	max  int
}

// nonceWait bounds how long a call waits for the database's claim of its
// nonce.
const nonceWait = 2 * time.Second

// forget drops a claim that could not be made for good.
func (c *nonceCache) forget(key string) {
	c.mu.Lock()
	delete(c.seen, key)
	c.mu.Unlock()
}

// claim records the nonce and reports whether it was new.
func (c *nonceCache) claim(key string, now, forget time.Time) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.seen[key]; dup {
		return false, nil
	}
	if len(c.seen) >= c.max {
		for k, until := range c.seen {
			if now.After(until) {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= c.max {
			// Forgetting a live nonce would let it be replayed: refuse instead.
			return false, core.Errorf(core.Unavailable, "Nonce",
				"too many recent logins to check for replays; retry shortly")
		}
	}
	c.seen[key] = forget
	return true, nil
}

// unauthorized is a Client.Unauthorized error about field.
func unauthorized(field, format string, args ...any) error {
	return core.Errorf(core.Unauthorized, field, format, args...)
}

// authenticate finds the caller of a request: a WS-Security UsernameToken in
// the envelope's header first, HTTP Basic otherwise.
//
// Basic and PasswordText send the password itself: they are accepted only
// over TLS, or from a loopback peer (a TLS-terminating proxy on the same
// host, or a local client). Elsewhere only PasswordDigest is.
func (s *Server) authenticate(r *http.Request, env *envelope) (*Credential, error) {
	plain := plainPasswordsAllowed(r)
	if env.header != nil {
		if sec := env.header.child(nsWSSE, "Security"); sec != nil {
			return s.usernameToken(r.Context(), sec, plain)
		}
	}
	if user, pass, ok := r.BasicAuth(); ok {
		if !plain {
			return nil, unauthorized("Authorization", "HTTP Basic needs TLS; use "+
				"PasswordDigest on plain HTTP")
		}
		c := s.credential(user)
		sum := sha256.Sum256([]byte(pass))
		if c == nil || subtle.ConstantTimeCompare(sum[:], c.sum[:]) != 1 {
			return nil, unauthorized("Authorization", "the user name or password is wrong")
		}
		return c, nil
	}
	return nil, unauthorized("Security", "a WS-Security UsernameToken or HTTP Basic "+
		"credentials are required")
}

// credential returns the credential called name, or nil.
func (s *Server) credential(name string) *Credential {
	i := slices.IndexFunc(s.users, func(c Credential) bool { return c.Name == name })
	if i < 0 {
		return nil
	}
	return &s.users[i]
}

// usernameToken checks a wsse:Security header's UsernameToken.
func (s *Server) usernameToken(ctx context.Context, sec *node, plain bool) (*Credential,
	error) {
	tok := sec.child(nsWSSE, "UsernameToken")
	if tok == nil {
		return nil, unauthorized("UsernameToken", "is required in the Security header")
	}
	text := func(n *node) string {
		if n == nil {
			return ""
		}
		return strings.TrimSpace(n.text.String())
	}
	user := text(tok.child(nsWSSE, "Username"))
	pw := tok.child(nsWSSE, "Password")
	if user == "" || pw == nil {
		return nil, unauthorized("UsernameToken", "needs a Username and a Password")
	}
	c := s.credential(user)
	typ, _ := pw.attr("", "Type")
	switch typ {
	case "", passwordText:
		if !plain {
			return nil, unauthorized("Password", "PasswordText needs TLS; use "+
				"PasswordDigest on plain HTTP")
		}
		sum := sha256.Sum256([]byte(pw.text.String()))
		if c == nil || subtle.ConstantTimeCompare(sum[:], c.sum[:]) != 1 {
			return nil, unauthorized("Password", "the user name or password is wrong")
		}
		return c, nil
	case passwordDigest:
	default:
		return nil, unauthorized("Password", "type %q is not supported: use PasswordText or "+
			"PasswordDigest", typ)
	}

	// PasswordDigest: a fresh Created time, a nonce never seen, and the digest.
	createdText := text(tok.child(nsWSU, "Created"))
	created, err := time.Parse(time.RFC3339Nano, createdText)
	if err != nil {
		return nil, unauthorized("Created", "is required with PasswordDigest: a UTC time such "+
			"as 2026-03-01T13:00:00Z")
	}
	now := s.now()
	if created.Before(now.Add(-s.window)) || created.After(now.Add(s.window)) {
		return nil, unauthorized("Created", "is more than %s away from the server's clock",
			s.window)
	}
	nonceText := text(tok.child(nsWSSE, "Nonce"))
	nonce, err := base64.StdEncoding.DecodeString(nonceText)
	if err != nil || len(nonce) < 8 {
		return nil, unauthorized("Nonce", "is required with PasswordDigest: at least 8 random "+
			"bytes in Base64")
	}
	if c == nil || c.secret == nil {
		return nil, unauthorized("Password", "the user name or password is wrong")
	}
	h := sha1.New()
	h.Write(nonce)
	h.Write([]byte(createdText))
	h.Write(c.secret)
	want := base64.StdEncoding.EncodeToString(h.Sum(nil))
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.TrimSpace(pw.text.String()))) != 1 {
		return nil, unauthorized("Password", "the user name or password is wrong")
	}
	// Only a correct digest claims its nonce, so that nobody can burn the
	// nonces of others; a nonce is kept until its Created time is stale.
	// A nonce is one token's, whatever the user name: the digest does not
	// cover the name, so the same token under another name is a replay.
	forget := created.Add(2 * s.window)
	key := string(nonce)
	fresh, err := s.nonces.claim(key, now, forget)
	if err != nil {
		return nil, err
	}
	// This process's cache knows only what it saw since it started: the
	// database knows what every gateway saw, before a restart too. A
	// database that does not answer in time is told at once, and the nonce
	// is not spent: the same request may be sent again.
	if fresh && s.claimer != nil {
		cctx, cancel := context.WithTimeout(ctx, nonceWait)
		fresh, err = s.claimer.ClaimNonce(cctx, user, nonce, forget)
		cancel()
		if err != nil {
			s.nonces.forget(key)
			s.log.Error("SOAP nonce not checked", "user", user, "error", err)
			return nil, core.Errorf(core.Unavailable, "Nonce",
				"cannot check the nonce for replays now; send the request again shortly")
		}
	}
	if !fresh {
		return nil, unauthorized("Nonce", "was used before: every request needs a new nonce")
	}
	return c, nil
}

// MaskUsers shows credentials for a log: names and grants, never passwords.
func MaskUsers(spec string) string {
	users, err := ParseUsers(spec)
	if err != nil {
		return "(not valid)"
	}
	var parts []string
	for _, u := range users {
		var ops []string
		for op := range u.ops {
			ops = append(ops, op)
		}
		slices.Sort(ops)
		parts = append(parts, u.Name+":***:"+strings.Join(ops, "|"))
	}
	return strings.Join(parts, ",")
}

// plainPasswordsAllowed reports whether a password may travel as itself on
// this request: over TLS, or from a loopback peer.
func plainPasswordsAllowed(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
