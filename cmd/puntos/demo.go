package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"

	"github.com/puntos-loyalty/puntos/internal/demo"
)

// runDemo loads the telecom sample into a running Puntos through its REST
// gateway. It sends requests to --url only, and refuses any host but the
// loopback unless --allow-remote is given: the demo writes about 230,000
// ledger entries.
func runDemo(ctx context.Context, args []string, getenv func(string) string, stdout,
	stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "", "the gateway's base URL; default $PUNTOS_DEMO_URL, else "+
		"http://127.0.0.1:8080")
	key := fs.String("key", "", "API key; default $PUNTOS_DEMO_KEY, else the development key")
	program := fs.String("program", "telco", "code of the program to create and load")
	workers := fs.Int("workers", 16, "subscribers loaded at once")
	asOf := fs.String("as-of", demo.DefaultAsOf, "date whose month holds the latest bills; "+
		"keep it fixed so that re-runs send identical requests")
	remote := fs.Bool("allow-remote", false, "allow a --url whose host is not a loopback address")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: puntos demo [flags]")
		fmt.Fprintln(stderr, "\nEnrolls the 7,043 subscribers of IBM's telecom sample and posts "+
			"their monthly bills\nthrough the REST gateway. A second run adds nothing.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo: unexpected argument %q", fs.Arg(0))
	}

	// Defaults from the environment, read after parsing so that --help
	// never prints them.
	if *base == "" {
		*base = cmp.Or(getenv("PUNTOS_DEMO_URL"), "http://127.0.0.1:8080")
	}
	if *key == "" {
		*key = cmp.Or(getenv("PUNTOS_DEMO_KEY"), "puntos-dev-key")
	}

	// Check the flags before sending anything.
	if err := checkDemoURL(*base, *remote); err != nil {
		return err
	}
	if *workers < 1 || *workers > 256 {
		return fmt.Errorf("--workers: must be from 1 to 256, got %d", *workers)
	}
	at, err := demo.ParseAsOf(*asOf)
	if err != nil {
		return fmt.Errorf("--as-of: %w", err)
	}

	sum, err := demo.Run(ctx, demo.Options{BaseURL: *base, APIKey: *key, Program: *program,
		Workers: *workers, AsOf: at, Out: stdout})
	if errors.Is(err, context.Canceled) {
		return errors.New("demo: interrupted; what was applied is kept: run it again to " +
			"send the rest")
	}
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if n := sum.FailedTotal(); n > 0 {
		return fmt.Errorf("demo: %d writes got no answer; run it again to retry them", n)
	}
	return nil
}

// checkDemoURL accepts an http(s) URL on a loopback address, or any host
// when remote is set.
func checkDemoURL(raw string, remote bool) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url: %q is not an http(s) URL", raw)
	}
	if remote {
		return nil
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("--url: %s is not a loopback address; pass --allow-remote to load "+
		"the demo into it", host)
}
