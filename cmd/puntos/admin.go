package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/gateway/backoffice"
	"github.com/puntos-loyalty/puntos/internal/app"
)

const adminUsage = `Usage: puntos admin create --user NAME [--role ROLE] [--password PASS] [flags]
       puntos admin unlock --user NAME [flags]

create makes a back-office user (by default an administrator). ROLE is one of
administrator, operator, analyst or auditor. The password, of at least
12 characters and at most 72 bytes (an accented letter takes two), is read
from the first line of standard input unless --password is given; prefer
standard input, as flags show up in the process list.

unlock lifts the lock that five wrong passwords put on a user for 15
minutes, as an administrator can on the users page: the way back in when
every administrator is locked out. The audit log records it as done by
"command line".

The other flags are those of 'puntos migrate' (the database to use:
PUNTOS_DATABASE_URL, which 'eval "$(deploy/local/services.sh env)"' sets as
make run does).
`

// runAdmin manages back-office users from the command line.
func runAdmin(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader,
	stdout, stderr io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" || a == "help" {
			fmt.Fprint(stdout, adminUsage)
			return nil
		}
	}
	if len(args) == 0 || (args[0] != "create" && args[0] != "unlock") {
		fmt.Fprint(stderr, adminUsage)
		return errors.New("admin: the subcommands are create and unlock")
	}
	if args[0] == "unlock" {
		return runAdminUnlock(ctx, args[1:], getenv, stdout, stderr)
	}
	args, own := splitFlag(args[1:], "user")
	args, roleArg := splitFlag(args, "role")
	args, passArg := splitFlag(args, "password")
	fs := flag.NewFlagSet("admin create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "user name")
	role := fs.String("role", string(backoffice.RoleAdministrator), "role")
	password := fs.String("password", "", "password (default: read from standard input)")
	if err := fs.Parse(append(append(own, roleArg...), passArg...)); err != nil {
		return err
	}
	if *user == "" {
		fmt.Fprint(stderr, adminUsage)
		return errors.New("admin create: --user is required")
	}
	if *password == "" {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read password: %w", err)
		}
		*password = strings.TrimRight(line, "\r\n")
	}

	pool, err := adminDatabase(ctx, args, getenv, stderr)
	if err != nil {
		return err
	}
	defer pool.Close()
	err = backoffice.CreateUser(ctx, pool, *user, backoffice.Role(*role), *password,
		"command line")
	if err != nil {
		return fmt.Errorf("admin create: %w", err)
	}
	fmt.Fprintf(stdout, "Created %s %q; sign in at /admin/\n", *role, *user)
	return nil
}

// runAdminUnlock lifts a back-office user's lockout.
func runAdminUnlock(ctx context.Context, args []string, getenv func(string) string,
	stdout, stderr io.Writer) error {
	args, own := splitFlag(args, "user")
	fs := flag.NewFlagSet("admin unlock", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "user name")
	if err := fs.Parse(own); err != nil {
		return err
	}
	if *user == "" {
		fmt.Fprint(stderr, adminUsage)
		return errors.New("admin unlock: --user is required")
	}
	pool, err := adminDatabase(ctx, args, getenv, stderr)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := backoffice.UnlockUser(ctx, pool, *user, "command line"); err != nil {
		return fmt.Errorf("admin unlock: %w", err)
	}
	fmt.Fprintf(stdout, "Unlocked %q: they may sign in again\n", *user)
	return nil
}

// adminDatabase opens the database the settings in args name, migrated, as
// the admin commands use it.
func adminDatabase(ctx context.Context, args []string, getenv func(string) string,
	stderr io.Writer) (*pgxpool.Pool, error) {
	cfg, _, err := app.LoadConfig("migrate", args, getenv, stderr)
	if err != nil {
		return nil, err
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	if err := postgres.Migrate(ctx, pool, newLogger(cfg, stderr)); err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return pool, nil
}
