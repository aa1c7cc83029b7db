package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

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

	// The audit log says the command line made it.
	var actor, after string
	err = conn.QueryRow(ctx, `SELECT actor, after::text FROM bo_audit
		WHERE action = 'user.created' AND target = 'root'`).Scan(&actor, &after)
	if err != nil || actor != "command line" || !strings.Contains(after, `"administrator"`) {
		t.Fatalf("audit of the creation: %q %s (%v); want the command line creating an "+
			"administrator", actor, after, err)
	}

	// The same name twice is refused, in another case too (ROOT beside
	// root would be two people to the eye); so is a short password.
	for _, name := range []string{"root", "ROOT", "Root"} {
		err = runAdmin(ctx, append([]string{"create", "--user", name}, db...), env,
			strings.NewReader("a-long-enough-password\n"), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), `a user named "root" exists`) {
			t.Fatalf("create %s beside root: %v, want a conflict naming root", name, err)
		}
	}
	err = runAdmin(ctx, append([]string{"create", "--user", "ana", "--role", "analyst"},
		db...), env,
		strings.NewReader("short\n"), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "password") {
		t.Fatalf("short password: %v, want an error naming the password", err)
	}
}

// When every administrator is locked out, the command line lets one back
// in, and the audit log says who did it.
func TestAdminUnlock(t *testing.T) {
	ctx := context.Background()
	url := testenv.Database(t)
	env := func(string) string { return "" }
	db := []string{"--database-url", url}
	var out, errOut bytes.Buffer
	if err := runAdmin(ctx, append([]string{"create", "--user", "root"}, db...), env,
		strings.NewReader("a-long-enough-password\n"), &out, &errOut); err != nil {
		t.Fatalf("admin create: %v\n%s", err, errOut.String())
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE bo_users SET failed_count = 3,
		locked_until = now() + interval '15 minutes' WHERE name = 'root'`); err != nil {
		t.Fatal(err)
	}
	if err := runAdmin(ctx, append([]string{"unlock", "--user", "root"}, db...), env, nil,
		&out, &errOut); err != nil {
		t.Fatalf("admin unlock: %v\n%s", err, errOut.String())
	}
	var failed int
	var locked *time.Time
	var actor, before string
	err = conn.QueryRow(ctx, `SELECT u.failed_count, u.locked_until, a.actor, a.before::text
		FROM bo_users u JOIN bo_audit a ON a.target = u.name AND a.action = 'user.unlocked'
		WHERE u.name = 'root'`).Scan(&failed, &locked, &actor, &before)
	if err != nil || failed != 0 || locked != nil || actor != "command line" ||
		before != `{"locked": true, "failed_sign_ins": 3}` {
		t.Fatalf("after unlock: %d failures, locked until %v, audit actor %q before %s (%v); "+
			"want 0, none, \"command line\", locked with 3 failures", failed, locked, actor,
			before, err)
	}
	// Unlocking again says there was no lock to lift.
	if err := runAdmin(ctx, append([]string{"unlock", "--user", "root"}, db...), env, nil,
		&out, &errOut); err != nil {
		t.Fatalf("second unlock: %v", err)
	}
	err = conn.QueryRow(ctx, `SELECT before::text FROM bo_audit WHERE action = 'user.unlocked'
		ORDER BY id DESC LIMIT 1`).Scan(&before)
	if err != nil || before != `{"locked": false, "failed_sign_ins": 0}` {
		t.Fatalf("audit of an unlock of an unlocked user: %s (%v)", before, err)
	}
	err = runAdmin(ctx, append([]string{"unlock", "--user", "nobody"}, db...), env, nil,
		&out, &errOut)
	if err == nil || !strings.Contains(err.Error(), `no user named "nobody"`) {
		t.Fatalf("unlock of an unknown user: %v; want it named as unknown", err)
	}
}
