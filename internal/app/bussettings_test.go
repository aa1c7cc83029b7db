package app

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestBusRetentionSettings reads the retry budget and the events' retention
// from their defaults, the environment and flags, and refuses values that
// would lose events or never try a command.
func TestBusRetentionSettings(t *testing.T) {
	c, _, err := LoadConfig("run", nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxDeliver != 10 || c.EventsMaxAge != 30*24*time.Hour {
		t.Fatalf("defaults: max deliver %d, events max age %s; want 10 and 720h",
			c.MaxDeliver, c.EventsMaxAge)
	}
	c, _, err = LoadConfig("run", []string{"--max-deliver=4"},
		env(map[string]string{"PUNTOS_EVENTS_MAX_AGE": "2160h", "PUNTOS_MAX_DELIVER": "7"}),
		&bytes.Buffer{})
	if err != nil || c.MaxDeliver != 4 || c.EventsMaxAge != 90*24*time.Hour {
		t.Fatalf("flag and environment: %+v %v; want max deliver 4 and 2160h", c, err)
	}
	for _, args := range []string{"--max-deliver=0", "--events-max-age=1h",
		"--events-max-age=forever"} {
		name := strings.TrimPrefix(strings.SplitN(args, "=", 2)[0], "--")
		_, _, err := LoadConfig("run", []string{args}, env(nil), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v, want one naming %s", args, err, name)
		}
	}
}
