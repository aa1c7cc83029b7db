package app

import (
	"testing"

	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// During a rotation of the secrets key the gateways get NEW,OLD one after
// another. A caller whose request reached a gateway still on OLD, and whose
// retry reaches one already on NEW,OLD, gets the first answer replayed,
// not a 409: the keyed digest in the command's hash is made with the
// oldest key of the ring, which both gateways hold. The same key with
// another secret is still a conflict, and the new secret is the one the
// adapter reads.
func TestRetryAcrossKeyRotationReplays(t *testing.T) {
	_, oldKey, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	_, newKey, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.SecretsKey = newKey + "," + oldKey // the core rotated first, as the README says
	core1 := startApp(t, cfg, Roles{Gateway: true, Core: true})
	natsURL := core1.nats.ClientURL()

	before := *cfg
	before.NATSURL, before.DataDir, before.SecretsKey = natsURL, t.TempDir(), oldKey
	oldGW := startApp(t, &before, Roles{Gateway: true})
	after := before
	after.DataDir, after.SecretsKey = t.TempDir(), newKey+","+oldKey
	newGW := startApp(t, &after, Roles{Gateway: true})

	o := &client{t: t, base: "http://" + oldGW.Addr(), key: testKey}
	n := &client{t: t, base: "http://" + newGW.Addr(), key: testKey}
	setupProgram(o)
	ext := map[string]any{"name": "SkyMiles", "ratio": "0.5", "flavour": "http",
		"endpoint": "https://127.0.0.1:9/api", "credentials": "tok-rotate-1"}
	const path = "/v1/programs/telco/external/skymiles"
	first := o.must(201, "PUT", path, "ext-rot-1", ext)
	again := n.must(201, "PUT", path, "ext-rot-1", ext)
	if again.header.Get("Idempotent-Replayed") != "true" ||
		!jsonEqual(again.body["data"], first.body["data"]) {
		t.Fatalf("a retry through the gateway on NEW,OLD: %s %v, want the first answer "+
			"replayed (%s)", again.raw, again.header, first.raw)
	}
	ext["credentials"] = "tok-rotate-2"
	n.must(409, "PUT", path, "ext-rot-1", ext)
	n.must(201, "PUT", path, "ext-rot-2", ext)
	cfgRead, err := core1.Ledger.PartnerConfig(t.Context(), "telco", "skymiles")
	if err != nil || cfgRead.Credentials != "tok-rotate-2" {
		t.Fatalf("partner config: %+v %v, want the credentials tok-rotate-2", cfgRead, err)
	}
}
