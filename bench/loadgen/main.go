// Command loadgen measures Puntos the way an operator sizes a deployment:
// accruals through REST, one event per request, balance reads while
// accruals run, accruals through REST in batches, and accruals through
// SOAP, one event per request. It starts the whole platform in this process on a fresh
// PostgreSQL database (or aims at a running gateway on 127.0.0.1), runs
// each scenario for a bounded time, checks the ledger at the end, and writes
// one JSON file per scenario under bench/results/.
//
// A run whose ledger does not add up (a point lost or counted twice) fails
// with exit status 1, however fast it was.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"time"
)

// options are the load generator's flags.
type options struct {
	url         string // a running gateway; empty starts the platform in-process
	key         string // API key for url
	databaseURL string // the ledger behind url, for the final check
	duration    time.Duration
	clients     int
	members     int
	readRate    int
	readers     int
	readLots    bool // scenario b reads the lots too (?lots=true)
	tiers       bool // the program has tier levels, so every accrual reviews the tier
	accrualRate int  // accruals/s during the read scenario; 0 is half of scenario a
	scenarios   string
	out         string
	profile     bool

	batchSize    int // events per request in scenario c
	batchClients int // concurrent clients in scenario c
	batchWide    int // concurrent clients in scenario batch-wide
	soapClients  int // concurrent clients in scenario d
	wideClients  int // concurrent clients in scenario soap-wide
	soapUser     string
	soapPassword string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.url, "url", "", "base URL of a running gateway on 127.0.0.1; "+
		"empty starts the platform in this process")
	fs.StringVar(&o.key, "key", "", "API key for -url")
	fs.StringVar(&o.databaseURL, "database-url", "", "ledger database of -url, for the "+
		"final check (required with -url)")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "length of each scenario")
	fs.IntVar(&o.clients, "clients", 64, "concurrent clients sending accruals in scenario a")
	fs.IntVar(&o.members, "members", 100000, "members enrolled and spread over: an "+
		"operator's billing run touches as many members as it has events (runs before "+
		"5 December 2026, 16:00 UTC spread over 1000, which flatters the batches)")
	fs.IntVar(&o.readRate, "read-rate", 5000, "target balance reads per second (scenario b)")
	fs.IntVar(&o.readers, "readers", 32, "concurrent readers in scenario b")
	fs.BoolVar(&o.readLots, "read-lots", false, "scenario b reads each member's lots with "+
		"its balance (?lots=true), as the back office does; else the figures and expiries")
	fs.BoolVar(&o.tiers, "tiers", false, "give the program three tier levels (multiplier 1, "+
		"reached at 0, 30 and 100 points in 365 days), so that every accrual reads the "+
		"member's qualification and members move up during the run")
	fs.IntVar(&o.accrualRate, "accrual-rate", 0, "accruals per second during scenario b; "+
		"0 is half the throughput measured in scenario a (100 when a did not run)")
	fs.StringVar(&o.scenarios, "scenarios",
		"accrual,balance,batch,batch-wide,soap,soap-wide,bus",
		"scenarios to run, comma separated: accrual (a), balance (b), batch (c), "+
			"batch-wide (c with -batch-wide-clients), soap (d), soap-wide (d with "+
			"-soap-wide-clients), bus (e: batches published straight onto the bus, "+
			"in-process runs only)")
	fs.IntVar(&o.batchSize, "batch-size", 500, "accrual events per request in scenario c, "+
		"per publish in e (1 to 500)")
	fs.IntVar(&o.batchClients, "batch-clients", 8, "concurrent clients sending batches in "+
		"scenarios c and e")
	fs.IntVar(&o.batchWide, "batch-wide-clients", 32, "concurrent clients sending batches "+
		"in scenario batch-wide: billing runs sent over many connections at once")
	fs.IntVar(&o.soapClients, "soap-clients", 64, "concurrent clients sending SOAP "+
		"accruals in scenario d")
	fs.IntVar(&o.wideClients, "soap-wide-clients", 256, "concurrent clients sending SOAP "+
		"accruals in scenario soap-wide: a legacy system calling over many connections")
	fs.StringVar(&o.soapUser, "soap-user", "", "SOAP user with the Accrue operation, for "+
		"-url (an in-process run makes its own)")
	fs.StringVar(&o.soapPassword, "soap-password", "", "password of -soap-user")
	fs.StringVar(&o.out, "out", "bench/results", "directory for the JSON results")
	fs.BoolVar(&o.profile, "profile", true, "write a CPU profile of scenario a "+
		"(in-process runs only)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.duration <= 0 || o.duration > 10*time.Minute {
		return nil, errors.New("-duration must be between 1ns and 10m")
	}
	if o.clients < 1 || o.readers < 1 || o.members < 1 || o.readRate < 1 ||
		o.batchClients < 1 || o.batchWide < 1 || o.soapClients < 1 || o.wideClients < 1 {
		return nil, errors.New("-clients, -readers, -members, -read-rate, -batch-clients, " +
			"-batch-wide-clients, -soap-clients and -soap-wide-clients must be positive")
	}
	if o.batchSize < 1 || o.batchSize > 500 {
		return nil, errors.New("-batch-size must be between 1 and 500")
	}
	if o.url != "" {
		if err := loopbackOnly(o.url); err != nil {
			return nil, err
		}
		if o.databaseURL == "" {
			return nil, errors.New("-database-url is required with -url: " +
				"a run is not finished before its ledger is checked")
		}
	}
	return o, nil
}

// loopbackOnly refuses a target that is not on this machine.
func loopbackOnly(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	ip := net.ParseIP(u.Hostname())
	if u.Scheme != "http" || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-url: %q must be http://127.0.0.1:PORT (load goes to this "+
			"machine only)", raw)
	}
	return nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	stamp := time.Now().UTC().Format("2006-01-02T150405Z")
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}

	before := describeLoad()
	target, err := openTarget(ctx, o, log)
	if err != nil {
		return err
	}
	defer target.close()
	mach := describeMachine(ctx, target.ledger)
	mach.LoadBefore = before

	// Every scenario posts into the same program and members.
	program := "bench_" + randomHex(4)
	c := newClient(target.base, target.key,
		o.clients+o.readers+max(o.batchClients, o.batchWide)+max(o.soapClients, o.wideClients)+8)
	acct := &accounting{}
	run := &runner{o: o, c: c, program: program, acct: acct, target: target, stamp: stamp,
		machine: mach, out: out}
	if err := setup(ctx, c, program, o.members, o.tiers, run.enrolled); err != nil {
		return fmt.Errorf("setup: %w", err)
	}

	failed := false
	for _, name := range splitList(o.scenarios) {
		res, err := run.scenario(ctx, name)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", name, err)
		}
		if res == nil {
			continue
		}
		if !res.Check.OK {
			failed = true
		}
	}
	if failed {
		return errors.New("the ledger does not add up: this run is a failed run")
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func splitList(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}
