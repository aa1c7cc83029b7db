package rig

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

// AdminURL is the PostgreSQL URL throwaway databases are created through:
// PUNTOS_TEST_DATABASE_URL, or the local server's postgres database.
func AdminURL() string {
	if u := os.Getenv("PUNTOS_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// FreshDatabase creates an empty database whose name starts with prefix
// and returns its URL and a function that drops it.
func FreshDatabase(ctx context.Context, prefix string) (string, func(), error) {
	admin := AdminURL()
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		return "", nil, fmt.Errorf("PUNTOS_TEST_DATABASE_URL: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", nil, fmt.Errorf("PostgreSQL is not reachable (run `make services`): %w", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("%s_%d_%06d", prefix, time.Now().Unix()%1e8, rand.IntN(1e6))
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
	u, err := url.Parse(admin)
	if err != nil {
		drop()
		return "", nil, fmt.Errorf("PUNTOS_TEST_DATABASE_URL must be a URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}
