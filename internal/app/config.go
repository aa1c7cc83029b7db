// Package app wires the parts of Puntos into the processes the puntos
// binary runs: the gateway, the core consumers, the adapters, or all of them.
package app

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/gateway/soap"
	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// Config is everything a Puntos process can be told. Each field has a flag
// and an environment variable; flags win over the environment.
type Config struct {
	HTTPAddr       string
	DatabaseURL    string
	NATSURL        string
	NATSPort       int
	NATSSync       string
	NATSReplicas   int
	MaxDeliver     int           // deliveries of a failing command before it is dead-lettered
	EventsMaxAge   time.Duration // how long the events stream keeps an event
	DataDir        string
	InboxDir       string        // bulk files dropped per program; empty is DataDir/inbox
	InboxPoll      time.Duration // how often the inbox is looked at
	BulkApproval   int           // points above which a batch needs a second approval
	AdjustApproval int           // points above which a back-office adjustment needs one
	SecureCookies  bool          // back-office cookies Secure on plain HTTP too (behind TLS)
	Partitions     int
	BatchSize      int
	LedgerWriters  int // ledger transactions applying commands at once; 0 merges none
	GCPercent      int // the Go garbage collector's target (GOGC), unless GOGC is set
	ResultWait     time.Duration
	ClickHouseAddr string
	ClickHouseDB   string
	APIKeys        string
	SOAPUsers      string
	SecretsKey     string // keys sealing partner credentials; see secretsKeyring
	SweepInterval  time.Duration
	NoticeDays     []int // thresholds, in days before expiry, of expiry notices
	LogLevel       string
	LogFormat      string

	// Version is the build's version, which the binary sets: the one field
	// without a flag. puntos_build_info shows it.
	Version string
}

// setting describes one configuration field.
type setting struct {
	flag, env, def, help string
	secret               bool
	set                  func(c *Config, v string) error
}

func str(p func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *p(c) = v; return nil }
}

func num(name string, p func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%s: %q is not a whole number", name, v)
		}
		*p(c) = n
		return nil
	}
}

func dur(name string, p func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration such as 5s", name, v)
		}
		*p(c) = d
		return nil
	}
}

var settings = []setting{
	{"http-addr", "PUNTOS_HTTP_ADDR", "127.0.0.1:8080", "address of the gateway's HTTP server",
		false, str(func(c *Config) *string { return &c.HTTPAddr })},
	{"database-url", "PUNTOS_DATABASE_URL",
		"postgres://postgres@127.0.0.1:5432/puntos?sslmode=disable", "PostgreSQL ledger URL",
		true, str(func(c *Config) *string { return &c.DatabaseURL })},
	{"nats-url", "NATS_URL", "", "NATS server or cluster URLs; empty starts an embedded server " +
		"(puntos run only: gateway, core and adapters apart need a NATS server of their own)",
		true, str(func(c *Config) *string { return &c.NATSURL })},
	{"nats-port", "PUNTOS_NATS_PORT", "14222", "client port of the embedded NATS server",
		false, num("nats-port", func(c *Config) *int { return &c.NATSPort })},
	{"nats-sync", "PUNTOS_NATS_SYNC", "always",
		"embedded JetStream disk sync: always (an accepted command survives a machine crash) " +
			"or interval (faster; up to two minutes of accepted commands at risk)",
		false, str(func(c *Config) *string { return &c.NATSSync })},
	{"nats-replicas", "PUNTOS_NATS_REPLICAS", "1",
		"replicas of each JetStream stream; 3 on a three-node cluster", false,
		num("nats-replicas", func(c *Config) *int { return &c.NATSReplicas })},
	{"max-deliver", "PUNTOS_MAX_DELIVER", "10",
		"deliveries of a command that fails as sent before it goes to the dead-letter " +
			"stream; an outage of PostgreSQL uses none of them", false,
		num("max-deliver", func(c *Config) *int { return &c.MaxDeliver })},
	{"events-max-age", "PUNTOS_EVENTS_MAX_AGE", "720h",
		"how long the events stream keeps a ledger event (at least 24h); the reporting " +
			"sink catches up after a ClickHouse outage shorter than this", false,
		dur("events-max-age", func(c *Config) *time.Duration { return &c.EventsMaxAge })},
	{"data-dir", "PUNTOS_DATA_DIR", ".data", "directory for the embedded NATS store and files",
		false, str(func(c *Config) *string { return &c.DataDir })},
	{"inbox-dir", "PUNTOS_INBOX_DIR", "", "folder watched for bulk-points files, one " +
		"sub-folder per program; empty is <data-dir>/inbox", false,
		str(func(c *Config) *string { return &c.InboxDir })},
	{"inbox-poll", "PUNTOS_INBOX_POLL", "5s", "how often the inbox folder is looked at", false,
		dur("inbox-poll", func(c *Config) *time.Duration { return &c.InboxPoll })},
	{"bulk-approval-points", "PUNTOS_BULK_APPROVAL_POINTS", "0",
		"total points (credits plus debits) above which a bulk file needs a second " +
			"person's approval before posting; 0 never asks", false,
		num("bulk-approval-points", func(c *Config) *int { return &c.BulkApproval })},
	{"adjustment-approval-points", "PUNTOS_ADJUSTMENT_APPROVAL_POINTS", "10000",
		"points, either way, above which a manual adjustment in the back office needs a " +
			"second person's approval (a person's adjustments of one member over 24 hours " +
			"counted together)", false,
		num("adjustment-approval-points", func(c *Config) *int { return &c.AdjustApproval })},
	{"secure-cookies", "PUNTOS_SECURE_COOKIES", "false",
		"mark the back office's cookies Secure on plain HTTP too, for a gateway behind a " +
			"TLS-terminating proxy (they are whenever the request came over TLS or with " +
			"X-Forwarded-Proto: https)", false,
		func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("secure-cookies: %q is not true or false", v)
			}
			c.SecureCookies = b
			return nil
		}},
	{"partitions", "PUNTOS_PARTITIONS", "8", "command partitions (members spread over them)",
		false, num("partitions", func(c *Config) *int { return &c.Partitions })},
	{"batch-size", "PUNTOS_BATCH_SIZE", "2048", "commands applied per ledger transaction",
		false, num("batch-size", func(c *Config) *int { return &c.BatchSize })},
	{"ledger-writers", "PUNTOS_LEDGER_WRITERS", "2", "ledger transactions applying " +
		"commands at once; the partitions' batches that arrive meanwhile are merged into " +
		"the next one, up to batch-size commands; a second one starts beside a small " +
		"first one only once an eighth of batch-size waits (0: each partition applies " +
		"its own)",
		false, num("ledger-writers", func(c *Config) *int { return &c.LedgerWriters })},
	{"gc-percent", "PUNTOS_GC_PERCENT", "400", "heap growth, in percent of the live heap, " +
		"that starts a garbage collection (Go's GOGC, which wins when set); more uses more " +
		"memory and less CPU", false,
		num("gc-percent", func(c *Config) *int { return &c.GCPercent })},
	{"result-wait", "PUNTOS_RESULT_WAIT", "5s", "how long a write waits before answering 202",
		false, dur("result-wait", func(c *Config) *time.Duration { return &c.ResultWait })},
	{"clickhouse-addr", "PUNTOS_CLICKHOUSE_ADDR", "127.0.0.1:19000",
		"ClickHouse native address; off (or an empty flag) disables reporting", false,
		str(func(c *Config) *string { return &c.ClickHouseAddr })},
	{"clickhouse-db", "PUNTOS_CLICKHOUSE_DB", "puntos", "ClickHouse database", false,
		str(func(c *Config) *string { return &c.ClickHouseDB })},
	{"api-keys", "PUNTOS_API_KEYS", "",
		"API keys as source=key pairs, comma separated; empty allows the development key " +
			"'puntos-dev-key' for source 'dev' on a loopback address only",
		true, str(func(c *Config) *string { return &c.APIKeys })},
	{"soap-users", "PUNTOS_SOAP_USERS", "",
		"SOAP callers as name:password:Op1|Op2 entries, comma separated ('*' grants every " +
			"operation; a password written sha256:HEX is kept as that hash); empty refuses " +
			"every SOAP call",
		true, func(c *Config, v string) error {
			if _, err := soap.ParseUsers(v); err != nil {
				return err
			}
			c.SOAPUsers = v
			return nil
		}},
	{"secrets-key", "PUNTOS_SECRETS_KEY", "",
		"key that encrypts the credentials of external programs on the bus and in the " +
			"database (the same on every process): the " +
			"base64 of 32 random bytes (openssl rand -base64 32); to rotate, the new key " +
			"first and the old ones after it, comma separated; empty uses a development " +
			"key kept in <data-dir>/" + devKeyFile + " when the HTTP address is a loopback " +
			"one, and elsewhere refuses to store credentials",
		true, func(c *Config, v string) error {
			if strings.TrimSpace(v) != "" {
				if _, err := secrets.Parse(v); err != nil {
					return secretsKeyError(err)
				}
			}
			c.SecretsKey = v
			return nil
		}},
	{"sweep-interval", "PUNTOS_SWEEP_INTERVAL", "1m",
		"how often core expires lots, matures pending points and frees stale holds", false,
		dur("sweep-interval", func(c *Config) *time.Duration { return &c.SweepInterval })},
	{"expiry-notice-days", "PUNTOS_EXPIRY_NOTICE_DAYS", "30,7,1",
		"days before expiry at which members are warned on the bus (expiry_notice events), " +
			"comma separated; none sends none (an empty setting keeps the default)", false,
		noticeDays},
	{"log-level", "PUNTOS_LOG_LEVEL", "info", "debug, info, warn or error", false,
		str(func(c *Config) *string { return &c.LogLevel })},
	{"log-format", "PUNTOS_LOG_FORMAT", "auto", "json, text, or auto (json when not a terminal)",
		false, str(func(c *Config) *string { return &c.LogFormat })},
}

// DevKey is the API key allowed when none is configured and the gateway
// listens on a loopback address.
const DevKey = "puntos-dev-key"

// LoadConfig reads the configuration: defaults, then the environment, then
// flags from args. The returned FlagSet has parsed args (for positional args).
// An error about a setting names its flag and its environment variable.
func LoadConfig(name string, args []string, getenv func(string) string,
	out io.Writer) (*Config, *flag.FlagSet, error) {
	c, fs, err := loadConfig(name, args, getenv, out)
	if err != nil {
		return nil, nil, withEnv(err)
	}
	return c, fs, nil
}

// withEnv names the environment variable beside the flag an error starts
// with ("partitions: ..." becomes "partitions (PUNTOS_PARTITIONS): ..."), so
// that a user who set the variable recognises it.
func withEnv(err error) error {
	msg := err.Error()
	for _, s := range settings {
		if rest, ok := strings.CutPrefix(msg, s.flag+":"); ok {
			return fmt.Errorf("%s (%s):%s", s.flag, s.env, rest)
		}
	}
	return err
}

func loadConfig(name string, args []string, getenv func(string) string,
	out io.Writer) (*Config, *flag.FlagSet, error) {
	c := &Config{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	vals := make([]*string, len(settings))
	for i, s := range settings {
		vals[i] = fs.String(s.flag, s.def, s.help+" (env "+s.env+")")
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: puntos %s [flags]\n\nFlags (each also read from its "+
			"environment variable; a flag wins):\n", name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for i, s := range settings {
		v := *vals[i]
		if e, ok := lookup(getenv, s.env); ok && !given[s.flag] {
			v = e
		}
		if err := s.set(c, v); err != nil {
			return nil, nil, err
		}
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		return nil, nil, fmt.Errorf("partitions: must be between 1 and 1024")
	}
	if c.AdjustApproval < 1 {
		return nil, nil, fmt.Errorf("adjustment-approval-points: must be at least 1")
	}
	if c.BatchSize < 1 || c.BatchSize > 5000 {
		return nil, nil, fmt.Errorf("batch-size: must be between 1 and 5000")
	}
	if c.LedgerWriters < 0 || c.LedgerWriters > 64 {
		return nil, nil, fmt.Errorf("ledger-writers: must be between 0 and 64")
	}
	if c.GCPercent < 25 || c.GCPercent > 5000 {
		return nil, nil, fmt.Errorf("gc-percent: must be between 25 and 5000")
	}
	if c.NATSReplicas < 1 || c.NATSReplicas > 5 {
		return nil, nil, fmt.Errorf("nats-replicas: must be between 1 and 5")
	}
	if c.MaxDeliver < 1 {
		return nil, nil, fmt.Errorf("max-deliver: must be at least 1")
	}
	if c.EventsMaxAge < 24*time.Hour {
		return nil, nil, fmt.Errorf("events-max-age: must be at least 24h")
	}
	if c.NATSSync != "always" && c.NATSSync != "interval" {
		return nil, nil, fmt.Errorf("nats-sync: must be always or interval")
	}
	if _, port, err := net.SplitHostPort(c.HTTPAddr); err != nil || port == "" {
		return nil, nil, fmt.Errorf("http-addr (PUNTOS_HTTP_ADDR): %q must be host:port, "+
			"as 127.0.0.1:8080 (or :8080 for every address)", c.HTTPAddr)
	}
	// An empty variable counts as unset, so the environment says "off".
	if strings.EqualFold(strings.TrimSpace(c.ClickHouseAddr), "off") {
		c.ClickHouseAddr = ""
	}
	if abs, err := filepath.Abs(c.DataDir); err == nil {
		c.DataDir = abs
	}
	if _, err := c.Keys(); err != nil {
		return nil, nil, err
	}
	return c, fs, nil
}

// lookup reads an environment variable; an empty value counts as unset.
func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

// validSource reports whether s may name an API key's source: 1-128
// characters of valid UTF-8, no '/' (bus.MsgID separates source and
// transaction id with it), no control or format characters (the audit log
// and the logs show it) and no spaces at either end. Inner spaces pass: names
// such as "billing team" were taken before 5 December 2026, and a source
// renamed would lose its callers' idempotency.
func validSource(s string) bool {
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > 128 ||
		strings.TrimSpace(s) != s || strings.ContainsRune(s, '/') {
		return false
	}
	for _, r := range s {
		// Format characters (zero-width spaces, bidi overrides) would make
		// two sources look alike, or one read backwards in the audit log.
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return false
		}
	}
	return true
}

// Keys returns the API keys as key → source name.
func (c *Config) Keys() (map[string]string, error) {
	keys := map[string]string{}
	if strings.TrimSpace(c.APIKeys) == "" {
		return keys, nil
	}
	for _, pair := range strings.Split(c.APIKeys, ",") {
		source, key, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || source == "" || len(key) < 12 {
			return nil, fmt.Errorf("api-keys: each entry must be source=key with a key of at " +
				"least 12 characters")
		}
		// The source names the caller's commands on the bus and in the
		// ledger; bus.MsgID needs it without '/'.
		if !validSource(source) || core.ReservedSource(source) {
			return nil, fmt.Errorf("api-keys: source %q must be 1-128 characters without "+
				"'/', control or invisible formatting characters or spaces at either end, "+
				"and not a name Puntos gives its own commands (backoffice, conversion, "+
				"puntos, or starting with partner:, file: or puntos.; partners' keys are "+
				"issued through the API). A source's name keys its callers' idempotency "+
				"keys: renaming a source lets a request sent before under the old name be "+
				"applied again, so keep the names in use", source)
		}
		if other, dup := keys[key]; dup && other != source {
			return nil, fmt.Errorf("api-keys: sources %q and %q have the same key: a key "+
				"names one source, whose idempotency keys it uses; give each its own", other,
				source)
		}
		keys[key] = source
	}
	return keys, nil
}

// Masked lists the configuration as name=value pairs for the start-up log,
// with passwords and keys hidden.
func (c *Config) Masked() []any {
	vals := map[string]string{}
	vals["http-addr"] = c.HTTPAddr
	vals["database-url"] = maskURL(c.DatabaseURL)
	vals["nats-url"] = maskURL(c.NATSURL)
	vals["nats-port"] = strconv.Itoa(c.NATSPort)
	vals["nats-sync"] = c.NATSSync
	vals["nats-replicas"] = strconv.Itoa(c.NATSReplicas)
	vals["max-deliver"] = strconv.Itoa(c.MaxDeliver)
	vals["events-max-age"] = c.EventsMaxAge.String()
	vals["data-dir"] = c.DataDir
	vals["inbox-dir"] = c.InboxDir
	vals["inbox-poll"] = c.InboxPoll.String()
	vals["bulk-approval-points"] = strconv.Itoa(c.BulkApproval)
	vals["adjustment-approval-points"] = strconv.Itoa(c.AdjustApproval)
	vals["secure-cookies"] = strconv.FormatBool(c.SecureCookies)
	vals["partitions"] = strconv.Itoa(c.Partitions)
	vals["batch-size"] = strconv.Itoa(c.BatchSize)
	vals["ledger-writers"] = strconv.Itoa(c.LedgerWriters)
	vals["gc-percent"] = strconv.Itoa(c.GCPercent)
	vals["result-wait"] = c.ResultWait.String()
	vals["clickhouse-addr"] = c.ClickHouseAddr
	vals["clickhouse-db"] = c.ClickHouseDB
	vals["sweep-interval"] = c.SweepInterval.String()
	vals["expiry-notice-days"] = formatNoticeDays(c.NoticeDays)
	vals["log-level"] = c.LogLevel
	vals["log-format"] = c.LogFormat
	vals["soap-users"] = soap.MaskUsers(c.SOAPUsers)
	vals["secrets-key"] = maskSecretsKey(c.SecretsKey)
	if keys, _ := c.Keys(); len(keys) > 0 {
		var sources []string
		for _, src := range keys {
			sources = append(sources, src+"=***")
		}
		sort.Strings(sources)
		vals["api-keys"] = strings.Join(sources, ",")
	} else {
		vals["api-keys"] = "(development key only)"
	}
	var out []any
	for _, s := range settings {
		out = append(out, strings.ReplaceAll(s.flag, "-", "_"), vals[s.flag])
	}
	return out
}

// kvSecret finds the value of a password in a key/value connection
// string (host=... password='a b' ...), quoted or not.
var kvSecret = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)`)

// maskURL hides the password of a URL (or of each URL in a list), the
// token a NATS URL carries as its user name, and the password of a
// PostgreSQL key/value connection string.
func maskURL(raw string) string {
	if !strings.Contains(raw, "://") {
		return kvSecret.ReplaceAllString(raw, "${1}***")
	}
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "***"
			continue
		}
		if u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "***")
			} else if !strings.HasPrefix(u.Scheme, "postgres") {
				// nats://TOKEN@host: the user name is the secret.
				u.User = url.User("***")
			}
		}
		q := u.Query()
		for k := range q {
			if strings.Contains(strings.ToLower(k), "password") {
				q.Set(k, "***")
			}
		}
		u.RawQuery = q.Encode()
		parts[i] = strings.ReplaceAll(u.String(), "%2A%2A%2A", "***")
	}
	return strings.Join(parts, ",")
}

// Getenv is os.Getenv, for callers that pass the environment in.
var Getenv = os.Getenv
