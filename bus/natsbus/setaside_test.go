package natsbus

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
)

// SetAside answers true for the very request that was dead-lettered, and
// false for another request under the same transaction id (another
// amount) and for another caller's command with that id, with nothing
// waiting on the bus for any of them.
func TestSetAsideIsTheSameRequestOnly(t *testing.T) {
	t.Parallel()
	_, url := embedded(t, t.TempDir(), false)
	b := connect(t, url, namespace(t), false, func(c *Config) { c.MaxDeliver = 1 })
	sent := command("m-1", "sa-1", 5)
	publish(t, b, sent, false)
	failEverything(t, b)
	eventually(t, "sa-1 dead-lettered", func() bool { return deadTxns(t, b)["sa-1"] })

	other := command("m-1", "sa-1", 6)
	elsewhere := command("m-1", "sa-1", 5)
	elsewhere.Source = "web"
	elsewhere.Seal()
	for _, c := range []struct {
		what string
		cmd  bus.Command
		want bool
	}{{"the same request", sent, true}, {"another amount", other, false},
		{"another caller", elsewhere, false}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		aside, err := b.SetAside(ctx, c.cmd)
		cancel()
		if err != nil || aside != c.want {
			t.Errorf("SetAside of %s = %v, %v; want %v", c.what, aside, err, c.want)
		}
	}
}
