package backoffice

import (
	"context"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/reporting"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// The reports page's points outstanding today is what the members' balances
// hold, as the REST liability report without ?at says: a purchase dated
// three minutes ahead of the clock (the ledger allows five) is in it.
func TestReportsTodayCountsEventsDatedAhead(t *testing.T) {
	t.Parallel()
	conn, _ := chtest.Database(t)
	if err := reporting.Migrate(t.Context(), conn); err != nil {
		t.Fatalf("migrate ClickHouse: %v", err)
	}
	rg := newRig(t, Options{ClickHouse: func(context.Context) (driver.Conn, error) {
		return conn, nil
	}})
	rg.ledger().Clock = func() time.Time { return rg.now }
	rg.telco()
	rg.apply(core.KindCredit, "telco", "m-1", core.Credit{Points: 500, Reason: "welcome"})
	rg.now = rg.now.Add(time.Hour)
	ahead := rg.try(core.KindAccrue, "telco", "m-1", core.Accrue{EventType: "bill_paid",
		Amount: "70"}, rg.now.Add(3*time.Minute))
	if ahead.Status != bus.StatusOK {
		t.Fatalf("purchase dated 3 minutes ahead: %s %+v", ahead.Status, ahead.Error)
	}
	n, err := rg.ledger().RelayOutbox(t.Context(), chtest.PublisherFunc(
		func(ctx context.Context, evs []bus.Event) error {
			return reporting.InsertEvents(ctx, conn, evs)
		}), 500)
	if err != nil || n == 0 {
		t.Fatalf("relay to ClickHouse: %d events, %v", n, err)
	}
	m, err := rg.ledger().Member(t.Context(), "telco", "m-1")
	if err != nil || m.Balance.Available+m.Balance.Pending != 570 {
		t.Fatalf("balance %+v, %v; want 570 available and pending", m, err)
	}

	rg.user("ana", RoleAnalyst)
	b := rg.browser()
	b.mustSignIn("ana")
	code, page, _ := b.get("/admin/reports?program=telco")
	if code != http.StatusOK {
		t.Fatalf("reports page: status %d\n%s", code, page)
	}
	got := regexp.MustCompile(`id="outstanding">([^<]*)<`).FindStringSubmatch(page)
	if got == nil || got[1] != "570" {
		t.Fatalf("points outstanding today %q, want 570 (the balance, as REST says)", got)
	}
}
