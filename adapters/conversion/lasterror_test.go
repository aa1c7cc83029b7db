package conversion

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A partner that answers 503 to every try: once the tries run out, the
// delivery is unclear (tried again later) and its detail, which becomes
// the conversion's last error, names the status and the partner's
// message, not only that the tries ran out.
func TestLastErrorNamesThePartnersAnswer(t *testing.T) {
	var tries atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tries.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"status":"error","message":"maintenance until 03:00"}`))
	}))
	defer srv.Close()
	p := NewHTTPPartner(srv.URL, "tok", HTTPOptions{Retries: 2,
		RetryWaitMin: time.Millisecond, RetryWaitMax: 2 * time.Millisecond})
	a := p.Deliver(context.Background(), Request{TxnID: "conv-1", Program: "telco",
		MemberID: "M-1", Amount: 50, Points: 100, RequestedAt: time.Now()})
	if a.Outcome != Unclear {
		t.Fatalf("outcome %v after 503s, want unclear", a.Outcome)
	}
	if !strings.Contains(a.Detail, "503") || !strings.Contains(a.Detail, "maintenance until 03:00") {
		t.Fatalf("detail %q, want the status and the partner's message", a.Detail)
	}
	if n := tries.Load(); n != 3 {
		t.Fatalf("%d tries, want 3 (one and two retries)", n)
	}
}
