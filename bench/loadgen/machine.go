package main

import (
	"context"

	"github.com/puntos-loyalty/puntos/bench/internal/rig"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// machine describes where the figures were measured; loadNote is the
// machine's load at one moment (see package rig).
type (
	machine  = rig.Machine
	loadNote = rig.Load
)

func describeMachine(ctx context.Context, l *postgres.Ledger) machine {
	return rig.DescribeMachine(ctx, l.Pool())
}

// describeLoad records `uptime` and the one-minute load average now.
func describeLoad() loadNote { return rig.DescribeLoad() }
