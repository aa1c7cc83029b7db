// Package soap is the SOAP face of the gateway, for the operator's legacy
// systems. It serves contracts/puntos.wsdl (document/literal, SOAP 1.1 and
// 1.2) at /soap, authenticates callers with a WS-Security UsernameToken or
// HTTP Basic, turns each operation into the same bus command the REST face
// builds, and answers with the ledger's result or a SOAP fault. The message
// types are generated from the WSDL into gen/ (`make soap-gen`).
package soap

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/contracts"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// Publisher puts commands on the bus and lets the gateway wait for results.
// *natsbus.Bus satisfies it.
type Publisher interface {
	PublishCommand(ctx context.Context, cmd bus.Command) (duplicate bool, err error)
	SubscribeResult(source, txn string) (<-chan bus.Result, func(), error)
}

// Reader answers the read operations and the results of retried writes.
// *postgres.Ledger satisfies it.
type Reader interface {
	Member(ctx context.Context, program, ref string) (*core.Member, error)
	Balance(ctx context.Context, program, ref string) (*postgres.BalanceView, error)
	Statement(ctx context.Context, program, ref, cursor string,
		limit int) (*postgres.StatementPage, error)
	CommandResult(ctx context.Context, source, txn string) (*bus.Result, error)
	ResultOf(ctx context.Context, cmd bus.Command) (*bus.Result, error)
}

// Options configures a Server.
type Options struct {
	// Wait bounds how long a write waits for the ledger's result.
	Wait time.Duration
	// Users are the credentials, as ParseUsers reads them (PUNTOS_SOAP_USERS).
	Users string
	// Window is how far a PasswordDigest's Created time may be from the
	// server's clock, either way; 5 minutes when zero.
	Window time.Duration
	// Limits bounds request envelopes; DefaultLimits fills zero fields.
	Limits Limits
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Server serves the SOAP endpoint.
type Server struct {
	pub    Publisher
	read   Reader
	log    *slog.Logger
	wait   time.Duration
	window time.Duration
	limits Limits
	users  []Credential
	nonces *nonceCache
	// claimer shares the nonces between gateways and restarts: the
	// reader, when it can (*postgres.Ledger).
	claimer nonceClaimer
	now     func() time.Time
}

// nonceClaimer records a digest nonce for good and reports whether it was
// new. *postgres.Ledger satisfies it.
type nonceClaimer interface {
	ClaimNonce(ctx context.Context, user string, nonce []byte, forget time.Time) (bool, error)
}

// New returns a Server. Credentials that do not parse are logged and none is
// accepted, so that a configuration mistake fails closed.
func New(pub Publisher, read Reader, log *slog.Logger, opt Options) *Server {
	s := &Server{pub: pub, read: read, log: log, wait: opt.Wait, window: opt.Window,
		limits: opt.Limits, now: opt.Now,
		nonces: &nonceCache{seen: map[string]time.Time{}, max: 100_000}}
	if c, ok := read.(nonceClaimer); ok && read != nil {
		s.claimer = c
	}
	if s.wait <= 0 {
		s.wait = 5 * time.Second
	}
	if s.window <= 0 {
		s.window = 5 * time.Minute
	}
	if s.now == nil {
		s.now = time.Now
	}
	d := DefaultLimits
	for _, l := range []struct{ got, def *int }{{&s.limits.Body, &d.Body},
		{&s.limits.Depth, &d.Depth}, {&s.limits.Attrs, &d.Attrs},
		{&s.limits.Elements, &d.Elements}} {
		if *l.got <= 0 {
			*l.got = *l.def
		}
	}
	users, err := ParseUsers(opt.Users)
	switch {
	case err != nil:
		log.Error("SOAP credentials are not valid; every SOAP call will be refused",
			"error", err)
	case len(users) == 0:
		log.Warn("No SOAP credentials configured (PUNTOS_SOAP_USERS); every SOAP call " +
			"will be refused")
	}
	if err == nil {
		s.users = users
	}
	return s
}

// Register adds GET /soap?wsdl, GET /soap?xsd=puntos.xsd and POST /soap to r.
func (s *Server) Register(r *mux.Router) {
	r.HandleFunc("/soap", s.document).Methods(http.MethodGet)
	r.HandleFunc("/soap", s.serve).Methods(http.MethodPost)
}

// document serves the WSDL, with its addresses pointing at this server, or
// the XSD it imports.
func (s *Server) document(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	base := "http://" + r.Host
	if r.TLS != nil {
		base = "https://" + r.Host
	}
	wsdl := false
	for k := range q {
		wsdl = wsdl || strings.EqualFold(k, "wsdl")
	}
	switch {
	case wsdl:
		doc := bytes.ReplaceAll(contracts.WSDL, []byte(`location="http://127.0.0.1:8080/soap"`),
			[]byte(`location="`+base+`/soap"`))
		doc = bytes.ReplaceAll(doc, []byte(`schemaLocation="puntos.xsd"`),
			[]byte(`schemaLocation="`+base+`/soap?xsd=puntos.xsd"`))
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		_, _ = w.Write(doc)
	case q.Get("xsd") == "puntos.xsd":
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		_, _ = w.Write(contracts.XSD)
	default:
		http.Error(w, "GET /soap?wsdl for the service description; POST /soap for calls",
			http.StatusNotFound)
	}
}

// serve answers one SOAP call: read and check the envelope, authenticate,
// route on the body element's qualified name, run the operation, answer.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	// Until the envelope says otherwise, answer in the version the content
	// type names.
	ver := soap11
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/soap+xml") {
		ver = soap12
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(s.limits.Body)+1))
	if err != nil {
		s.fault(w, r, ver, "", invalid("Envelope", "cannot be read"))
		return
	}
	if len(body) > s.limits.Body {
		s.fault(w, r, ver, "", invalid("Envelope", "is larger than %d bytes", s.limits.Body))
		return
	}
	// A UTF-8 byte order mark, which .NET and Java clients may write
	// before the XML declaration, is no text outside the Envelope.
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	env, err := parseEnvelope(body, s.limits)
	if err != nil {
		s.fault(w, r, ver, "", err)
		return
	}
	ver = env.version
	if err := checkHeaders(env); err != nil {
		s.fault(w, r, ver, "", err)
		return
	}
	caller, err := s.authenticate(r, env)
	if err != nil {
		s.fault(w, r, ver, "", err)
		return
	}

	// Route on the operation element: the SOAPAction header is not trusted.
	op := operations[env.op.name.Local]
	if op == nil || env.op.name.Space != nsPuntos {
		s.fault(w, r, ver, "", invalid("Body", "{%s}%s is not an operation of this service",
			env.op.name.Space, env.op.name.Local))
		return
	}
	if !caller.Allows(op.name) {
		s.fault(w, r, ver, "", core.Errorf(core.Forbidden, op.name, "is not granted to %s",
			caller.Name))
		return
	}
	req := op.request()
	if err := checkElement(env.op, req); err != nil {
		s.fault(w, r, ver, "", err)
		return
	}
	if err := decodeOperation(body, req); err != nil {
		s.fault(w, r, ver, "", invalid(op.name, "cannot be read: %v", trimXMLError(err)))
		return
	}
	resp, err := op.run(s, &call{ctx: r.Context(), caller: caller}, req)
	if err != nil {
		s.fault(w, r, ver, txnOf(req), err)
		return
	}
	s.answer(w, ver, http.StatusOK, resp)
}

// checkHeaders refuses header blocks the caller marked mustUnderstand that
// this service does not process: everything but wsse:Security.
func checkHeaders(env *envelope) error {
	if env.header == nil {
		return nil
	}
	for _, h := range env.header.children {
		if h.name.Space == nsWSSE && h.name.Local == "Security" {
			continue
		}
		v, _ := h.attr(map[version]string{soap11: nsSOAP11, soap12: nsSOAP12}[env.version],
			"mustUnderstand")
		if v == "1" || v == "true" {
			return invalid(h.name.Local, "is a header this service does not understand")
		}
	}
	return nil
}

// call is one authenticated operation call.
type call struct {
	ctx    context.Context
	caller *Credential
}

// setAside reports whether the bus set cmd aside for good, so that a
// dropped retry of it will get no result (bus.SetAsideForGood); when it
// cannot tell within the result wait, false.
func (s *Server) setAside(ctx context.Context, cmd bus.Command) bool {
	ctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	return bus.SetAsideForGood(ctx, s.pub, cmd, s.log)
}

// errPending is the answer to a write whose result did not come back in time.
var errPending = errors.New("pending")

// submit publishes cmd and waits for its result: the ledger's answer, the
// stored first answer of a retry, or errPending when the wait runs out.
func (s *Server) submit(ctx context.Context, cmd bus.Command) (bus.Result, error) {
	results, unsubscribe, err := s.pub.SubscribeResult(cmd.Source, cmd.TxnID)
	if err != nil {
		s.log.Error("Subscribe failed", "txn_id", cmd.TxnID, "error", err)
		return bus.Result{}, core.Errorf(core.Unavailable, "", "the bus is unavailable; "+
			"retry with the same TxnId")
	}
	defer unsubscribe()

	duplicate, err := s.pub.PublishCommand(ctx, cmd)
	if err != nil {
		s.log.Error("Publish failed", "txn_id", cmd.TxnID, "error", err)
		return bus.Result{}, core.Errorf(core.Unavailable, "", "the bus is unavailable; "+
			"retry with the same TxnId")
	}
	if duplicate {
		// A retry the bus already holds: its result may be stored already,
		// or the bus may have set it aside, when no result will come.
		res, err := s.read.ResultOf(ctx, cmd)
		if core.KindOf(err) == core.NotFound && s.setAside(ctx, cmd) {
			// Applied meanwhile? The ledger is asked again.
			if res, err = s.read.ResultOf(ctx, cmd); core.KindOf(err) == core.NotFound {
				return bus.Result{}, core.Errorf(core.Internal, "", "%s",
					bus.DeadLetteredMessage)
			}
		}
		if err == nil {
			return *res, nil
		}
	}
	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	for {
		select {
		case heard := <-results:
			if res, ok := bus.Answer(ctx, s.read, cmd, heard); ok {
				return res, nil
			}
		case <-timer.C:
			return bus.Result{}, errPending
		case <-ctx.Done():
			return bus.Result{}, ctx.Err()
		}
	}
}
