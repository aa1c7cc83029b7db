package files

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/transform"

	"github.com/puntos-loyalty/puntos/core"
)

// Charsets a file may be declared in.
const (
	UTF8        = "utf-8"
	Latin1      = "latin-1"
	Windows1252 = "windows-1252"
)

// Format says how to read a file beyond what the file shows by itself: its
// character set and the pattern of its dates.
type Format struct {
	Charset    string
	DateFormat string
	dates      *datePattern
}

// ParseFormat checks a declared charset and date pattern. An empty charset
// is UTF-8; an empty pattern means ISO 8601. Errors: invalid.
func ParseFormat(charset, dateFormat string) (Format, error) {
	f := Format{DateFormat: strings.TrimSpace(dateFormat)}
	switch strings.ToLower(strings.TrimSpace(charset)) {
	case "", "utf-8", "utf8":
		f.Charset = UTF8
	case "latin-1", "latin1", "iso-8859-1", "iso8859-1", "l1":
		f.Charset = Latin1
	case "windows-1252", "cp1252":
		f.Charset = Windows1252
	default:
		return Format{}, core.Errorf(core.Invalid, "charset",
			"must be utf-8, latin-1 (iso-8859-1) or windows-1252, got %q", charset)
	}
	if f.DateFormat != "" {
		p, err := parseDatePattern(f.DateFormat)
		if err != nil {
			return Format{}, err
		}
		f.dates = p
	}
	return f, nil
}

// Column names of the bulk-points file, with the other names real exports
// give them.
var columnNames = map[string]string{
	"member": "member", "customer_ref": "member", "member_ref": "member", "customer": "member",
	"points": "points",
	"reason": "reason",
	"txn_id": "txn_id", "transaction_id": "txn_id", "txn": "txn_id",
	"effective_date": "effective_date", "effective_at": "effective_date",
	"effective":  "effective_date",
	"expires_at": "expires_at", "expiry": "expires_at", "expiry_date": "expires_at",
	"expires": "expires_at",
}

var requiredColumns = []string{"member", "points", "reason", "txn_id"}

// maxReason bounds the reason of one line.
const maxReason = 200

// maxRecord bounds one record (a line, or the lines a quoted field spans)
// of a file, in bytes as read (after the charset is decoded). A line of
// this format is well under 1 KiB; a longer record is refused as invalid
// without being held whole, read only to find where it ends.
const maxRecord = 64 << 10

// maxKept bounds the text kept of an invalid line's member, reason and
// transaction id, in bytes; a longer field is cut, with "…" at the end.
const maxKept = 256

// bound feeds the CSV reader and keeps a record from growing past
// maxRecord bytes. It follows the quoting of the stream as the CSV reader
// does (a quote opens a field only at its start, a doubled quote inside a
// quoted field is a quote, a line break inside a quoted field does not end
// the record), so that it knows where each record ends. When a record
// passes the bound, it skips the rest of that physical line without
// keeping it and ends the line there; the CSV reader then returns a
// record cut short, which reader.next reports as too long. If the record
// is inside a quoted field, which that line end does not close, the CSV
// reader gets the end of the file: the rest of the file is not read.
type bound struct {
	r       io.Reader
	sep     byte
	state   int
	rec     int    // bytes of the current record passed so far
	pending []byte // bytes read from r and not passed yet
	// over is set once the current record passed the bound, ended once its
	// line was ended, stop once the rest of the file is given up.
	over, ended, stop bool
	skip              [4 << 10]byte
}

// States of bound's reading of the quotes.
const (
	atField     = iota // at the start of a field
	inField            // in a field that is not quoted
	inQuotes           // in a quoted field
	afterQuote         // after a quote in a quoted field: its end, or half of ""
	badLineRest        // the rest of a line the CSV reader refuses: a quote out of place
)

// step takes one byte and reports whether it ends a record.
func (b *bound) step(c byte) bool {
	switch b.state {
	case atField:
		switch c {
		case '"':
			b.state = inQuotes
		case b.sep:
		case '\n':
			return true
		default:
			b.state = inField
		}
	case inField:
		switch c {
		case '\n':
			b.state = atField
			return true
		case b.sep:
			b.state = atField
		case '"':
			// A quote inside a field that is not quoted: the CSV reader
			// refuses the line and reads nothing more of it.
			b.state = badLineRest
		}
	case badLineRest:
		if c == '\n' {
			b.state = atField
			return true
		}
	case inQuotes:
		if c == '"' {
			b.state = afterQuote
		}
	case afterQuote:
		switch c {
		case '"':
			b.state = inQuotes
		case b.sep:
			b.state = atField
		case '\n':
			b.state = atField
			return true
		default:
			b.state = badLineRest
		}
	}
	return false
}

// clear forgets that the record just returned was cut short.
func (b *bound) clear() {
	if !b.stop {
		b.over, b.ended = false, false
	}
}

func (b *bound) Read(p []byte) (int, error) {
	if b.stop {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if b.over {
		if b.ended {
			// The CSV reader wants more of a record whose line was ended: it is
			// in a quoted field. Give the rest of the file up.
			b.stop = true
			return 0, io.EOF
		}
		b.skipLine()
		b.ended = true
		p[0] = '\n'
		if b.state != inQuotes {
			b.state, b.rec = atField, 0
		}
		return 1, nil
	}
	var n int
	var err error
	if len(b.pending) > 0 {
		n = copy(p, b.pending)
		b.pending = b.pending[n:]
	} else {
		n, err = b.r.Read(p)
	}
	sep := b.sep
	for i := 0; i < n; {
		if b.rec >= maxRecord && (p[i] != '\n' || b.state == inQuotes) {
			b.pending = append(bytes.Clone(p[i:n]), b.pending...)
			b.over = true
			if i == 0 {
				return b.Read(p)
			}
			return i, nil
		}
		// A run of bytes that leave the state as it is, up to the bound.
		j, lim := i, min(n, i+maxRecord-b.rec)
		switch b.state {
		case inField:
			for j < lim && p[j] != '\n' && p[j] != sep && p[j] != '"' {
				j++
			}
		case inQuotes, badLineRest:
			stop := byte('"')
			if b.state == badLineRest {
				stop = '\n'
			}
			if k := bytes.IndexByte(p[i:lim], stop); k >= 0 {
				j = i + k
			} else {
				j = lim
			}
		}
		if j > i {
			b.rec += j - i
			i = j
			continue
		}
		b.rec++
		if b.step(p[i]) {
			b.rec = 0
		}
		i++
	}
	return n, err
}

// firstLine reads ahead, without passing anything, up to the end of the
// first line or max bytes, and returns what it read.
func (b *bound) firstLine(max int) []byte {
	for len(b.pending) < max {
		if i := bytes.IndexByte(b.pending, '\n'); i >= 0 {
			return b.pending[:i]
		}
		buf := make([]byte, min(4<<10, max-len(b.pending)))
		n, _ := b.r.Read(buf) // an error comes back to the next Read
		b.pending = append(b.pending, buf[:n]...)
		if n == 0 {
			break
		}
	}
	return b.pending
}

// skipLine reads up to the end of the current physical line, keeping
// nothing of it.
func (b *bound) skipLine() {
	for {
		if i := bytes.IndexByte(b.pending, '\n'); i >= 0 {
			b.pending = b.pending[i+1:]
			return
		}
		n, err := b.r.Read(b.skip[:])
		b.pending = b.skip[:n]
		if err != nil && n == 0 {
			b.pending = nil
			return
		}
	}
}

// reader reads the lines of one bulk-points file as a stream.
type reader struct {
	csv     *csv.Reader
	bound   *bound
	cols    map[string]int
	ncols   int
	checkU8 bool
	dates   *datePattern
	loc     *time.Location
	now     time.Time
	// Separator is the field separator found in the header.
	sep rune
}

var bom = []byte{0xEF, 0xBB, 0xBF}

// newReader reads the header of a file and is ready for its lines. A UTF-8
// byte-order mark wins over a declared charset. Errors: invalid (the header
// is missing or names unknown or repeated columns).
func newReader(r io.Reader, f Format, loc *time.Location, now time.Time) (*reader, error) {
	raw := bufio.NewReaderSize(r, 64<<10)
	charset := f.Charset
	if b, _ := raw.Peek(3); bytes.Equal(b, bom) {
		_, _ = raw.Discard(3)
		charset = UTF8
	}
	var src io.Reader = raw
	switch charset {
	case Latin1:
		src = transform.NewReader(raw, charmap.ISO8859_1.NewDecoder())
	case Windows1252:
		src = transform.NewReader(raw, charmap.Windows1252.NewDecoder())
	}
	// The separator is found first, so that the bound follows the quoting
	// from the first byte.
	lim := &bound{r: src}
	sep := detectSeparator(lim.firstLine(64 << 10))
	lim.sep = byte(sep)
	br := bufio.NewReaderSize(lim, 64<<10)
	rd := &reader{checkU8: charset == UTF8, dates: f.dates, loc: loc, now: now, sep: sep,
		bound: lim}
	rd.csv = csv.NewReader(br)
	rd.csv.Comma = rd.sep
	rd.csv.FieldsPerRecord = -1
	rd.csv.ReuseRecord = true

	head, err := rd.csv.Read()
	if lim.over {
		return nil, core.Errorf(core.Invalid, "header", "is longer than %d KiB", maxRecord>>10)
	}
	if err == io.EOF {
		return nil, core.Errorf(core.Invalid, "file", "is empty: a header line is required")
	}
	if err != nil {
		return nil, core.Errorf(core.Invalid, "header", "cannot be read: %v", err)
	}
	lim.clear()
	rd.cols, rd.ncols = map[string]int{}, len(head)
	for i, h := range head {
		name := strings.ToLower(strings.TrimSpace(h))
		name = strings.ReplaceAll(name, " ", "_")
		canon, ok := columnNames[name]
		if !ok {
			return nil, core.Errorf(core.Invalid, "header",
				"column %d %q is not a known column (member, points, reason, txn_id, "+
					"effective_date, expires_at)", i+1, h)
		}
		if _, dup := rd.cols[canon]; dup {
			return nil, core.Errorf(core.Invalid, "header", "column %q appears twice", canon)
		}
		rd.cols[canon] = i
	}
	for _, c := range requiredColumns {
		if _, ok := rd.cols[c]; !ok {
			return nil, core.Errorf(core.Invalid, "header", "column %q is required", c)
		}
	}
	return rd, nil
}

// detectSeparator picks the comma or the semicolon, whichever the header
// line uses more outside quotes; a tie is a comma.
func detectSeparator(line []byte) rune {
	commas, semis, quoted := 0, 0, false
	for _, c := range line {
		switch {
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == ',':
			commas++
		case c == ';':
			semis++
		}
	}
	if semis > commas {
		return ';'
	}
	return ','
}

// next reads the next record. It returns io.EOF at the end; any other error
// is not about one line and stops the file.
func (rd *reader) next() (core.BatchLine, error) {
	rec, err := rd.csv.Read()
	over, stop := rd.bound.over, rd.bound.stop
	rd.bound.clear()
	if err == io.EOF {
		return core.BatchLine{}, io.EOF
	}
	var pe *csv.ParseError
	if over && (err == nil || errors.As(err, &pe)) {
		// A record longer than the bound: refused without being read whole.
		lineNo := 0
		if pe != nil {
			lineNo = pe.StartLine
		} else {
			lineNo, _ = rd.csv.FieldPos(0)
		}
		if stop {
			return invalidLine(int64(lineNo), "line", "a quoted field opened on this line "+
				"runs past %d KiB without being closed (check the quotes): the lines after "+
				"it, from line %d on, were not loaded", maxRecord>>10, lineNo+1), nil
		}
		return invalidLine(int64(lineNo), "line", "is longer than %d KiB, which no line of "+
			"this format needs (check for a runaway field); it was not read whole",
			maxRecord>>10), nil
	}
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, csv.ErrQuote) && pe.Line > pe.StartLine {
			// An unclosed quote swallows the lines after it into one field:
			// say so, or they would seem to have vanished.
			return invalidLine(int64(pe.StartLine), "line", "a quoted field opened on this "+
				"line is not closed properly; lines %d to %d were read as part of it "+
				"(check the quotes)", pe.StartLine+1, pe.Line), nil
		}
		return invalidLine(int64(pe.StartLine), "line", "%v", pe.Err), nil
	}
	if err != nil {
		return core.BatchLine{}, fmt.Errorf("read file: %w", err)
	}
	lineNo, _ := rd.csv.FieldPos(0)
	x := core.BatchLine{Line: int64(lineNo), Status: core.LineValid}
	get := func(col string) string {
		if i, ok := rd.cols[col]; ok && i < len(rec) {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	x.Member, x.TxnID, x.Reason = get("member"), get("txn_id"), get("reason")
	fail := func(field, format string, args ...any) (core.BatchLine, error) {
		x.Status, x.ErrorKind, x.ErrorField = core.LineInvalid, string(core.Invalid), field
		x.Error = clip(fmt.Sprintf(format, args...), 4*maxKept)
		x.Member, x.Reason, x.TxnID = clip(x.Member, maxKept), clip(x.Reason, maxKept),
			clip(x.TxnID, maxKept)
		return x, nil
	}
	if len(rec) != rd.ncols {
		return fail("line", "has %d fields, the header has %d", len(rec), rd.ncols)
	}
	for i, v := range rec {
		var why string
		switch {
		case rd.checkU8 && !utf8.ValidString(v):
			why = "is not valid UTF-8; if the file is Latin-1, say so (charset=latin-1 " +
				"on upload, or .latin1. in the name of a file dropped in the inbox)"
		case strings.IndexByte(v, 0) >= 0:
			why = "holds a NUL character, which the ledger cannot store"
		default:
			continue
		}
		name := "line"
		for n, j := range rd.cols {
			if j == i {
				name = n
			}
		}
		return fail(name, "%s", why)
	}

	// The fields, in the order of the format's description.
	if x.Member == "" {
		return fail("member", "is required")
	}
	if err := core.CheckRef("member", "", x.Member); err != nil {
		return fail("member", "%s", err.(*core.Error).Message)
	}
	p, err := parsePoints(get("points"))
	if err != nil {
		return fail("points", "%s", err)
	}
	x.Points = p
	if x.Reason == "" {
		return fail("reason", "is required")
	}
	if utf8.RuneCountInString(x.Reason) > maxReason {
		return fail("reason", "is longer than %d characters", maxReason)
	}
	if err := core.CheckReason(x.Reason, true); err != nil {
		hint := ""
		if strings.ContainsFunc(x.Reason, func(r rune) bool { return r >= 0x80 && r <= 0x9f }) {
			hint = " (a Windows-1252 file read as Latin-1 gives such characters: send it " +
				"with charset windows-1252)"
		}
		return fail("reason", "%s%s", err.(*core.Error).Message, hint)
	}
	if s := get("effective_date"); s != "" {
		t, err := rd.parseDate(s, false)
		if err != nil {
			return fail("effective_date", "%s", err)
		}
		if t.After(rd.now.Add(5 * time.Minute)) {
			return fail("effective_date", "is in the future")
		}
		if err := core.CheckSince1970("effective_date", t); err != nil {
			return fail("effective_date", "%s", err.(*core.Error).Message)
		}
		x.EffectiveAt = &t
	}
	if s := get("expires_at"); s != "" {
		t, err := rd.parseDate(s, true)
		if err != nil {
			return fail("expires_at", "%s", err)
		}
		if err := core.CheckExpiry("expires_at", t); err != nil {
			return fail("expires_at", "%s", err.(*core.Error).Message)
		}
		switch {
		case x.Points < 0:
			return fail("expires_at", "applies to credits only; this line takes points away")
		case !t.After(rd.now):
			return fail("expires_at", "is in the past")
		case x.EffectiveAt != nil && !t.After(*x.EffectiveAt):
			return fail("expires_at", "must be after the effective date")
		}
		x.ExpiresAt = &t
	}
	if x.TxnID == "" {
		return fail("txn_id", "is required: the line's own transaction id")
	}
	if err := core.CheckRef("txn_id", "", x.TxnID); err != nil {
		return fail("txn_id", "%s", err.(*core.Error).Message)
	}
	return x, nil
}

// clip cuts s to at most n bytes, on a character boundary, ending in "…".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - len("…")
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

func invalidLine(line int64, field, format string, args ...any) core.BatchLine {
	return core.BatchLine{Line: line, Status: core.LineInvalid, ErrorKind: string(core.Invalid),
		ErrorField: field, Error: fmt.Sprintf(format, args...)}
}

// parsePoints reads a signed whole number of points, non-zero and within
// core.MaxPoints either way.
func parsePoints(s string) (core.Points, error) {
	if s == "" {
		return 0, errors.New("is required")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("must be a whole number such as 1500 or -200, got %q", s)
	}
	if n == 0 {
		return 0, errors.New("must not be zero")
	}
	if n > int64(core.MaxPoints) || n < -int64(core.MaxPoints) {
		return 0, fmt.Errorf("must be at most %d either way", core.MaxPoints)
	}
	return core.Points(n), nil
}

// parseDate reads an ISO 8601 date or date-time, or a date in the declared
// pattern. A date alone is the start of that day in the program's time zone;
// as an expiry (end true) it is the end of that day, so that the points can
// be used through their whole last day.
func (rd *reader) parseDate(s string, end bool) (time.Time, error) {
	var t time.Time
	dateOnly := true
	switch {
	case rd.dates != nil:
		d, err := rd.dates.parse(s, rd.loc)
		if err != nil {
			return time.Time{}, err
		}
		t = d
	case len(s) == 10:
		d, err := time.Parse("2006-01-02", s)
		if err != nil {
			return time.Time{}, isoError(s)
		}
		t = d
	case len(s) > 10 && (s[10] == 'T' || s[10] == ' '):
		dateOnly = false
		iso := s[:10] + "T" + s[11:]
		d, err := time.Parse(time.RFC3339Nano, iso)
		if err != nil {
			d, err = time.ParseInLocation("2006-01-02T15:04:05", iso, rd.loc)
		}
		if err != nil {
			return time.Time{}, isoError(s)
		}
		t = d
	default:
		return time.Time{}, isoError(s)
	}
	if dateOnly {
		// The day's first instant (or, as an expiry, the next day's), also
		// on a day whose midnight a change of clocks skips.
		y, m, d := t.Date()
		if end {
			d++
		}
		t = core.StartOfDay(y, m, d, rd.loc)
	}
	return t.UTC(), nil
}

func isoError(s string) error {
	return fmt.Errorf("must be an ISO 8601 date such as 2026-03-01 or a date-time such as "+
		"2026-03-01T10:00:00-03:00 (four-digit years), or follow the declared date_format; "+
		"got %q", s)
}

// datePattern is a declared date layout such as DD/MM/YYYY or DD-MM-YY(1970).
type datePattern struct {
	parts []string // "YYYY", "YY", "MM", "DD" or a literal separator
	base  int      // first year of the window two-digit years fall in
}

// parseDatePattern compiles a pattern of DD, MM, YYYY or YY(NNNN) and
// separators. A two-digit year must say which hundred years it means: with
// YY(1970), 70 is 1970 and 69 is 2069. Errors: invalid.
func parseDatePattern(p string) (*datePattern, error) {
	dp := &datePattern{}
	bad := func(format string, args ...any) (*datePattern, error) {
		return nil, core.Errorf(core.Invalid, "date_format", format, args...)
	}
	seen := map[string]bool{}
	for i := 0; i < len(p); {
		rest := p[i:]
		switch {
		case strings.HasPrefix(rest, "YYYY"):
			dp.parts = append(dp.parts, "YYYY")
			seen["Y"], i = true, i+4
		case strings.HasPrefix(rest, "YY"):
			end := strings.IndexByte(rest, ')')
			if !strings.HasPrefix(rest, "YY(") || end != 7 {
				return bad("a two-digit year must say its hundred years, such as YY(1970) " +
					"for 1970-2069")
			}
			base, err := strconv.Atoi(rest[3:7])
			if err != nil {
				return bad("YY(NNNN) needs a four-digit first year")
			}
			dp.parts, dp.base = append(dp.parts, "YY"), base
			seen["Y"], i = true, i+8
		case strings.HasPrefix(rest, "MM"), strings.HasPrefix(rest, "DD"):
			dp.parts = append(dp.parts, rest[:2])
			seen[rest[:1]], i = true, i+2
		case strings.ContainsRune("/-. ", rune(p[i])):
			dp.parts = append(dp.parts, p[i:i+1])
			i++
		default:
			return bad("%q: use DD, MM, YYYY or YY(NNNN) with / - . or space between", p)
		}
	}
	if !seen["Y"] || !seen["M"] || !seen["D"] {
		return bad("%q must have a day (DD), a month (MM) and a year (YYYY)", p)
	}
	return dp, nil
}

// parse reads s in the pattern, as the start of that day in loc. Days and
// months may have one or two digits.
func (dp *datePattern) parse(s string, loc *time.Location) (time.Time, error) {
	var y, m, d int
	i := 0
	digits := func(min, max int) (int, bool) {
		j := i
		for j < len(s) && j-i < max && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j-i < min {
			return 0, false
		}
		n, _ := strconv.Atoi(s[i:j])
		i = j
		return n, true
	}
	for _, part := range dp.parts {
		ok := true
		switch part {
		case "YYYY":
			y, ok = digits(4, 4)
		case "YY":
			y, ok = digits(2, 2)
			y += dp.base - dp.base%100
			if y < dp.base {
				y += 100
			}
		case "MM":
			m, ok = digits(1, 2)
		case "DD":
			d, ok = digits(1, 2)
		default:
			ok = i < len(s) && s[i:i+1] == part
			i++
		}
		if !ok {
			return time.Time{}, fmt.Errorf("must follow the date_format %s, got %q",
				dp.String(), s)
		}
	}
	if i != len(s) {
		return time.Time{}, fmt.Errorf("must follow the date_format %s, got %q", dp.String(), s)
	}
	// The calendar decides whether the date exists; the zone only when
	// its day begins.
	if t := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC); t.Year() != y ||
		int(t.Month()) != m || t.Day() != d {
		return time.Time{}, fmt.Errorf("is not a calendar date: %q", s)
	}
	return core.StartOfDay(y, time.Month(m), d, loc), nil
}

func (dp *datePattern) String() string {
	var b strings.Builder
	for _, p := range dp.parts {
		b.WriteString(p)
		if p == "YY" {
			fmt.Fprintf(&b, "(%d)", dp.base)
		}
	}
	return b.String()
}
