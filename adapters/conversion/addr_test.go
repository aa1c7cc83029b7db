package conversion

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// No endpoint, name or redirect may lead the adapter to a link-local
// address such as a cloud metadata service. The refusal comes before any
// connection is attempted, so this test sends nothing to that address.
func TestPartnerNeverDialsLinkLocal(t *testing.T) {
	opt := HTTPOptions{Timeout: 2 * time.Second, Retries: 1, RetryWaitMin: time.Millisecond,
		RetryWaitMax: time.Millisecond}
	req := Request{TxnID: "conv-1", Program: "telco", External: "air", MemberID: "M1",
		Amount: 10, Points: 100}
	for _, endpoint := range []string{"http://169.254.169.254/latest",
		"http://[fe80::1]:8080/x", "http://0.0.0.0:9/x"} {
		a := NewHTTPPartner(endpoint, "", opt).Deliver(context.Background(), req)
		if a.Outcome == Confirmed || !strings.Contains(a.Detail, "refused") {
			t.Errorf("%s: %+v, want the connection refused before it is made", endpoint, a)
		}
	}

	// A partner on 127.0.0.1 that redirects there is refused the same way.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	a := NewHTTPPartner(srv.URL, "", opt).Deliver(context.Background(), req)
	if a.Outcome == Confirmed || !strings.Contains(a.Detail, "refused") {
		t.Errorf("redirect to a link-local address: %+v, want refused", a)
	}
}
