package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/internal/app"
)

const deadUsage = `Usage: puntos deadletters list [--limit N] [flags]
       puntos deadletters redrive (SEQ... | --all) [--wait D] [flags]
       puntos deadletters discard (SEQ... | --refused) [flags]

Commands core could not apply are set aside on the dead-letter stream with
the reason: those it failed to apply PUNTOS_MAX_DELIVER times in a row (a
fault that outlasted the retries; their status URL says failed), and those
the ledger refused as they can never succeed as sent (an unknown member, an
invalid payload: the refusal is stored and is their answer; re-driving one
gives that refusal again).

  list     the dead letters, oldest first, each with its sequence (SEQ) and
           AS: failed (needs an operator) or refused (the ledger answered it)
  redrive  once the cause is mended: put each named command (or --all of
           those that failed; refused ones would only get their refusal
           again) back on the command stream, remove its dead letter, and
           wait up to --wait (default 10s) for the ledger's answer. A command
           applied meanwhile is answered as a replay: nothing is posted twice.
  discard  remove dead letters without sending them again (one that is not a
           command, or a command its caller has since replaced); a
           discarded command stays failed for its caller. --refused discards
           every refused letter, once their reasons are read

The bus is NATS_URL, or else the embedded server of 'puntos run' on
127.0.0.1:PUNTOS_NATS_PORT (default 14222). The other flags are those of
'puntos run'; nothing of the streams' settings is changed.
`

// runDeadLetters lists, re-drives and discards dead-lettered commands.
func runDeadLetters(ctx context.Context, args []string, getenv func(string) string,
	stdout, stderr io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" || a == "help" {
			fmt.Fprint(stdout, deadUsage)
			return nil
		}
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, deadUsage)
		return errors.New("deadletters: a subcommand is required: list, redrive or discard")
	}
	sub, args := args[0], args[1:]
	if sub != "list" && sub != "redrive" && sub != "discard" {
		fmt.Fprint(stderr, deadUsage)
		return fmt.Errorf("deadletters: unknown subcommand %q: list, redrive or discard", sub)
	}
	args, limitArg := splitFlag(args, "limit")
	args, waitArg := splitFlag(args, "wait")
	args, all := takeSwitch(args, "all")
	args, refused := takeSwitch(args, "refused")
	name := "deadletters " + sub
	// Each subcommand takes its own flags only.
	switch {
	case len(limitArg) > 0 && sub != "list":
		return fmt.Errorf("%s: --limit is for list", name)
	case len(waitArg) > 0 && sub != "redrive":
		return fmt.Errorf("%s: --wait is for redrive", name)
	case all && sub != "redrive":
		return fmt.Errorf("%s: --all is for redrive; name each dead letter", name)
	case refused && sub != "discard":
		return fmt.Errorf("%s: --refused is for discard", name)
	}
	for _, a := range args {
		if f := strings.TrimLeft(a, "-"); a != f && (f == "limit" || f == "wait") {
			return fmt.Errorf("%s: --%s needs a value", name, f)
		}
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	limit := fs.Int("limit", 100, "most dead letters listed")
	wait := fs.Duration("wait", 10*time.Second, "how long redrive waits for each answer")
	if err := fs.Parse(append(limitArg, waitArg...)); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	// What is left: the sequences, then the platform's flags.
	var seqs []uint64
	for sub != "list" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		n, err := strconv.ParseUint(args[0], 10, 64)
		if err != nil || n == 0 {
			return fmt.Errorf("%s: %q is not a dead letter's sequence (a positive whole "+
				"number, as list shows)", name, args[0])
		}
		seqs, args = append(seqs, n), args[1:]
	}
	switch {
	case *limit < 1:
		return fmt.Errorf("%s: --limit must be at least 1", name)
	case *wait < 0:
		return fmt.Errorf("%s: --wait must not be negative", name)
	case sub == "list" && (len(seqs) > 0 || len(args) > 0 && !strings.HasPrefix(args[0], "-")):
		return fmt.Errorf("%s takes no sequence; it lists them all", name)
	case sub != "list" && len(seqs) == 0 && !all && !refused:
		for _, a := range args {
			if _, err := strconv.ParseUint(a, 10, 64); err == nil {
				return fmt.Errorf("%s: the sequences come first: puntos %s SEQ... [flags]",
					name, name)
			}
		}
		if len(args) > 0 && strings.HasPrefix(args[0], "-") {
			if _, err := strconv.ParseInt(args[0], 10, 64); err == nil {
				return fmt.Errorf("%s: %q is not a dead letter's sequence (a positive "+
					"whole number, as list shows)", name, args[0])
			}
		}
		return fmt.Errorf("%s: name at least one dead letter's sequence (see puntos "+
			"deadletters list)", name)
	case all && len(seqs) > 0:
		return fmt.Errorf("%s: either sequences or --all, not both", name)
	case refused && len(seqs) > 0:
		return fmt.Errorf("%s: either sequences or --refused, not both", name)
	}

	cfg, fsPlatform, err := app.LoadConfig(name, args, getenv, stderr)
	if err != nil {
		return err
	}
	if fsPlatform.NArg() > 0 {
		return fmt.Errorf("%s: unexpected %q (sequences come first, before any other flag)",
			name, fsPlatform.Arg(0))
	}
	url := cfg.NATSURL
	if url == "" {
		if cfg.NATSPort <= 0 {
			return errors.New("deadletters: set NATS_URL, or PUNTOS_NATS_PORT to the port " +
				"of the embedded server")
		}
		url = "nats://127.0.0.1:" + strconv.Itoa(cfg.NATSPort)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	b, err := natsbus.Connect(cctx, natsbus.Config{URL: url, Name: "puntos-deadletters",
		Partitions: cfg.Partitions, UseStreams: true}, newLogger(cfg, io.Discard))
	cancel()
	if err != nil {
		return fmt.Errorf("deadletters: %w (is Puntos running with its bus at %s? set "+
			"NATS_URL or PUNTOS_NATS_PORT as it has them)", err, url)
	}
	defer b.Close()

	switch sub {
	case "list":
		return listDead(ctx, b, *limit, stdout)
	case "discard":
		if refused {
			dead, err := b.DeadLetters(ctx, 1<<20)
			if err != nil {
				return err
			}
			for _, dl := range dead {
				if dl.Refused {
					seqs = append(seqs, dl.Seq)
				}
			}
			if len(seqs) == 0 {
				fmt.Fprintln(stdout, "No refused dead letters.")
				return nil
			}
		}
		failed := 0
		for _, seq := range seqs {
			dl, err := b.Discard(ctx, seq)
			if err != nil {
				fmt.Fprintf(stdout, "%d: not discarded: %v\n", seq, err)
				failed++
				continue
			}
			fmt.Fprintf(stdout, "%d: discarded (%s)\n", seq, who(dl))
		}
		return failures("discarded", failed, len(seqs))
	}
	if all {
		dead, err := b.DeadLetters(ctx, 1<<20)
		if err != nil {
			return err
		}
		left := 0
		for _, dl := range dead {
			if dl.Refused {
				left++ // re-driven, it would get its refusal again, and its record go
				continue
			}
			seqs = append(seqs, dl.Seq)
		}
		if left > 0 {
			fmt.Fprintf(stdout, "%d refused dead letters left as they are: re-driving one "+
				"gives its refusal again (name it to re-drive it all the same)\n", left)
		}
		if len(seqs) == 0 {
			fmt.Fprintln(stdout, "No failed dead letters to re-drive.")
			return nil
		}
	}
	failed := 0
	for _, seq := range seqs {
		if !redrive(ctx, b, seq, *wait, stdout) {
			failed++
		}
	}
	return failures("re-driven", failed, len(seqs))
}

// redrive re-drives one dead letter and tells what became of it; it
// reports false when it could not be put back.
func redrive(ctx context.Context, b *natsbus.Bus, seq uint64, wait time.Duration,
	stdout io.Writer) bool {
	dl, err := b.ReadDeadLetter(ctx, seq)
	if err != nil {
		fmt.Fprintf(stdout, "%d: not re-driven: %v\n", seq, err)
		return false
	}
	// Listen before sending, so that a quick answer is not missed.
	var results <-chan bus.Result
	if dl.Source != "" && dl.TxnID != "" && wait > 0 {
		if ch, stop, err := b.SubscribeResult(dl.Source, dl.TxnID); err == nil {
			results = ch
			defer stop()
		}
	}
	_, again, err := b.Redrive(ctx, seq)
	if err != nil {
		fmt.Fprintf(stdout, "%d: not re-driven: %v\n", seq, err)
		return false
	}
	if again {
		// An earlier re-drive stored it and stopped before removing the
		// letter: its answer, if any, came then.
		fmt.Fprintf(stdout, "%d: re-driven earlier; its status: GET /v1/commands/%s\n", seq,
			dl.TxnID)
		return true
	}
	if results == nil {
		fmt.Fprintf(stdout, "%d: re-driven (%s)\n", seq, who(dl))
		return true
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case r := <-results:
		fmt.Fprintf(stdout, "%d: re-driven (%s): %s\n", seq, who(dl), answer(r))
	case <-timer.C:
		fmt.Fprintf(stdout, "%d: re-driven (%s): no answer within %s: core may be stopped, "+
			"busy, or failing it again (it is then set aside again: see list). Its status: "+
			"GET /v1/commands/%s\n", seq, who(dl), wait, dl.TxnID)
	case <-ctx.Done():
		fmt.Fprintf(stdout, "%d: re-driven (%s); stopped before its answer\n", seq, who(dl))
	}
	return true
}

// answer says what the ledger answered a re-driven command.
func answer(r bus.Result) string {
	s := r.Status
	switch {
	case r.Replayed && r.Status == bus.StatusRejected:
		s += ", as before: the ledger had refused it already; nothing changed"
	case r.Replayed:
		s += ", a replay: it had been applied already, nothing posted again"
	}
	if r.Error != nil {
		s += " (" + r.Error.Kind
		if r.Error.Field != "" {
			s += ", " + r.Error.Field
		}
		s += ": " + r.Error.Message + ")"
	}
	return s
}

// who names a dead letter's command.
func who(dl natsbus.DeadLetter) string {
	if dl.Source == "" && dl.TxnID == "" {
		return "not a command"
	}
	return "source " + dl.Source + ", txn " + dl.TxnID
}

func listDead(ctx context.Context, b *natsbus.Bus, limit int, stdout io.Writer) error {
	dead, err := b.DeadLetters(ctx, limit+1)
	if err != nil {
		return err
	}
	if len(dead) == 0 {
		fmt.Fprintln(stdout, "No dead letters.")
		return nil
	}
	more := len(dead) > limit
	if more {
		dead = dead[:limit]
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSET ASIDE (UTC)\tPARTITION\tDELIVERIES\tAS\tPROGRAM\tMEMBER\t"+
		"SOURCE\tTXN\tKIND\tREASON")
	for _, dl := range dead {
		kind := dl.Command.Kind
		if kind == "" {
			kind = "-"
		}
		// As puntos_dead_letters_waiting's kind: failed needs an operator,
		// refused was answered by the ledger with its stored refusal.
		as := "failed"
		if dl.Refused {
			as = "refused"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dl.Seq,
			dl.Time.UTC().Format(time.RFC3339), dl.Partition, dl.Deliveries, as,
			dash(oneLine(dl.Command.Program, 40)), dash(oneLine(dl.Command.Member, 40)),
			dash(dl.Source), dash(dl.TxnID), kind, oneLine(dl.Reason, 120))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if more {
		fmt.Fprintf(stdout, "(the first %d; --limit shows more)\n", limit)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine shortens s to at most n runes on one line.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// failures is the command's error when some of n dead letters failed.
func failures(done string, failed, n int) error {
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("deadletters: %d of %d not %s", failed, n, done)
}

// takeSwitch takes the boolean flag name (-name, --name, --name=true or
// false) out of args.
func takeSwitch(args []string, name string) (rest []string, on bool) {
	for _, a := range args {
		switch strings.TrimLeft(a, "-") {
		case name, name + "=true":
			if strings.HasPrefix(a, "-") {
				on = true
				continue
			}
		case name + "=false":
			if strings.HasPrefix(a, "-") {
				on = false
				continue
			}
		}
		rest = append(rest, a)
	}
	return rest, on
}
