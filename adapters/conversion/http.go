package conversion

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/puntos-loyalty/puntos/core"
)

// HTTPOptions tunes the calls of an HTTPPartner.
type HTTPOptions struct {
	// Timeout bounds one try, from connecting to reading the answer.
	Timeout time.Duration
	// Retries is how many times one delivery is tried again at once, with
	// exponential backoff from RetryWaitMin to RetryWaitMax, after a
	// connection error, a timeout, a 429 or a 5xx. What is still unclear
	// after that is left to the worker's next attempt.
	Retries      int
	RetryWaitMin time.Duration
	RetryWaitMax time.Duration
}

func (o *HTTPOptions) defaults() {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Retries <= 0 {
		o.Retries = 3
	}
	if o.RetryWaitMin <= 0 {
		o.RetryWaitMin = 500 * time.Millisecond
	}
	if o.RetryWaitMax <= 0 {
		o.RetryWaitMax = 5 * time.Second
	}
}

// HTTPPartner speaks the JSON flavour of the partner protocol.
type HTTPPartner struct {
	base   string
	secret string
	client *retryablehttp.Client
}

// NewHTTPPartner returns a partner reached at endpoint (its base URL),
// authenticating with secret as a bearer token.
func NewHTTPPartner(endpoint, secret string, opt HTTPOptions) *HTTPPartner {
	opt.defaults()
	c := retryablehttp.NewClient()
	dialer := &net.Dialer{Timeout: opt.Timeout, Control: refuseForbiddenAddr}
	c.HTTPClient = &http.Client{Timeout: opt.Timeout, Transport: &http.Transport{
		DialContext: dialer.DialContext, TLSHandshakeTimeout: opt.Timeout,
		MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second}}
	c.RetryMax = opt.Retries
	c.RetryWaitMin, c.RetryWaitMax = opt.RetryWaitMin, opt.RetryWaitMax
	// The library's own log lines would go to the standard logger; the
	// worker logs each attempt's outcome instead.
	c.Logger = nil
	// When the tries run out, the last answer is read as any other (its
	// status and the partner's message go into the conversion's last
	// error), rather than the library's "giving up after 4 attempt(s)".
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	return &HTTPPartner{base: strings.TrimRight(endpoint, "/"), secret: secret, client: c}
}

// refuseForbiddenAddr stops a connection to an address no partner may have
// (core.PartnerAddrAllowed), whatever name or redirect led there; it runs
// before the connection is attempted.
func refuseForbiddenAddr(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("partner address %q: %w", address, err)
	}
	if !core.PartnerAddrAllowed(ap.Addr()) {
		return fmt.Errorf("partner address %s refused: link-local, multicast or unspecified",
			ap.Addr())
	}
	return nil
}

// String names the partner without its secret.
func (p *HTTPPartner) String() string { return "http " + p.base }

// creditBody is the body of a credit request.
type creditBody struct {
	TxnID       string    `json:"txn_id"`
	Program     string    `json:"program"`
	MemberID    string    `json:"member_id"`
	Amount      int64     `json:"amount"`
	Points      int64     `json:"points"`
	RequestedAt time.Time `json:"requested_at"`
}

// answerBody is every answer of the partner.
type answerBody struct {
	TxnID     string `json:"txn_id"`
	Status    string `json:"status"`
	Reference string `json:"reference"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

// Deliver posts the credit. Only a 2xx that says confirmed with a
// reference confirms, and only a 4xx that says refused with a code refuses;
// anything else is unclear, including a 401 (our credentials are wrong,
// which a person fixes) and a 429.
func (p *HTTPPartner) Deliver(ctx context.Context, req Request) Answer {
	body, err := json.Marshal(creditBody{TxnID: req.TxnID, Program: req.Program,
		MemberID: req.MemberID, Amount: req.Amount, Points: req.Points,
		RequestedAt: req.RequestedAt.UTC()})
	if err != nil {
		return Answer{Detail: fmt.Sprintf("encode request: %v", err)}
	}
	r, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, p.base+"/v1/credits",
		bytes.NewReader(body))
	if err != nil {
		return Answer{Detail: fmt.Sprintf("build request: %v", err)}
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Idempotency-Key", req.TxnID)
	return p.do(r, req.TxnID)
}

// Status asks for the fate of req.TxnID. A 404 that says unknown means the
// partner never received it.
func (p *HTTPPartner) Status(ctx context.Context, req Request) Answer {
	r, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet,
		p.base+"/v1/credits/"+url.PathEscape(req.TxnID), nil)
	if err != nil {
		return Answer{Detail: fmt.Sprintf("build request: %v", err)}
	}
	return p.do(r, req.TxnID)
}

func (p *HTTPPartner) do(r *retryablehttp.Request, txn string) Answer {
	r.Header.Set("Accept", "application/json")
	if p.secret != "" {
		r.Header.Set("Authorization", "Bearer "+p.secret)
	}
	resp, err := p.client.Do(r)
	if err != nil {
		// With the passthrough handler an error can come with the last
		// answer (the context ended after it arrived): its body is closed
		// here. The error names the URL, never the secret (it is a header).
		if resp != nil {
			resp.Body.Close()
		}
		return Answer{Detail: err.Error()}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Answer{Detail: fmt.Sprintf("read answer (status %d): %v", resp.StatusCode, err)}
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		// Whatever its body says, the partner did not take our credentials:
		// tried again later, and a person must mend them.
		return Answer{Detail: fmt.Sprintf("the partner refused our credentials (status %d): "+
			"correct the external program's credentials; tried again meanwhile",
			resp.StatusCode)}
	}
	var a answerBody
	if err := json.Unmarshal(raw, &a); err != nil {
		return Answer{Detail: fmt.Sprintf("status %d with a body that is not the protocol's",
			resp.StatusCode)}
	}
	if a.TxnID != "" && a.TxnID != txn {
		return Answer{Detail: fmt.Sprintf("answer about transaction %q, not ours", a.TxnID)}
	}
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	client := resp.StatusCode >= 400 && resp.StatusCode < 500
	switch {
	case ok && a.Status == "confirmed" && a.Reference != "":
		return Answer{Outcome: Confirmed, Reference: a.Reference}
	case (ok || client) && a.Status == "refused" && a.Code != "" &&
		resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden &&
		resp.StatusCode != http.StatusTooManyRequests:
		return Answer{Outcome: Refused, Code: a.Code}
	case resp.StatusCode == http.StatusNotFound && a.Status == "unknown":
		return Answer{Outcome: Unknown, Detail: "the partner does not know the transaction"}
	}
	return Answer{Detail: fmt.Sprintf("status %d, %q %s", resp.StatusCode, a.Status,
		strings.TrimSpace(a.Message))}
}
