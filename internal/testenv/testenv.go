// Package testenv gives tests the real services they need: a fresh
// PostgreSQL database each, dropped at the end of the test.
package testenv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// AdminURL is the PostgreSQL URL tests create their databases through.
func AdminURL() string {
	if u := os.Getenv("PUNTOS_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Database creates an empty database for the test and returns its URL. The
// database is dropped when the test ends.
func Database(t testing.TB) string {
	t.Helper()
	u, drop, err := NewDatabase(context.Background(), "puntos_t")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	return u
}

// NewDatabase creates an empty database whose name starts with prefix and
// returns its URL and a function that drops it; the benchmark programs use
// it outside tests.
func NewDatabase(ctx context.Context, prefix string) (string, func(), error) {
	admin := AdminURL()
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		return "", nil, fmt.Errorf("PUNTOS_TEST_DATABASE_URL: %w", err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", nil, fmt.Errorf("PUNTOS_TEST_DATABASE_URL must be a URL: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", nil, fmt.Errorf("PostgreSQL is not reachable (run `make services`): %w", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("%s_%d_%06d", prefix, time.Now().UnixNano()%1e9, rand.IntN(1e6))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	drop := func() {
		c, err := pgx.ConnectConfig(context.Background(), cfg)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}
