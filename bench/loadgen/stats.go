package main

import (
	"time"

	"github.com/puntos-loyalty/puntos/bench/internal/rig"
)

// latency summarises a set of request durations in milliseconds.
type latency = rig.Latency

// summarise sorts ds in place and returns its percentiles (nearest rank).
func summarise(ds []time.Duration) latency { return rig.Summarise(ds) }

// perSecond is n over d, rounded to a tenth.
func perSecond(n int, d time.Duration) float64 { return rig.PerSecond(n, d) }
