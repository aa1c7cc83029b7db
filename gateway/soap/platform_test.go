package soap_test

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const (
	adminKey = "soap-test-admin-key-01"
	// The SOAP callers: billing may do everything, callcentre only reads and
	// accrues, and legacy has only a hash of its password.
	billingPass = "billing-secret-01"
	callPass    = "callcentre-secret-01"
	users       = "billing:" + billingPass + ":*," +
		"callcentre:" + callPass + ":GetBalance|GetMember|Accrue"
)

// platform is Puntos running in-process: gateway and core on a fresh
// database and an embedded NATS.
type platform struct {
	t    *testing.T
	app  *app.App
	base string
}

func testConfig(t *testing.T) *app.Config {
	return &app.Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: testenv.Database(t),
		NATSPort: -1, NATSSync: "always", DataDir: t.TempDir(), Partitions: 4, BatchSize: 64,
		ResultWait: 10 * time.Second, APIKeys: "admin=" + adminKey, SOAPUsers: users,
		LogLevel: "warn"}
}

func start(t *testing.T, cfg *app.Config, roles app.Roles) *platform {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	a, err := app.Start(context.Background(), cfg, log, roles)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return &platform{t: t, app: a, base: "http://" + a.Addr()}
}

// startPlatform starts the whole platform with the program "telco": one point
// per dollar, expiring 24 months after the month earned.
func startPlatform(t *testing.T) *platform {
	return startPlatformWith(t, testConfig(t))
}

// startPlatformWith is startPlatform on cfg, which a restart can reuse.
func startPlatformWith(t *testing.T, cfg *app.Config) *platform {
	p := start(t, cfg, app.Roles{Gateway: true, Core: true})
	req, _ := http.NewRequest("PUT", p.base+"/v1/programs/telco", strings.NewReader(
		`{"name":"Telco","currency":"USD","points_per_unit":"1","expiry_unit":"months",`+
			`"expiry_length":24,"expiry_round":"month"}`))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set("Idempotency-Key", "prog-1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 201 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("create program: %d %s", res.StatusCode, b)
	}
	return p
}

// auth says how a call authenticates.
type auth struct {
	kind     string // "basic", "text", "digest" or "" for none
	user     string
	password string
	nonce    []byte    // digest: random when nil
	created  time.Time // digest: now when zero
}

func basic(user, password string) auth {
	return auth{kind: "basic", user: user, password: password}
}

func digest(user, password string) auth {
	return auth{kind: "digest", user: user, password: password}
}

// header is the WS-Security header of a; empty for Basic and none.
func (a auth) header() string {
	switch a.kind {
	case "text":
		return fmt.Sprintf(`<wsse:Security xmlns:wsse="%s"><wsse:UsernameToken>`+
			`<wsse:Username>%s</wsse:Username><wsse:Password Type="%s#PasswordText">%s`+
			`</wsse:Password></wsse:UsernameToken></wsse:Security>`, nsWSSE, a.user, profile,
			a.password)
	case "digest":
		nonce := a.nonce
		if nonce == nil {
			nonce = make([]byte, 16)
			_, _ = rand.Read(nonce)
		}
		created := a.created
		if created.IsZero() {
			created = time.Now()
		}
		c := created.UTC().Format("2006-01-02T15:04:05.000Z")
		h := sha1.New()
		h.Write(nonce)
		h.Write([]byte(c))
		h.Write([]byte(a.password))
		return fmt.Sprintf(`<wsse:Security xmlns:wsse="%s" xmlns:wsu="%s" `+
			`soap:mustUnderstand="1"><wsse:UsernameToken><wsse:Username>%s</wsse:Username>`+
			`<wsse:Password Type="%s#PasswordDigest">%s</wsse:Password>`+
			`<wsse:Nonce EncodingType="%s#Base64Binary">%s</wsse:Nonce>`+
			`<wsu:Created>%s</wsu:Created></wsse:UsernameToken></wsse:Security>`, nsWSSE, nsWSU,
			a.user, profile, base64.StdEncoding.EncodeToString(h.Sum(nil)), soapMessageSecurity,
			base64.StdEncoding.EncodeToString(nonce), c)
	}
	return ""
}

const (
	oasis               = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-"
	nsWSSE              = oasis + "wss-wssecurity-secext-1.0.xsd"
	nsWSU               = oasis + "wss-wssecurity-utility-1.0.xsd"
	profile             = oasis + "wss-username-token-profile-1.0"
	soapMessageSecurity = oasis + "wss-soap-message-security-1.0"
)

// answer is the HTTP answer to one SOAP call.
type answer struct {
	status int
	ctype  string
	body   string
}

// call sends one operation element (with prefix p bound to our namespace on
// the Envelope, as many SOAP toolkits do) in a SOAP envelope of version ver.
func (p *platform) call(ver int, a auth, op string) answer {
	p.t.Helper()
	ns, ctype := "http://schemas.xmlsoap.org/soap/envelope/", "text/xml; charset=utf-8"
	if ver == 12 {
		ns, ctype = "http://www.w3.org/2003/05/soap-envelope", "application/soap+xml; charset=utf-8"
	}
	env := `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<soap:Envelope xmlns:soap="` + ns + `" xmlns:p="urn:puntos:soap:v1">` +
		`<soap:Header>` + a.header() + `</soap:Header><soap:Body>` + op +
		`</soap:Body></soap:Envelope>`
	return p.post(ctype, a, env)
}

func (p *platform) post(ctype string, a auth, body string) answer {
	p.t.Helper()
	req, _ := http.NewRequest("POST", p.base+"/soap", strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("SOAPAction", `"urn:puntos:soap:v1/Any"`)
	if a.kind == "basic" {
		req.SetBasicAuth(a.user, a.password)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("POST /soap: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, ctype: res.Header.Get("Content-Type"), body: string(b)}
}

// value returns the text of the first element of ours called local in the
// answer.
func (a answer) value(t *testing.T, local string) string {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(a.body))
	for {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("no <%s> in the answer: %s", local, a.body)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == local &&
			se.Name.Space == "urn:puntos:soap:v1" {
			var s string
			if err := dec.DecodeElement(&s, &se); err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(s)
		}
	}
}

// ok checks that the call succeeded.
func (a answer) ok(t *testing.T) answer {
	t.Helper()
	if a.status != 200 || strings.Contains(a.body, "Fault>") {
		t.Fatalf("status %d: %s", a.status, a.body)
	}
	return a
}

// faultCode returns the stable code of a fault answer.
func (a answer) faultCode(t *testing.T) string {
	t.Helper()
	if a.status != 500 && a.status != 400 {
		t.Fatalf("a fault came with status %d: %s", a.status, a.body)
	}
	return a.value(t, "Code")
}

var (
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	timeRE = regexp.MustCompile(`>(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z)<`)
)

// normalise replaces what changes from run to run: generated ids and the
// instants of the run itself (recording times, as-of, a redemption's time).
func normalise(body string, since time.Time) string {
	body = uuidRE.ReplaceAllString(body, "UUID")
	return timeRE.ReplaceAllStringFunc(body, func(m string) string {
		at, err := time.Parse(time.RFC3339Nano, m[1:len(m)-1])
		if err == nil && at.After(since.Add(-time.Minute)) && at.Before(time.Now().Add(time.Hour)) {
			return ">NOW<"
		}
		return m
	})
}

// golden compares an answer with testdata/name.xml (rewritten with -update)
// and validates the answer's payload against contracts/puntos.xsd.
func golden(t *testing.T, name string, a answer, since time.Time) {
	t.Helper()
	got := normalise(a.body, since)
	path := filepath.Join("testdata", name+".xml")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s: the answer differs from %s:\n--- got\n%s\n--- want\n%s", name, path,
			got, want)
	}
	validate(t, name, a.body)
}

// validate checks the payload of a SOAP answer (the Body's element, or the
// PuntosFault detail of a fault) against contracts/puntos.xsd with xmllint.
func validate(t *testing.T, name, envelope string) {
	t.Helper()
	xmllint := requireTool(t, "xmllint", "libxml2-utils")
	payload, err := payloadOf(envelope)
	if err != nil {
		t.Fatalf("%s: %v in %s", name, err, envelope)
	}
	file := filepath.Join(t.TempDir(), "payload.xml")
	if err := os.WriteFile(file, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(xmllint, "--noout", "--nonet", "--schema",
		"../../contracts/puntos.xsd", file).CombinedOutput()
	if err != nil {
		t.Errorf("%s: the answer does not validate against puntos.xsd: %v\n%s\n%s", name, err,
			out, payload)
	}
}

// payloadOf cuts the element in the Body (or, for a fault, the PuntosFault
// in its detail) out of an envelope. Our answers declare the payload's
// namespace on the payload itself, so the cut stands alone.
func payloadOf(envelope string) ([]byte, error) {
	dec := xml.NewDecoder(strings.NewReader(envelope))
	depth, at := 0, 0
	var from int64
	fault := false
	for {
		off := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("no payload: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 3 && t.Name.Local == "Fault" {
				fault = true
				continue
			}
			if at == 0 && ((!fault && depth == 3) || (fault && t.Name.Local == "PuntosFault")) {
				from, at = off, depth
			}
		case xml.EndElement:
			if at != 0 && depth == at {
				return []byte(envelope[from:dec.InputOffset()]), nil
			}
			depth--
		}
	}
}

// requireTool finds a program the tests need, or fails saying which
// package brings it.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: `apt-get install -y %s` (make test needs it)", name, pkg)
	}
	return path
}

// postings counts the ledger's postings of a transaction id.
func (p *platform) postings(txn string) int {
	p.t.Helper()
	var n int
	err := p.app.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM postings WHERE txn_id = $1`, txn).Scan(&n)
	if err != nil {
		p.t.Fatal(err)
	}
	return n
}
