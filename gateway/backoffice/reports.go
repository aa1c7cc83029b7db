package backoffice

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/reporting"
)

// reportRoles may read the reports.
var reportRoles = []Role{RoleAnalyst, RoleAuditor, RoleOperator, RoleAdministrator}

// reportForm is the filter of the reports page, as the GET form sends it.
type reportForm struct {
	Program  string
	Programs []string
	From, To string // dates, YYYY-MM-DD, in the program's time zone; To excluded
	Bucket   string
}

// chartBar is one bar of the flows chart, in viewBox units.
type chartBar struct {
	X, Y, W, H int
	Class      string
	Label      string
}

// chartTick is one bucket's label under the chart.
type chartTick struct {
	X     int
	Label string
}

// flowsChart is the geometry of the issued / redeemed / expired bar chart.
type flowsChart struct {
	Width, Height, Base int
	Max                 int64
	Bars                []chartBar
	Ticks               []chartTick
}

// flowRow is one bucket of the flows table.
type flowRow struct {
	Start                     string
	Issued, Redeemed, Expired int64
	// The rest of what moved, so that the row adds up to Net.
	AdjustedDown, ClawedBack, Returned, Forfeited, Moved int64
	Net                                                  int64
	Events                                               uint64
}

// reportsView is what reports.html receives.
type reportsView struct {
	Form      reportForm
	TimeZone  string
	Rows      []flowRow
	Chart     flowsChart
	Liability *reporting.Outstanding
	Expiring  []reporting.Expiring
	CSV       string
}

// reportsPage shows the point flows of a program over a period as a chart
// and a table with the same figures, the liability and the points expiring
// soon.
func (s *Server) reportsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	form, q, prog, status, msg := s.reportQuery(ctx, r)
	if status != 0 {
		s.fail(w, r, sess, status, msg, nil)
		return
	}
	v := reportsView{Form: form}
	if prog == nil {
		s.render(w, r, http.StatusOK, "reports.html", view{Title: "Reports", User: sess,
			Data: v})
		return
	}
	v.TimeZone = prog.TimeZone
	// The download names the filter as the page resolved it (defaults
	// included), so that it holds exactly the figures shown.
	v.CSV = "/admin/reports.csv?" + url.Values{"program": {form.Program},
		"from": {form.From}, "to": {form.To}, "bucket": {form.Bucket}}.Encode()
	conn, done, err := s.clickHouse(ctx)
	if err != nil {
		s.fail(w, r, sess, http.StatusServiceUnavailable,
			"The reporting database is not available; try again later.", nil)
		s.log.Warn("Back-office reports without ClickHouse", "error", err)
		return
	}
	defer done()
	flows, err := reporting.PointFlows(ctx, conn, q)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	for _, f := range flows {
		v.Rows = append(v.Rows, flowRow{Start: bucketLabel(f.Start, q.Bucket),
			Issued: f.Issued, Redeemed: f.Redeemed, Expired: f.Expired,
			AdjustedDown: f.AdjustedDown, ClawedBack: f.ClawedBack, Returned: f.Returned,
			Forfeited: f.Forfeited, Moved: f.Moved, Net: f.Net, Events: f.Events})
	}
	v.Chart = chartOf(v.Rows)
	// Today's liability is every event stored, as the REST liability report
	// without ?at reads it: events may be dated a few minutes ahead of the
	// clock, and their points are already in the balances.
	owed, err := reporting.Liabilities(ctx, conn, time.Time{})
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	v.Liability = &reporting.Outstanding{Program: prog.Code}
	for i := range owed {
		if owed[i].Program == prog.Code {
			v.Liability = &owed[i]
		}
	}
	mine := []reporting.Outstanding{*v.Liability}
	if err := reporting.AddHeld(ctx, s.db, mine, time.Time{}, s.now()); err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	v.Liability = &mine[0]
	v.Expiring, err = reporting.PointsExpiring(ctx, s.db, prog.Code, s.now())
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	s.render(w, r, http.StatusOK, "reports.html", view{Title: "Reports", User: sess, Data: v})
}

// reportsCSV answers the flows of the page's filter as a CSV file.
func (s *Server) reportsCSV(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	_, q, prog, status, msg := s.reportQuery(ctx, r)
	if status == 0 && prog == nil {
		status, msg = http.StatusNotFound, "There is no program yet."
	}
	if status != 0 {
		s.fail(w, r, sess, status, msg, nil)
		return
	}
	conn, done, err := s.clickHouse(ctx)
	if err != nil {
		s.fail(w, r, sess, http.StatusServiceUnavailable,
			"The reporting database is not available; try again later.", nil)
		return
	}
	defer done()
	flows, err := reporting.PointFlows(ctx, conn, q)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	_ = cw.Write([]string{"program", "start", "issued", "redeemed", "expired",
		"adjusted_down", "clawed_back", "returned", "forfeited", "moved", "net", "events"})
	for _, f := range flows {
		// Only text can be mistaken for a formula; numbers go as they are.
		rec := []string{csvCell(f.Program), f.Start.Format(time.RFC3339)}
		for _, n := range []int64{f.Issued, f.Redeemed, f.Expired, f.AdjustedDown,
			f.ClawedBack, f.Returned, f.Forfeited, f.Moved, f.Net} {
			rec = append(rec, strconv.FormatInt(n, 10))
		}
		rec = append(rec, strconv.FormatUint(f.Events, 10))
		_ = cw.Write(rec)
	}
	cw.Flush()
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(
		`attachment; filename="flows-%s.csv"`, prog.Code))
	_, _ = w.Write(buf.Bytes())
}

// csvCell keeps a spreadsheet from reading a text cell as a formula, as the
// REST reports do: text starting with = + - @ or a control character gets a
// leading quote.
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// clickHouse returns a connection to the reporting database for one request
// and the function that gives it back.
func (s *Server) clickHouse(ctx context.Context) (driver.Conn, func(), error) {
	if s.opt.ClickHouse == nil {
		return nil, nil, errors.New("no ClickHouse connection configured")
	}
	conn, err := s.opt.ClickHouse(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open ClickHouse: %w", err)
	}
	done := func() {}
	if s.opt.CloseClickHouse {
		done = func() { _ = conn.Close() }
	}
	return conn, done, nil
}

// reportQuery reads the filter of a report request. status is non-zero,
// with msg for the user, when the filter is wrong; prog is nil when there
// is no program at all.
func (s *Server) reportQuery(ctx context.Context, r *http.Request) (form reportForm,
	q reporting.FlowQuery, prog *core.Program, status int, msg string) {
	get := func(k string) string { return strings.TrimSpace(r.URL.Query().Get(k)) }
	codes, err := s.programCodes(ctx)
	if err != nil {
		return form, q, nil, http.StatusInternalServerError, ""
	}
	form = reportForm{Programs: codes, Program: get("program"), From: get("from"),
		To: get("to"), Bucket: get("bucket")}
	if form.Bucket == "" {
		form.Bucket = string(reporting.Month)
	}
	if len(codes) == 0 {
		return form, q, nil, 0, ""
	}
	if form.Program == "" {
		form.Program = codes[0]
	}
	prog, err = s.read.Program(ctx, form.Program)
	if err != nil {
		return form, q, nil, http.StatusNotFound, "There is no such program."
	}
	loc, err := time.LoadLocation(prog.TimeZone)
	if err != nil {
		return form, q, nil, http.StatusInternalServerError, ""
	}
	today := s.now().In(loc)
	if form.To == "" {
		form.To = today.AddDate(0, 0, 1).Format(time.DateOnly)
	}
	if form.From == "" {
		form.From = time.Date(today.Year(), today.Month()-11, 1, 0, 0, 0, 0, loc).
			Format(time.DateOnly)
	}
	from, err1 := time.Parse(time.DateOnly, form.From)
	to, err2 := time.Parse(time.DateOnly, form.To)
	if err1 != nil || err2 != nil {
		return form, q, nil, http.StatusBadRequest, "Dates are written YYYY-MM-DD."
	}
	from = core.StartOfDay(from.Year(), from.Month(), from.Day(), loc)
	to = core.StartOfDay(to.Year(), to.Month(), to.Day(), loc)
	if !to.After(from) {
		return form, q, nil, http.StatusBadRequest, "The end date must follow the start date."
	}
	switch reporting.Bucket(form.Bucket) {
	case reporting.Day, reporting.Week, reporting.Month:
	default:
		return form, q, nil, http.StatusBadRequest, "Group by day, week or month."
	}
	q = reporting.FlowQuery{Program: prog.Code, TimeZone: prog.TimeZone,
		Bucket: reporting.Bucket(form.Bucket), From: from, To: to}
	return form, q, prog, 0, ""
}

// bucketLabel names a bucket by its first day, or its month.
func bucketLabel(start time.Time, b reporting.Bucket) string {
	if b == reporting.Month {
		return start.Format("2006-01")
	}
	return start.Format(time.DateOnly)
}

// Chart geometry, in viewBox units.
const (
	chartGroup  = 72  // width of one bucket
	chartBarW   = 18  // width of one bar
	chartLeft   = 16  // margin before the first bucket
	chartPlot   = 200 // height of the tallest bar
	chartTop    = 12  // margin above the tallest bar
	chartLabels = 28  // room for the bucket labels
)

// chartOf lays out three bars per bucket (issued, redeemed, expired), scaled
// to the largest of them. Negative magnitudes (a bucket where releases
// outweigh redemptions) are drawn as empty.
func chartOf(rows []flowRow) flowsChart {
	c := flowsChart{Width: chartLeft*2 + chartGroup*max(len(rows), 1),
		Height: chartTop + chartPlot + chartLabels, Base: chartTop + chartPlot}
	for _, r := range rows {
		c.Max = max(c.Max, r.Issued, r.Redeemed, r.Expired)
	}
	for i, r := range rows {
		x := chartLeft + i*chartGroup + (chartGroup-3*chartBarW)/2
		for j, b := range []struct {
			n     int64
			class string
			what  string
		}{{r.Issued, "issued", "issued"}, {r.Redeemed, "redeemed", "redeemed"},
			{r.Expired, "expired", "expired"}} {
			h := 0
			if c.Max > 0 && b.n > 0 {
				h = max(int(b.n*chartPlot/c.Max), 1)
			}
			c.Bars = append(c.Bars, chartBar{X: x + j*chartBarW, Y: c.Base - h,
				W: chartBarW - 2, H: h, Class: b.class,
				Label: fmt.Sprintf("%s: %s points %s", r.Start, formatPoints(b.n), b.what)})
		}
		c.Ticks = append(c.Ticks, chartTick{X: chartLeft + i*chartGroup + chartGroup/2,
			Label: r.Start})
	}
	return c
}
