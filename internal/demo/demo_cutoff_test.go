package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Interrupted while members are being enrolled: the sign-ups on their way
// are counted as sign-ups cut off, not among the bill events (the summary
// added them to the events' "Cut off", whose figures then did not add up
// to the events sent).
func TestInterruptedDuringSignUpsCountsThemApart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/members") && r.Method == http.MethodPost:
			// The operator interrupts while the first sign-ups are on their way.
			once.Do(func() { go func() { time.Sleep(20 * time.Millisecond); cancel() }() })
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		case r.Method == http.MethodPut || strings.HasSuffix(r.URL.Path, "/rules"):
			ok201(w, 0)
		default:
			fmt.Fprint(w, `{}`)
		}
	}))
	defer srv.Close()
	var rows strings.Builder
	rows.WriteString("customerID,tenure,MonthlyCharges,TotalCharges\n")
	for i := range 4 {
		fmt.Fprintf(&rows, "S%03d,2,10,20\n", i)
	}
	var out bytes.Buffer
	sum, err := Run(ctx, Options{BaseURL: srv.URL, APIKey: "k", Workers: 2,
		AsOf: time.Date(2025, 6, 5, 0, 0, 0, 0, time.UTC), Out: &out,
		Data: strings.NewReader(rows.String())})
	if !errors.Is(err, context.Canceled) || !sum.Stopped {
		t.Fatalf("run: %v %+v", err, sum)
	}
	if sum.MembersCutOff == 0 || sum.CutOff != 0 || sum.EventsSent != 0 {
		t.Fatalf("interrupted during sign-ups: %d sign-ups and %d events cut off, %d events "+
			"sent; want the sign-ups only\n%s", sum.MembersCutOff, sum.CutOff, sum.EventsSent,
			out.String())
	}
	if !strings.Contains(out.String(), "Sign-ups cut off:") ||
		strings.Contains(out.String(), "Events cut off:") {
		t.Fatalf("the summary:\n%s", out.String())
	}
}
