package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// soapAccrual is a SOAP 1.1 Accrue request; the two %s are the member and
// the transaction id. The event earns pointsPerEvent, as in REST.
const soapAccrual = `<?xml version="1.0" encoding="UTF-8"?>` +
	`<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" ` +
	`xmlns:p="urn:puntos:soap:v1"><soap:Body><p:Accrue><p:Program>%s</p:Program>` +
	`<p:CustomerRef>%s</p:CustomerRef><p:TxnId>%s</p:TxnId>` +
	`<p:EventType>purchase</p:EventType><p:Amount>10</p:Amount></p:Accrue>` +
	`</soap:Body></soap:Envelope>`

// soapPending is in the fault SOAP answers when the command is stored on
// the bus but its result did not come back in time: REST's 202.
const soapPending = "is stored and will be applied"

// soapScenario is scenario d (and soap-wide, with more clients): clients
// each send one SOAP Accrue per request, back to back, for the duration.
// The requests' transaction ids start with prefix, so that the two
// scenarios post apart.
func (r *runner) soapScenario(ctx context.Context, res *result, clients int,
	prefix string) error {
	res.What = "accruals through SOAP 1.1, one event per request, closed loop"
	res.Settings = map[string]any{"duration": r.o.duration.String(),
		"clients": clients, "members": r.o.members, "auth": "HTTP Basic",
		"points_per_event": pointsPerEvent}
	if r.target.soapUser == "" {
		return fmt.Errorf("no SOAP user: give -soap-user and -soap-password with -url")
	}
	stop, err := r.startProfile(res)
	if err != nil {
		return err
	}
	defer stop()

	w := &writer{}
	k0 := r.c.scrape(ctx)
	cpu0 := r.sampleCPU(ctx)
	start := time.Now()
	deadline := start.Add(r.o.duration)
	var wg sync.WaitGroup
	for cl := range clients {
		wg.Go(func() {
			for seq := 0; time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				st, d := r.accrueSOAP(ctx, fmt.Sprintf("%s-%d-%d", prefix, cl, seq))
				w.note(st, d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stop()

	answered := len(w.lat) + len(w.lat202)
	res.Figures = map[string]any{
		"cpu":                 r.cpuSince(ctx, cpu0, answered),
		"elapsed_s":           elapsed.Seconds(),
		"answered_per_s":      perSecond(answered, elapsed),
		"committed_per_s":     perSecond(len(w.lat), elapsed),
		"answers_200":         len(w.lat),
		"answers_pending":     len(w.lat202),
		"other_answers":       statusCounts(w.other),
		"latency_200":         summarise(w.lat),
		"latency_pending":     summarise(w.lat202),
		"core":                r.c.scrape(ctx).since(k0),
		"target_events_per_s": 5000,
	}
	return nil
}

// accrueSOAP sends one SOAP accrual, and sends it again with the same TxnId
// after a transport error or a Server fault, at most three times. A 200
// counts as committed (the SOAP face answers only once the ledger has
// committed); a final "stored and will be applied" fault as REST's 202,
// reported with that status.
func (r *runner) accrueSOAP(ctx context.Context, txn string) (int, time.Duration) {
	body := []byte(fmt.Sprintf(soapAccrual, r.program, memberRef(rand.IntN(r.o.members)), txn))
	start := time.Now()
	status := 0
	for attempt := 0; attempt < 4; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		st, raw, err := r.c.soap(context.WithoutCancel(ctx), r.target.soapUser,
			r.target.soapPassword, body)
		switch {
		case err != nil:
			status = 0
			continue
		case st == http.StatusOK:
			status = st
		case bytes.Contains(raw, []byte(soapPending)):
			status = http.StatusAccepted
			continue
		case bytes.Contains(raw, []byte("Server.")):
			status = http.StatusServiceUnavailable
			continue
		default:
			status = st // a Client fault: the request itself is wrong
		}
		break
	}
	switch status {
	case http.StatusOK:
		r.acct.committed.Add(1)
	case http.StatusAccepted:
		r.acct.accepted.Add(1)
	case 0, http.StatusServiceUnavailable:
		r.acct.unknown.Add(1)
	}
	return status, time.Since(start)
}

// soap posts one SOAP 1.1 envelope with HTTP Basic authentication.
func (c *client) soap(ctx context.Context, user, password string, body []byte) (int, []byte,
	error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/soap",
		bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.SetBasicAuth(user, password)
	req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	req.Header.Set("SOAPAction", `"urn:puntos:soap:v1/Accrue"`)
	res, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, err
	}
	return res.StatusCode, raw, nil
}
