package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// `puntos admin create --help` must state the rule the command applies: at
// least 12 characters, at most 72 bytes. It said "12 to 72 bytes" after the
// rule changed, so an operator reading it would type six accented letters
// (12 bytes) and be refused with "must be at least 12 characters".
func TestReview4AdminUsageStatesTheLengthRule(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := runAdmin(context.Background(), []string{"--help"}, func(string) string { return "" },
		strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	if strings.Contains(help, "12 to 72 bytes") || !strings.Contains(help, "12 characters") {
		t.Errorf("admin usage says %q about the password; want \"at least 12 characters, "+
			"at most 72 bytes\"", firstLineWith(help, "72"))
	}
}

// The command line takes the back office's rule (pinned, passes): a
// 12-byte password of six accented letters is refused, a 12-character one
// of 15 bytes is taken.
func TestReview4AdminCreateCountsCharacters(t *testing.T) {
	ctx := context.Background()
	db := []string{"--database-url", testenv.Database(t)}
	env := func(string) string { return "" }
	var out, errOut bytes.Buffer
	err := runAdmin(ctx, append([]string{"create", "--user", "acc"}, db...), env,
		strings.NewReader("ñáéíóú\n"), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "at least 12 characters") {
		t.Errorf("6 accented letters (12 bytes): %v, want refused as under 12 characters", err)
	}
	err = runAdmin(ctx, append([]string{"create", "--user", "acc"}, db...), env,
		strings.NewReader("ñandú-ñandú!\r\n"), &out, &errOut)
	if err != nil {
		t.Errorf("12 characters in 15 bytes: %v, want the user created", err)
	}
}

func firstLineWith(s, word string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			return l
		}
	}
	return ""
}
