package rig

import "testing"

func TestStealSince(t *testing.T) {
	before := Load{Ticks: 1000, StealTicks: 100}
	if got := (Load{Ticks: 1400, StealTicks: 200}).StealSince(before); got != 25 {
		t.Errorf("steal = %v%%, want 25%%", got)
	}
	if got := (Load{Ticks: 1000, StealTicks: 100}).StealSince(before); got != -1 {
		t.Errorf("steal with no time passed = %v, want -1 (unknown)", got)
	}
	if got := (Load{Ticks: 1400}).StealSince(Load{}); got != -1 {
		t.Errorf("steal without a reading before = %v, want -1 (unknown)", got)
	}
}

// On Linux the load carries the machine's CPU time, which only grows.
func TestDescribeLoadReadsCPUTime(t *testing.T) {
	a := DescribeLoad()
	if a.Ticks == 0 {
		t.Fatal("no CPU time read from /proc/stat")
	}
	if a.StealTicks > a.Ticks {
		t.Errorf("steal %d ticks of %d in all", a.StealTicks, a.Ticks)
	}
	if b := DescribeLoad(); b.Ticks < a.Ticks || b.StealTicks < a.StealTicks {
		t.Errorf("CPU time went back from %d (steal %d) to %d (%d) ticks",
			a.Ticks, a.StealTicks, b.Ticks, b.StealTicks)
	}
}
