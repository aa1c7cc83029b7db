package main

import (
	"testing"
	"time"
)

func TestSummariseNearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // 1..100 ms, given in reverse
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := summarise(ds)
	want := latency{Count: 100, P50: 50, P90: 90, P99: 99, Max: 100, Mean: 50.5}
	if got != want {
		t.Fatalf("summarise = %+v, want %+v", got, want)
	}
	if got := summarise(nil); got != (latency{}) {
		t.Fatalf("summarise(nil) = %+v, want zero", got)
	}
}

func TestPerSecond(t *testing.T) {
	if got := perSecond(1234, 2*time.Second); got != 617 {
		t.Fatalf("perSecond = %v, want 617", got)
	}
	if got := perSecond(5, 0); got != 0 {
		t.Fatalf("perSecond over zero time = %v, want 0", got)
	}
}

func TestLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080", true},
		{"http://[::1]:8080", true},
		{"http://localhost:8080", false}, // a name could resolve anywhere
		{"http://10.0.0.1:8080", false},
		{"https://127.0.0.1:8443", false},
	} {
		if err := loopbackOnly(tc.url); (err == nil) != tc.ok {
			t.Errorf("loopbackOnly(%q) = %v, want ok=%t", tc.url, err, tc.ok)
		}
	}
}
