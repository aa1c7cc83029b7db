package soap

import (
	"crypto/tls"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// A password sent as itself is refused from a peer beyond this host unless
// the request came over TLS; from a loopback peer it is accepted.
func TestPlainPasswordsNeedTLS(t *testing.T) {
	s := New(nil, nil, slog.New(slog.DiscardHandler),
		Options{Users: "billing:s3cret-billing:*"})
	for _, tc := range []struct {
		remote string
		tls    bool
		want   bool
	}{
		{"127.0.0.1:5000", false, true},
		{"[::1]:5000", false, true},
		{"192.0.2.10:5000", false, false},
		{"192.0.2.10:5000", true, true},
	} {
		r := httptest.NewRequest("POST", "/soap", nil)
		r.RemoteAddr = tc.remote
		r.TLS = nil
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		r.SetBasicAuth("billing", "s3cret-billing")
		c, err := s.authenticate(r, &envelope{})
		if got := err == nil && c != nil && c.Name == "billing"; got != tc.want {
			t.Errorf("Basic from %s (tls %t): accepted %t (%v), want %t", tc.remote, tc.tls,
				got, err, tc.want)
		}
		if !tc.want && core.KindOf(err) != core.Unauthorized {
			t.Errorf("Basic from %s: error kind %s, want unauthorized", tc.remote,
				core.KindOf(err))
		}
	}
}
