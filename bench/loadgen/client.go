package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// client sends requests to one gateway over kept-alive connections.
type client struct {
	base, key string
	http      *http.Client
}

func newClient(base, key string, conns int) *client {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns,
		MaxConnsPerHost: conns, IdleConnTimeout: time.Minute, DisableCompression: true}
	return &client{base: strings.TrimRight(base, "/"), key: key,
		http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// do sends one request and reads the whole answer. It returns the status
// and the answer's body; a transport error has status 0.
func (c *client) do(ctx context.Context, method, path, txn string, body []byte) (int,
	[]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if txn != "" {
		req.Header.Set("Idempotency-Key", txn)
	}
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

// memberRef names the i-th benchmark member.
func memberRef(i int) string { return fmt.Sprintf("m%07d", i) }

// setup creates the program (1 point per unit, no pending days, no expiry,
// and with tiers three levels whose multiplier is 1, so that the ledger
// check's ten points per accrual still hold) and enrolls the members, then
// waits until the ledger holds them all.
func setup(ctx context.Context, c *client, program string, members int, tiers bool,
	enrolled func(context.Context) (int, error)) error {
	body := []byte(`{"name":"Benchmark","currency":"CLP","points_per_unit":"1"}`)
	st, raw, err := c.do(ctx, http.MethodPut, "/v1/programs/"+program, "prog-"+program, body)
	if err != nil || (st != http.StatusCreated && st != http.StatusAccepted) {
		return fmt.Errorf("create program: status %d %s: %v", st, raw, err)
	}
	if err := waitFor(ctx, func() bool {
		st, _, err := c.do(ctx, http.MethodGet, "/v1/programs/"+program, "", nil)
		return err == nil && st == http.StatusOK
	}); err != nil {
		return fmt.Errorf("program not created: %w", err)
	}
	if tiers {
		body := []byte(`{"window_days":365,"levels":[` +
			`{"code":"blue","min_points":0,"multiplier":"1"},` +
			`{"code":"silver","min_points":30,"multiplier":"1"},` +
			`{"code":"gold","min_points":100,"multiplier":"1"}]}`)
		// A 202 is stored but not yet applied: the same request again, with
		// the same key, answers 201 once the ledger has applied it.
		var st int
		var raw []byte
		if err := waitFor(ctx, func() bool {
			var err error
			st, raw, err = c.do(ctx, http.MethodPut, "/v1/programs/"+program+"/tiers",
				"tiers-"+program, body)
			return err == nil && st == http.StatusCreated
		}); err != nil {
			return fmt.Errorf("set tiers: last status %d %s: %w", st, raw, err)
		}
	}

	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= members || ctx.Err() != nil {
					return
				}
				ref := memberRef(i)
				body := []byte(`{"customer_ref":"` + ref + `","channel":"bench"}`)
				st, raw, err := c.do(ctx, http.MethodPost, "/v1/programs/"+program+"/members",
					"enr-"+ref, body)
				if err != nil || (st != http.StatusCreated && st != http.StatusAccepted) {
					firstErr.CompareAndSwap(nil, fmt.Errorf("enroll %s: status %d %s: %v", ref,
						st, raw, err))
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return err
	}

	// An enrollment answered 202 is in the bus, not yet in the ledger.
	return waitFor(ctx, func() bool {
		n, err := enrolled(ctx)
		return err == nil && n == members
	})
}

// waitFor polls ok every 100 ms for up to a minute.
func waitFor(ctx context.Context, ok func() bool) error {
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after a minute")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
