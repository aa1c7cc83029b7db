// Command floor measures the stack Puntos is built on with no Puntos logic
// on it: net/http, PostgreSQL through pgx, and JetStream on an embedded
// nats-server that syncs every write, each step adding one part of the
// path an accrual takes. Its rates are what Puntos could reach on this
// machine if its own work cost nothing, an upper bound for each target of
// issue 12 (docs/benchmarks.md, "The floor").
//
// Everything runs in this process against 127.0.0.1, each step for a
// bounded time, in a throwaway database and a temporary store that are
// removed at the end. It writes one JSON file, <stamp>-floor.json. A step
// whose committed rows differ from the requests answered as committed
// marks the run as failed (exit status 1).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/puntos-loyalty/puntos/bench/internal/rig"
)

// options are the program's flags.
type options struct {
	duration     time.Duration
	clients      int // concurrent clients of the single-event steps
	batchClients int // concurrent clients of batch-pipeline
	consumers    int // partitions of the stream, one consumer each
	members      int
	steps        []string
	out          string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{}
	var steps string
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each step")
	fs.IntVar(&o.clients, "clients", 64, "concurrent clients of the single-event steps")
	fs.IntVar(&o.batchClients, "batch-clients", 8, "concurrent clients of batch-pipeline")
	fs.IntVar(&o.consumers, "consumers", 4, "stream partitions, each with one consumer, "+
		"in the pipeline steps")
	fs.IntVar(&o.members, "members", 1000, "members the events are spread over")
	fs.StringVar(&steps, "steps", strings.Join(stepNames(), ","), "steps to run, comma "+
		"separated")
	fs.StringVar(&o.out, "out", "bench/results", "directory for the JSON results")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.duration <= 0 || o.duration > 10*time.Minute {
		return nil, errors.New("-duration must be between 1ns and 10m")
	}
	if o.clients < 1 || o.batchClients < 1 || o.consumers < 1 || o.members < 1 {
		return nil, errors.New("-clients, -batch-clients, -consumers and -members must " +
			"be positive")
	}
	for _, name := range strings.Split(steps, ",") {
		if _, ok := stepByName(name); !ok {
			return nil, fmt.Errorf("-steps: unknown step %q (known: %s)", name,
				strings.Join(stepNames(), ", "))
		}
		o.steps = append(o.steps, name)
	}
	return o, nil
}

// report is the JSON file of one run.
type report struct {
	Program   string         `json:"program"`
	StartedAt time.Time      `json:"started_at"`
	Machine   rig.Machine    `json:"machine"`
	Settings  map[string]any `json:"settings"`
	Steps     []*stepResult  `json:"steps"`
}

func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	rep := &report{Program: "bench/floor", StartedAt: time.Now().UTC(),
		Settings: map[string]any{"duration": o.duration.String(), "clients": o.clients,
			"batch_clients": o.batchClients, "batch_size": batchSize,
			"consumers": o.consumers, "fetch_max": fetchMax, "members": o.members,
			"nats_sync_always": true, "result_wait": resultWait.String()}}
	before := rig.DescribeLoad()

	f, err := start(ctx, o)
	if err != nil {
		return err
	}
	defer f.close()
	rep.Machine = rig.DescribeMachine(ctx, f.pool)
	rep.Machine.LoadBefore = before

	failed := false
	for _, name := range o.steps {
		s, _ := stepByName(name)
		res, err := f.runStep(ctx, s)
		if err != nil {
			return fmt.Errorf("step %s: %w", name, err)
		}
		rep.Steps = append(rep.Steps, res)
		fmt.Fprintln(out, res.line())
		failed = failed || !res.Check.OK
	}

	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(o.out, rep.StartedAt.Format("2006-01-02T150405Z")+"-floor.json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	fmt.Fprintln(out, "wrote", path)
	if failed {
		return errors.New("committed rows differ from committed answers: a failed run")
	}
	return nil
}
