package backoffice

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// commandStream reads every command on the rig's command stream.
func (rg *rig) commandStream() []bus.Command {
	t := rg.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := nats.Connect(rg.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, bus.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []bus.Command
	for seq := info.State.FirstSeq; seq != 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if strings.Contains(string(m.Data), "s3cret-seal9") {
			t.Fatalf("a command on the stream holds the secret in clear: %s", m.Data)
		}
		var c bus.Command
		if err := json.Unmarshal(m.Data, &c); err != nil {
			t.Fatalf("not a command on the stream: %v", err)
		}
		out = append(out, c)
	}
	return out
}

// TestBackOfficeSealsCredentials: a secret typed into the back office's
// external program form goes on the bus sealed, reaches the adapter as
// typed, and with no key is refused before anything is published.
func TestBackOfficeSealsCredentials(t *testing.T) {
	t.Parallel()
	rg, b, token := adminOnTelco(t)
	l := rg.ledger()

	form := latamForm(token, "s3cret-seal9")
	res, body := b.post("/admin/external/telco", form)
	mustStatus(t, "external", res, body, http.StatusSeeOther)
	var ups []bus.Command
	for _, c := range rg.commandStream() {
		if c.Kind == core.KindExternalUpsert {
			ups = append(ups, c)
		}
	}
	if len(ups) != 1 || !strings.Contains(string(ups[0].Payload), `"credentials":"enc:v1:`) {
		t.Fatalf("external.upsert commands on the stream: %+v, want one, sealed", ups)
	}
	cfg, err := l.PartnerConfig(context.Background(), "telco", "latam")
	if err != nil || cfg.Credentials != "s3cret-seal9" {
		t.Fatalf("partner config: %+v %v, want the secret as typed", cfg, err)
	}

	// Without a key: refused, naming the setting; nothing published.
	keys := l.Secrets
	l.Secrets = nil
	before := len(rg.commandStream())
	form.Set("code", "skymiles")
	res, body = b.post("/admin/external/telco", form)
	l.Secrets = keys
	mustStatus(t, "external without a key", res, body, http.StatusServiceUnavailable)
	if !strings.Contains(body, "PUNTOS_SECRETS_KEY") || strings.Contains(body, "s3cret-seal9") {
		t.Fatalf("page without a key: %s, want the setting named", problemText(body))
	}
	if after := len(rg.commandStream()); after != before {
		t.Fatalf("%d commands published without a key", after-before)
	}
}
