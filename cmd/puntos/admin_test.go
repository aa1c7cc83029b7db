package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/internal/testenv"
)

func TestAdminCreate(t *testing.T) {
	ctx := context.Background()
	url := testenv.Database(t)
	env := func(string) string { return "" }
	db := []string{"--database-url", url} // never the default database
	var out, errOut bytes.Buffer
	err := runAdmin(ctx, append([]string{"create", "--user", "root"}, db...), env,
		strings.NewReader("a-long-enough-password\n"), &out, &errOut)
	if err != nil {
		t.Fatalf("admin create: %v\n%s", err, errOut.String())
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var role, hash string
	err = conn.QueryRow(ctx, `SELECT role, password_hash FROM bo_users WHERE name = 'root'`).
		Scan(&role, &hash)
	if err != nil || role != "administrator" || !strings.HasPrefix(hash, "$2a$12$") {
		t.Fatalf("stored user: role %q, hash prefix %.7q, err %v; want an administrator "+
			"with a bcrypt cost-12 hash", role, hash, err)
	}

	// The same name twice is refused; so is a short password.
	err = runAdmin(ctx, append([]string{"create", "--user", "root"}, db...), env,
		strings.NewReader("a-long-enough-password\n"), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second create: %v, want a conflict", err)
	}
	err = runAdmin(ctx, append([]string{"create", "--user", "ana", "--role", "analyst"},
		db...), env,
		strings.NewReader("short\n"), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "password") {
		t.Fatalf("short password: %v, want an error naming the password", err)
	}
}
