// Command puntos runs the Puntos loyalty-points platform: everything in one
// process (run), or one part of it (gateway, core, adapters) for scale-out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/app"
)

// version is set at build time with -ldflags "-X main.version=..."; a
// plain go build in a checkout names its commit instead (see init).
var version = "dev"

func init() {
	if version != "dev" {
		return
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+modified"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		version = "dev-" + rev + modified
	}
}

const usage = `Usage: puntos <command> [flags]

Commands:
  run        run everything in one process (embedded NATS unless NATS_URL is set)
  gateway    run the gateway alone (REST API, health, metrics)
  core       run the core alone (command consumers, outbox relay, expiry sweep)
  adapters   run the adapters alone
  migrate    apply the database migrations and exit
  expire     run the expiry sweep once: puntos expire [--at RFC3339]
  check      verify the ledger: every balance equals the sum of its postings
             and of its lots, and no row refers to one that is missing;
             exits 1 naming each breach
  reconcile  compare the reports' copy of a program's postings with the
             ledger over a period; exits 1 naming each difference
  demo       load the telecom sample through the REST gateway
  admin      back-office users: puntos admin create|unlock --user NAME
  deadletters  commands set aside after failing every delivery: list,
             redrive once the cause is mended, discard
  version    print the version

Run 'puntos <command> --help' for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "puntos:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout,
	stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("a command is required")
	}
	name, rest := args[0], args[1:]
	switch name {
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "puntos", version)
		return nil
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
	case "demo":
		return runDemo(ctx, rest, getenv, stdout, stderr)
	case "admin":
		return runAdmin(ctx, rest, getenv, os.Stdin, stdout, stderr)
	case "deadletters":
		return runDeadLetters(ctx, rest, getenv, stdout, stderr)
	case "reconcile":
		return runReconcile(ctx, rest, getenv, stdout, stderr)
	}
	var expireArgs []string
	if name == "expire" {
		rest, expireArgs = splitFlag(rest, "at")
		if slices.ContainsFunc(rest, func(a string) bool {
			return a == "-h" || a == "-help" || a == "--help"
		}) {
			// The settings' help below does not know expire's own flag.
			fmt.Fprintln(stderr, "puntos expire runs the expiry sweep once. Its own flag:\n"+
				"  -at string\n"+
				"    \tthe instant to expire as of (RFC 3339, not in the future); default now\n"+
				"and the settings below.")
		}
	}
	cfg, _, err := app.LoadConfig(name, rest, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	switch name {
	case "run":
		return serve(ctx, cfg, log, app.Roles{Gateway: true, Core: true, Adapters: true}, stdout)
	case "gateway":
		return serve(ctx, cfg, log, app.Roles{Gateway: true}, stdout)
	case "core":
		return serve(ctx, cfg, log, app.Roles{Core: true}, stdout)
	case "adapters":
		return serve(ctx, cfg, log, app.Roles{Adapters: true}, stdout)
	case "migrate":
		pool, err := postgres.Open(ctx, cfg.DatabaseURL)
		if err != nil {
			return err
		}
		defer pool.Close()
		if err := postgres.Migrate(ctx, pool, log); err != nil {
			return err
		}
		var newest string
		if err := pool.QueryRow(ctx, `SELECT max(name) FROM schema_migrations`).
			Scan(&newest); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "database up to date: its newest migration is %s\n", newest)
		return nil
	case "expire":
		return expire(ctx, cfg, expireArgs, log, stdout)
	case "check":
		return check(ctx, cfg, log, stdout)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", name)
}

func newLogger(cfg *app.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func serve(ctx context.Context, cfg *app.Config, log *slog.Logger, roles app.Roles,
	stdout io.Writer) error {
	log.Info("Starting Puntos", append([]any{"version", version, "gateway", roles.Gateway,
		"core", roles.Core, "adapters", roles.Adapters}, cfg.Masked()...)...)
	cfg.Version = version
	a, err := app.Start(ctx, cfg, log, roles)
	if err != nil {
		return err
	}
	base := "http://" + a.Addr()
	if roles.Gateway {
		fmt.Fprintf(stdout, "Puntos is running.\n  API      %s/v1\n  Health   %s/healthz  "+
			"%s/readyz\n  Metrics  %s/metrics\n  Admin    %s/admin/ (the back office; its "+
			"first user: puntos admin create)\n", base, base, base, base, base)
		if keys, _ := cfg.Keys(); len(keys) == 0 {
			fmt.Fprintf(stdout, "  API key  %s (development only; set PUNTOS_API_KEYS)\n",
				app.DevKey)
		}
		fmt.Fprintln(stdout, "Press Ctrl-C to stop.")
	} else {
		fmt.Fprintf(stdout, "Puntos is running. Health %s/healthz, metrics %s/metrics\n",
			base, base)
	}
	<-ctx.Done()
	log.Info("Stopping: finishing in-flight requests and batches")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = a.Shutdown(sctx)
	log.Info("Stopped")
	return err
}

// check runs the ledger's own check over the whole database and prints
// what it read and each breach it found. It changes nothing, so it may run
// beside a live platform (it reads whole tables: run it off-peak on a
// large one).
func check(ctx context.Context, cfg *app.Config, log *slog.Logger, stdout io.Writer) error {
	pool, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := postgres.CheckSchema(ctx, pool); err != nil {
		return err
	}
	var members, postings, lots int64
	err = pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM members),
		(SELECT count(*) FROM postings), (SELECT count(*) FROM lots)`).Scan(&members,
		&postings, &lots)
	if err != nil {
		return fmt.Errorf("count the ledger (is it migrated? puntos migrate): %w", err)
	}
	breaches, err := postgres.New(pool, log).Check(ctx)
	if err != nil {
		return err
	}
	for _, b := range breaches {
		who := b.Member
		if b.Program != "" {
			who = b.Program + "/" + b.Member
		}
		fmt.Fprintf(stdout, "BREACH %s: %s\n", who, b.What)
	}
	switch n := len(breaches); {
	case n == 1:
		return errors.New("the ledger check found 1 breach")
	case n > 1:
		return fmt.Errorf("the ledger check found %d breaches (at most 100 of each kind "+
			"are listed)", n)
	}
	fmt.Fprintf(stdout, "ledger check OK: %d members, %d postings, %d lots; every balance "+
		"equals its postings and its lots\n", members, postings, lots)
	return nil
}

func expire(ctx context.Context, cfg *app.Config, args []string, log *slog.Logger,
	stdout io.Writer) error {
	fs := flag.NewFlagSet("expire", flag.ContinueOnError)
	at := fs.String("at", "", "the instant to expire as of (RFC 3339); default now")
	if err := fs.Parse(args); err != nil {
		return err
	}
	when := time.Now()
	if *at != "" {
		t, err := time.Parse(time.RFC3339, strings.TrimSpace(*at))
		if err != nil {
			return fmt.Errorf("--at: %q is not an RFC 3339 timestamp", *at)
		}
		when = t
	}
	// Expiring as of a future instant would take points that are still good
	// and stamp the postings with a time that has not come: not even a
	// minute ahead (that much used to pass, and expired points 60 s early).
	if when.After(time.Now()) {
		return fmt.Errorf("--at: %s is in the future; expiry runs as of now or a past "+
			"instant", when.UTC().Format(time.RFC3339))
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool, log); err != nil {
		return err
	}
	res, ran, err := postgres.New(pool, log).Sweep(ctx, when, 500)
	if err != nil {
		return err
	}
	if !ran {
		fmt.Fprintln(stdout, "Another sweep is running; nothing done.")
		return nil
	}
	fmt.Fprintf(stdout, "Swept %d members in %d batches as of %s.\n", res.Members, res.Batches,
		when.UTC().Format(time.RFC3339))
	return nil
}

// splitFlag takes the flag name (as -name v, --name v or --name=v) out of
// args, returning the other args and the flag's own.
func splitFlag(args []string, name string) (rest, own []string) {
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		switch {
		case a == name && i+1 < len(args) && strings.HasPrefix(args[i], "-"):
			own = append(own, "--"+name, args[i+1])
			i++
		case strings.HasPrefix(a, name+"=") && strings.HasPrefix(args[i], "-"):
			own = append(own, "--"+a)
		default:
			rest = append(rest, args[i])
		}
	}
	return rest, own
}
