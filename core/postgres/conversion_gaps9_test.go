package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// convertGaps9 makes a conversion of n points of ref into sky at the
// fixture's clock, and returns its id.
func (f *fixture) convertGaps9(ref string, n core.Points) string {
	f.t.Helper()
	r := f.do(core.KindConvert, ref, f.txn(), core.ConvertRequest{External: "sky", Points: n})
	var c core.Conversion
	if err := json.Unmarshal(r.Data, &c); err != nil || c.ID == "" {
		f.t.Fatalf("convert %d of %s: %s %+v %s", n, ref, r.Status, r.Error, r.Data)
	}
	return c.ID
}

// listGaps9 reads every page of ref's conversions, limit at a time.
func (f *fixture) listGaps9(ref string, limit int) []core.Conversion {
	f.t.Helper()
	var all []core.Conversion
	cursor := ""
	for range 20 {
		page, err := f.l.Conversions(context.Background(), f.prog, ref, cursor, limit)
		if err != nil {
			f.t.Fatalf("conversions of %s: %v", ref, err)
		}
		if len(page.Conversions) > limit {
			f.t.Fatalf("a page of %d holds %d", limit, len(page.Conversions))
		}
		all = append(all, page.Conversions...)
		if page.Next == "" {
			return all
		}
		cursor = page.Next
	}
	f.t.Fatalf("the pages of %s do not end", ref)
	return nil
}

// TestConversionsListGaps9: a member's conversions come newest first, page
// after page without loss or repeat, and are exactly those the single read
// answers for the same reference, a member merged away included.
func TestConversionsListGaps9(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	for _, m := range []string{"a", "b"} {
		f.enroll(m)
		f.ok(core.KindCredit, m, core.Credit{Points: 5000, Reason: "welcome"})
	}
	f.ok(core.KindExternalUpsert, "sky", airline("sky", ""))

	// a converts three times, b twice, interleaved over the days.
	start := f.now
	var ofA, ofB []string
	for i, who := range []string{"a", "b", "a", "a", "b"} {
		f.setNow(start.Add(time.Duration(i) * 24 * time.Hour))
		id := f.convertGaps9(who, core.Points(100*(i+1)))
		if who == "a" {
			ofA = append(ofA, id)
		} else {
			ofB = append(ofB, id)
		}
	}

	for _, limit := range []int{1, 2, 50} {
		got := f.listGaps9("a", limit)
		var ids []string
		for i, c := range got {
			ids = append(ids, c.ID)
			if i > 0 && c.RequestedAt.After(got[i-1].RequestedAt) {
				t.Fatalf("limit %d: %s requested after the one before it", limit, c.ID)
			}
		}
		want := slices.Clone(ofA)
		slices.Reverse(want)
		if !slices.Equal(ids, want) {
			t.Fatalf("limit %d: listed %v, want %v", limit, ids, want)
		}
	}

	// Settle a's conversions (its holds stop a merge), then merge a into b.
	for _, id := range ofA {
		c := f.command(core.KindCapture, "a", core.ConversionCaptureTxn(id),
			core.Capture{HoldTxnID: core.ConversionHoldTxn(id)})
		c.Source = core.SourceConversion
		c.Seal()
		if r := f.apply(c); r.Error != nil {
			t.Fatalf("capture %s: %+v", id, r.Error)
		}
		if _, err := f.l.FinishConversion(ctx, id, core.ConversionConfirmed, "R", "",
			f.now); err != nil {
			t.Fatal(err)
		}
	}
	f.ok(core.KindMerge, "a", core.Merge{Into: "b"})

	// Through either reference, the list holds exactly what the single read
	// finds.
	every := append(slices.Clone(ofA), ofB...)
	for _, ref := range []string{"a", "b"} {
		var listed []string
		for _, c := range f.listGaps9(ref, 2) {
			listed = append(listed, c.ID)
		}
		for _, id := range every {
			_, err := f.l.Conversion(ctx, f.prog, ref, id)
			found := err == nil
			var ce *core.Error
			if err != nil && (!errors.As(err, &ce) || ce.Kind != core.NotFound) {
				t.Fatalf("conversion %s of %s: %v", id, ref, err)
			}
			if found != slices.Contains(listed, id) {
				t.Errorf("%s: conversion %s found alone %v, listed %v", ref, id, found,
					!found)
			}
		}
	}

	// The refusals.
	for _, tc := range []struct {
		program, ref, cursor string
		want                 core.ErrorKind
	}{
		{f.prog, "nobody", "", core.NotFound},
		{"no-such-program", "a", "", core.NotFound},
		{f.prog, "a", "not-a-cursor", core.Invalid},
		{f.prog, "a", "MTIz", core.Invalid}, // base64 of "123": no id
	} {
		_, err := f.l.Conversions(ctx, tc.program, tc.ref, tc.cursor, 10)
		var ce *core.Error
		if !errors.As(err, &ce) || ce.Kind != tc.want {
			t.Errorf("%+v: %v, want %s", tc, err, tc.want)
		}
	}
}

// TestExternalUpsertCredentialsGaps9: what an upsert command does with the
// stored credentials when its payload leaves them out, gives them empty or
// gives the mask, including the payload the back office sends (a
// core.ExternalProgram, whose empty credentials are left out).
func TestExternalUpsertCredentialsGaps9(t *testing.T) {
	l := isolatedLedger(t)
	l.Secrets = keyring(t)
	f := newFixtureOn(t, l, core.Program{})
	empty, masked := "", core.Masked

	f.ok(core.KindExternalUpsert, "sky", airline("sky", partnerToken))
	sealed := f.storedCredentials("sky")

	// Left out, as the back office's blank field and a REST PUT without
	// the field send it: kept, untouched, and the partner still gets it.
	changed := airline("sky", "")
	changed.Ratio = "0.75"
	f.ok(core.KindExternalUpsert, "sky", changed)
	if got := f.storedCredentials("sky"); got != sealed {
		t.Fatalf("after an upsert without credentials the column changed")
	}
	if got := f.partnerConfig("sky"); got != partnerToken {
		t.Fatalf("the adapter reads %q, want the kept secret", got)
	}
	pub, err := l.ExternalProgram(context.Background(), f.prog, "sky")
	if err != nil || pub.Credentials != core.Masked || pub.Ratio != "0.75" {
		t.Fatalf("read after the change: %+v %v, want ratio 0.75 and credentials masked",
			pub, err)
	}

	// The mask keeps them as well.
	f.ok(core.KindExternalUpsert, "sky", core.ExternalUpsert{
		ExternalProgram: airline("sky", ""), Credentials: &masked})
	if got := f.partnerConfig("sky"); got != partnerToken {
		t.Fatalf("after ****: %q, want the kept secret", got)
	}

	// Given empty: removed.
	f.ok(core.KindExternalUpsert, "sky", core.ExternalUpsert{
		ExternalProgram: airline("sky", ""), Credentials: &empty})
	if got := f.storedCredentials("sky"); got != "" {
		t.Fatalf("after an empty value the column holds %q, want nothing", got)
	}

	// A new one: left out is none; the mask is refused.
	f.ok(core.KindExternalUpsert, "fresh", airline("fresh", ""))
	if got := f.storedCredentials("fresh"); got != "" {
		t.Fatalf("a new external program without credentials stored %q", got)
	}
	f.refused(core.KindExternalUpsert, "newer", airline("newer", core.Masked), core.Invalid)
}
