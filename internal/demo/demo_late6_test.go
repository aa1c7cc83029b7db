package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every bill is accepted (202) and stays pending; the operator presses
// Ctrl-C while the demo waits for their results. Those writes are on the
// bus (accepted): an interrupted run must not count them as Failed ("got
// no answer; run it again to retry them").
func TestLate6InterruptedWhileWaitingForAcceptedWrites(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPut || strings.HasSuffix(r.URL.Path, "/rules") ||
			strings.HasSuffix(r.URL.Path, "/members"):
			ok201(w, 0)
		case strings.HasSuffix(r.URL.Path, "/events/batches"):
			var in struct{ Events []batchEvent }
			_ = json.NewDecoder(r.Body).Decode(&in)
			var items []map[string]any
			for _, ev := range in.Events {
				items = append(items, map[string]any{"txn_id": ev.TxnID, "status": 202})
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_ = json.NewEncoder(w).Encode(map[string]any{"items": items})
		case strings.HasPrefix(r.URL.Path, "/v1/commands/"):
			// The operator interrupts while the demo waits for results.
			once.Do(func() { go func() { time.Sleep(20 * time.Millisecond); cancel() }() })
			<-r.Context().Done()
		default:
			fmt.Fprint(w, `{}`)
		}
	}))
	defer srv.Close()
	var rows strings.Builder
	rows.WriteString("customerID,tenure,MonthlyCharges,TotalCharges\n")
	for i := range 5 {
		fmt.Fprintf(&rows, "C%03d,2,10,20\n", i)
	}
	var out bytes.Buffer
	sum, err := Run(ctx, Options{BaseURL: srv.URL, APIKey: "k", Workers: 2,
		AsOf: time.Date(2025, 6, 5, 0, 0, 0, 0, time.UTC), Out: &out,
		Data: strings.NewReader(rows.String())})
	if !errors.Is(err, context.Canceled) || !sum.Stopped {
		t.Fatalf("run: %v %+v", err, sum)
	}
	if sum.FailedTotal() != 0 || sum.Pending+sum.CutOff != 10 {
		t.Errorf("interrupted while waiting for 10 accepted bills: failed %d %v, pending %d, "+
			"cut off %d; want none failed\n%s", sum.FailedTotal(), sum.Failed, sum.Pending,
			sum.CutOff, out.String())
	}
}

// The gateway answers 503 to every member and bill, with the default 16
// workers: the run gives up after 32 writes failed in a row. The writes
// other workers were retrying then had each been answered 503 ("the bus is
// unavailable": not stored) on every attempt: they failed, they were not
// "on their way, applied or not". Failed must count every write that got
// only 503s.
func TestLate6GiveUpCountsRefusedWritesAsFailed(t *testing.T) {
	defer func(d time.Duration) { firstBackoff = d }(firstBackoff)
	firstBackoff = time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut || strings.HasSuffix(r.URL.Path, "/rules") {
			ok201(w, 0)
			return
		}
		writeProblem(w, http.StatusServiceUnavailable, "the bus is unavailable")
	}))
	defer srv.Close()
	var rows strings.Builder
	rows.WriteString("customerID,tenure,MonthlyCharges,TotalCharges\n")
	for i := range 300 {
		fmt.Fprintf(&rows, "C%03d,2,10,20\n", i)
	}
	var out bytes.Buffer
	sum, err := Run(context.Background(), Options{BaseURL: srv.URL, APIKey: "k", Workers: 16,
		AsOf: time.Date(2025, 6, 5, 0, 0, 0, 0, time.UTC), Out: &out,
		Data: strings.NewReader(rows.String())})
	if err == nil || !strings.Contains(err.Error(), "the gateway stopped answering") {
		t.Fatalf("got %v", err)
	}
	if sum.CutOff != 0 || sum.Skipped+sum.EventsSent != 600 {
		t.Errorf("gateway answering 503 only: failed %d, cut off %d (want 0: each was "+
			"refused, none may have been applied), skipped+sent %d of 600\n%s",
			sum.FailedTotal(), sum.CutOff, sum.Skipped+sum.EventsSent, out.String())
	}
}
