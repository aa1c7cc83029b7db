package rest

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/reporting"
)

// ReportStore is what the report routes read: the events in ClickHouse and
// the ledger in PostgreSQL.
type ReportStore struct {
	// ClickHouse returns the connection to the reporting database, or an
	// error when it cannot be had (the reports that need it answer 503).
	ClickHouse func(ctx context.Context) (driver.Conn, error)
	Pool       *pgxpool.Pool
	// Settler computes one partner's settlement (the ledger).
	Settler reporting.Settler
}

// MountReports makes the report routes answer from st; until it is called
// they answer 503.
func (s *Server) MountReports(st *ReportStore) { s.reports = st }

// registerReports adds the report route. Every report answers JSON, or CSV
// with ?format=csv or Accept: text/csv.
func (s *Server) registerReports(v1 *mux.Router) {
	v1.HandleFunc("/programs/{program}/reports/{name}", s.getReport).Methods(http.MethodGet)
}

// reportTable is a report as rows of named columns, in order. Cells are
// int64, uint64, string or time.Time.
type reportTable struct {
	name    string
	program string
	cols    []string
	rows    [][]any
}

// reportParams is the query string of a report, parsed.
type reportParams struct {
	prog     *core.Program
	loc      *time.Location
	from, to time.Time // zero when not given
	bucket   reporting.Bucket
	q        url.Values
}

// reportFuncs builds each report; the key is the {name} of the route.
var reportFuncs = map[string]func(ctx context.Context, st *ReportStore,
	p reportParams) (*reportTable, error){
	"flows":       flowsReport,
	"liability":   liabilityReport,
	"expiring":    expiringReport,
	"breakage":    breakageReport,
	"membership":  membershipReport,
	"settlement":  settlementReport,
	"top-rewards": topRewardsReport,
}

// getReport answers GET /v1/programs/{program}/reports/{name}.
func (s *Server) getReport(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	build, ok := reportFuncs[vars["name"]]
	if !ok {
		names := make([]string, 0, len(reportFuncs))
		for n := range reportFuncs {
			names = append(names, n)
		}
		slices.Sort(names)
		s.writeError(w, r, core.Errorf(core.NotFound, "name", "no report %q; there are %s",
			vars["name"], strings.Join(names, ", ")))
		return
	}
	if err := checkQuery(r.URL.RawQuery, r.URL.Query(), "report", reportQueryNames); err != nil {
		s.writeError(w, r, err)
		return
	}
	asCSV, err := wantsCSV(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.reports == nil {
		s.writeError(w, r, core.Errorf(core.Unavailable, "", "reporting is not configured"))
		return
	}
	prog, err := s.read.Program(r.Context(), vars["program"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p, err := parseReportParams(prog, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}

	t, err := build(r.Context(), s.reports, p)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	t.name, t.program = vars["name"], prog.Code
	if asCSV {
		writeReportCSV(w, t)
		return
	}
	writeReportJSON(w, t)
}

// reportQueryNames are the query parameters the reports read.
var reportQueryNames = []string{"at", "bucket", "by", "days", "format", "from", "limit", "to",
	"value_per_point"}

// checkQuery refuses a parameter that is not among names (those of a
// report, or of a settlement), or one given twice: a misspelt from would
// otherwise answer the whole history, and of two values one would be
// dropped without a word.
func checkQuery(raw string, q url.Values, what string, names []string) error {
	if strings.Contains(raw, ";") {
		// Go's query parser drops a pair holding one, silently.
		return core.Errorf(core.Invalid, "query", "parameters are separated by &, not ;")
	}
	for name, vs := range q {
		if !slices.Contains(names, name) {
			return core.Errorf(core.Invalid, name, "is not a %s parameter; they are %s",
				what, strings.Join(names, ", "))
		}
		if len(vs) > 1 {
			return core.Errorf(core.Invalid, name, "is given %d times; give it once", len(vs))
		}
	}
	return nil
}

// wantsCSV reads ?format= (json or csv), then the Accept header.
func wantsCSV(r *http.Request) (bool, error) {
	switch f := r.URL.Query().Get("format"); f {
	case "csv":
		return true, nil
	case "json":
		return false, nil
	case "":
		return strings.Contains(r.Header.Get("Accept"), "text/csv"), nil
	default:
		return false, core.Errorf(core.Invalid, "format", "must be json or csv, not %q", f)
	}
}

// parseReportParams reads from, to and bucket. A bound is an RFC 3339
// instant or a date (2026-03-01), which means that day's first instant in
// the program's time zone.
func parseReportParams(prog *core.Program, r *http.Request) (reportParams, error) {
	p := reportParams{prog: prog, q: r.URL.Query(), bucket: reporting.Month}
	loc, err := time.LoadLocation(prog.TimeZone)
	if err != nil {
		return p, fmt.Errorf("program %s: time zone %q: %w", prog.Code, prog.TimeZone, err)
	}
	p.loc = loc
	for _, b := range []struct {
		field string
		t     *time.Time
	}{{"from", &p.from}, {"to", &p.to}} {
		v := r.URL.Query().Get(b.field)
		if v == "" {
			continue
		}
		if *b.t, err = reportBound(b.field, v, loc, false); err != nil {
			return p, err
		}
	}
	if !p.from.IsZero() && !p.to.IsZero() && !p.from.Before(p.to) {
		return p, core.Errorf(core.Invalid, "to", "must be after from: the period includes from and "+
			"excludes to (for one day, to is the next day)")
	}
	if v := r.URL.Query().Get("bucket"); v != "" {
		switch reporting.Bucket(v) {
		case reporting.Day, reporting.Week, reporting.Month:
			p.bucket = reporting.Bucket(v)
		default:
			return p, core.Errorf(core.Invalid, "bucket", "must be day, week or month")
		}
	}
	return p, nil
}

// parseBound reads the query parameter field: an RFC 3339 instant, or a
// date (2026-03-01) in loc, which means that day's first instant, or with
// endOfDay its last (the next day's first), as "at 31 October" means once
// that day is over.
func parseBound(field, v string, loc *time.Location, endOfDay bool) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return time.Time{}, core.Errorf(core.Invalid, field,
			"must be a date (2026-03-01) or an RFC 3339 instant (2026-03-01T00:00:00-03:00), "+
				"not %q", v)
	}
	y, m, dd := d.Date()
	if endOfDay {
		dd++
	}
	// A day whose midnight a change of clocks skips begins at the first
	// instant it has, not at the day before's 23:00.
	return core.StartOfDay(y, m, dd, loc), nil
}

// reportBound is parseBound for a report, which counts whole seconds: the
// event store keeps no fraction of a second, so a bound inside a second
// could not say which of that second's postings fall before it.
func reportBound(field, v string, loc *time.Location, endOfDay bool) (time.Time, error) {
	t, err := parseBound(field, v, loc, endOfDay)
	if err == nil && t.Nanosecond() != 0 {
		return time.Time{}, core.Errorf(core.Invalid, field, "reports count whole seconds: "+
			"give %q without its fraction of a second", v)
	}
	return t, err
}

// period requires both bounds.
func (p reportParams) period() error {
	if p.from.IsZero() {
		return core.Errorf(core.Invalid, "from", "is required for this report")
	}
	if p.to.IsZero() {
		return core.Errorf(core.Invalid, "to", "is required for this report")
	}
	return nil
}

func (p reportParams) flowQuery() reporting.FlowQuery {
	return reporting.FlowQuery{Program: p.prog.Code, TimeZone: p.prog.TimeZone,
		Bucket: p.bucket, From: p.from, To: p.to}
}

// clickhouse gets the reporting connection; failing, the report is
// unavailable.
func (st *ReportStore) clickhouse(ctx context.Context) (driver.Conn, error) {
	if st.ClickHouse == nil {
		return nil, core.Errorf(core.Unavailable, "", "ClickHouse is not configured")
	}
	conn, err := st.ClickHouse(ctx)
	if err != nil {
		return nil, core.Errorf(core.Unavailable, "", "ClickHouse is not reachable: %v", err)
	}
	return conn, nil
}

var flowCols = []string{"issued", "redeemed", "expired", "adjusted_down", "clawed_back",
	"returned", "forfeited", "moved", "net", "events"}

func flowCells(f reporting.Flows) []any {
	return []any{f.Issued, f.Redeemed, f.Expired, f.AdjustedDown, f.ClawedBack, f.Returned,
		f.Forfeited, f.Moved, f.Net, f.Events}
}

// flowsReport is the point flows per bucket, or per bucket and value of
// ?by=channel|rule|partner|tier.
func flowsReport(ctx context.Context, st *ReportStore, p reportParams) (*reportTable, error) {
	conn, err := st.clickhouse(ctx)
	if err != nil {
		return nil, err
	}
	by := p.q["by"]
	if len(by) == 0 || by[0] == "" {
		fs, err := reporting.PointFlows(ctx, conn, p.flowQuery())
		if err != nil {
			return nil, err
		}
		t := &reportTable{cols: append([]string{"start"}, flowCols...)}
		for _, f := range fs {
			t.rows = append(t.rows, append([]any{f.Start}, flowCells(f)...))
		}
		return t, nil
	}

	dim, err := reporting.ParseDimension(by[0])
	if err != nil {
		return nil, err
	}
	fs, err := reporting.PointFlowsBy(ctx, conn, p.flowQuery(), dim)
	if err != nil {
		return nil, err
	}
	t := &reportTable{cols: append([]string{"start", string(dim)}, flowCols...)}
	for _, f := range fs {
		t.rows = append(t.rows, append([]any{f.Start, f.Key}, flowCells(f.Flows)...))
	}
	return t, nil
}

// liabilityReport is the points outstanding at ?at (or ?to; now when
// neither), valued at ?value_per_point when given.
func liabilityReport(ctx context.Context, st *ReportStore,
	p reportParams) (*reportTable, error) {
	conn, err := st.clickhouse(ctx)
	if err != nil {
		return nil, err
	}
	at := p.to
	if v := p.q.Get("at"); v != "" {
		if at, err = reportBound("at", v, p.loc, true); err != nil {
			return nil, err
		}
	}
	all, err := reporting.Liabilities(ctx, conn, at)
	if err != nil {
		return nil, err
	}
	mine := []reporting.Outstanding{{Program: p.prog.Code}}
	for _, o := range all {
		if o.Program == p.prog.Code {
			mine[0] = o
		}
	}
	if err := reporting.AddHeld(ctx, st.Pool, mine, at, time.Now()); err != nil {
		return nil, err
	}
	perPoint := p.q.Get("value_per_point")
	if perPoint == "" {
		perPoint = "0"
	}
	vals, err := reporting.ValueLiabilities(mine, perPoint)
	if err != nil {
		return nil, err
	}
	v := vals[0]
	return &reportTable{cols: []string{"points", "held", "events", "value_per_point", "value"},
		rows: [][]any{{v.Points, mine[0].Held, v.Events, v.PerPoint, v.Value}}}, nil
}

// expiringReport is the points expiring within ?days (30,60,90 by default)
// of now.
func expiringReport(ctx context.Context, st *ReportStore, p reportParams) (*reportTable, error) {
	var days []int
	if v := p.q.Get("days"); v != "" {
		for _, part := range strings.Split(v, ",") {
			d, err := strconv.Atoi(strings.TrimSpace(part))
			if err != nil {
				return nil, core.Errorf(core.Invalid, "days", "must be whole numbers, as 30,60,90")
			}
			days = append(days, d)
		}
	}
	at := time.Now()
	if v := p.q.Get("at"); v != "" {
		var err error
		if at, err = reportBound("at", v, p.loc, true); err != nil {
			return nil, err
		}
	}
	es, err := reporting.PointsExpiring(ctx, st.Pool, p.prog.Code, at, days...)
	if err != nil {
		return nil, err
	}
	t := &reportTable{cols: []string{"days", "points", "lots", "members"}}
	for _, e := range es {
		t.rows = append(t.rows, []any{int64(e.Days), e.Points, e.Lots, e.Members})
	}
	return t, nil
}

// breakageReport is expired over issued in [from, to).
func breakageReport(ctx context.Context, st *ReportStore, p reportParams) (*reportTable, error) {
	if err := p.period(); err != nil {
		return nil, err
	}
	conn, err := st.clickhouse(ctx)
	if err != nil {
		return nil, err
	}
	b, err := reporting.BreakageRate(ctx, conn, p.prog.Code, p.from, p.to)
	if err != nil {
		return nil, err
	}
	return &reportTable{cols: []string{"from", "to", "issued", "expired", "rate"},
		rows: [][]any{{b.From.In(p.loc), b.To.In(p.loc), b.Issued, b.Expired, b.Rate}}}, nil
}

// membershipReport is enrollments and active members per bucket.
func membershipReport(ctx context.Context, st *ReportStore,
	p reportParams) (*reportTable, error) {
	if err := p.period(); err != nil {
		return nil, err
	}
	conn, err := st.clickhouse(ctx)
	if err != nil {
		return nil, err
	}
	as, err := reporting.Membership(ctx, conn, st.Pool, p.flowQuery())
	if err != nil {
		return nil, err
	}
	t := &reportTable{cols: []string{"start", "enrolled", "active"}}
	for _, a := range as {
		t.rows = append(t.rows, []any{a.Start, a.Enrolled, a.Active})
	}
	return t, nil
}

// settlementReport is captures minus refunds and the operator's reversals
// per partner in [from, to).
func settlementReport(ctx context.Context, st *ReportStore,
	p reportParams) (*reportTable, error) {
	if err := p.period(); err != nil {
		return nil, err
	}
	ss, err := reporting.Settlements(ctx, st.Pool, st.Settler, p.prog.Code, p.from, p.to)
	if err != nil {
		return nil, err
	}
	t := &reportTable{cols: []string{"partner", "currency", "point_value_now", "captured",
		"refunded", "reversed", "net", "value", "transactions"}}
	for _, s := range ss {
		t.rows = append(t.rows, []any{s.Partner, s.Currency, s.PointValueNow, int64(s.Captured),
			int64(s.Refunded), int64(s.Reversed), int64(s.Net), s.Value, int64(s.Lines)})
	}
	return t, nil
}

// topRewardsReport is the rewards most ordered in [from, to), ?limit of
// them (10 by default).
func topRewardsReport(ctx context.Context, st *ReportStore,
	p reportParams) (*reportTable, error) {
	if err := p.period(); err != nil {
		return nil, err
	}
	limit := 10
	if v := p.q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, core.Errorf(core.Invalid, "limit", "must be a whole number")
		}
		limit = n
	}
	rs, err := reporting.TopRewards(ctx, st.Pool, p.prog.Code, p.from, p.to, limit)
	if err != nil {
		return nil, err
	}
	t := &reportTable{cols: []string{"reward", "name", "orders", "quantity", "points"}}
	for _, r := range rs {
		t.rows = append(t.rows, []any{r.Reward, r.Name, r.Orders, r.Quantity, r.Points})
	}
	return t, nil
}

// writeReportJSON answers {"report", "program", "columns", "rows"}, each row
// an object whose keys follow the columns' order.
func writeReportJSON(w http.ResponseWriter, t *reportTable) {
	var buf bytes.Buffer
	head, _ := json.Marshal(map[string]any{"report": t.name, "program": t.program,
		"columns": t.cols})
	buf.Write(head[:len(head)-1])
	buf.WriteString(`,"rows":[`)
	for i, row := range t.rows {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteByte('{')
		for j, cell := range row {
			if j > 0 {
				buf.WriteByte(',')
			}
			k, _ := json.Marshal(t.cols[j])
			v, _ := json.Marshal(cell)
			buf.Write(k)
			buf.WriteByte(':')
			buf.Write(v)
		}
		buf.WriteByte('}')
	}
	buf.WriteString("]}\n")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// writeReportCSV answers a header line and one line per row.
func writeReportCSV(w http.ResponseWriter, t *reportTable) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition",
		fmt.Sprintf(`attachment; filename="%s-%s.csv"`, safeFileName(t.program), t.name))
	w.WriteHeader(http.StatusOK)
	cw := csv.NewWriter(w)
	_ = cw.Write(t.cols)
	for _, row := range t.rows {
		line := make([]string, len(row))
		for i, cell := range row {
			line[i] = reportCell(cell)
		}
		_ = cw.Write(line)
	}
	cw.Flush()
}

// reportCell writes one cell. Numbers are written as they are, negative
// ones included: we format them ourselves, so they hold nothing but digits
// and a sign, and a spreadsheet reads them as numbers. Text may come from
// outside (a partner code, a reward's name, a channel), so csvCell escapes
// what a spreadsheet would run as a formula: text starting with =, +, -, @,
// a tab or a carriage return gets a leading single quote.
func reportCell(v any) string {
	switch c := v.(type) {
	case int64:
		return strconv.FormatInt(c, 10)
	case uint64:
		return strconv.FormatUint(c, 10)
	case time.Time:
		return c.Format(time.RFC3339)
	case string:
		return csvCell(c)
	default:
		return csvCell(fmt.Sprint(c))
	}
}

// safeFileName keeps the characters of a file name that need no quoting.
func safeFileName(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x80 && (r == '-' || r == '_' || r == '.' ||
			'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return r
		}
		return '_'
	}, s)
}
