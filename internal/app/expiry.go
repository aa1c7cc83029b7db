package app

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// noticeDays reads the expiry-notice thresholds: whole days, comma
// separated; an empty list (or "none") sends no notices.
func noticeDays(c *Config, v string) error {
	c.NoticeDays = nil
	v = strings.TrimSpace(v)
	if v == "" || v == "none" {
		return nil
	}
	for _, part := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil {
			return fmt.Errorf("expiry-notice-days: %q is not a whole number of days", part)
		}
		c.NoticeDays = append(c.NoticeDays, n)
	}
	if err := core.CheckNoticeDays(c.NoticeDays); err != nil {
		return fmt.Errorf("expiry-notice-days: %w", err)
	}
	return nil
}

// formatNoticeDays writes thresholds as noticeDays reads them.
func formatNoticeDays(days []int) string {
	if len(days) == 0 {
		return "none"
	}
	parts := make([]string, len(days))
	for i, d := range days {
		parts[i] = strconv.Itoa(d)
	}
	return strings.Join(parts, ",")
}

// notifyUpcoming publishes the expiry notices due at now, after a sweep.
func (a *App) notifyUpcoming(ctx context.Context, now time.Time) {
	if len(a.cfg.NoticeDays) == 0 {
		return
	}
	res, err := a.Ledger.NotifyUpcoming(ctx, now, a.cfg.NoticeDays)
	switch {
	case err != nil && ctx.Err() == nil:
		a.log.Error("Expiry notices failed", "error", err)
	case res.Events > 0:
		a.log.Info("Expiry notices written", "events", res.Events, "lots", res.Lots)
	}
}
