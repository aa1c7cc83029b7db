package conversion

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/puntos-loyalty/puntos/core"
)

// In the file flavour, a partner whose later answer file contradicts what
// settled a conversion (it denies one it confirmed, or credits one it
// refused) is a dispute for a person, as the same change of mind over HTTP
// is; and an answer file that cannot be read is what the waiting
// conversion's last error names (it used to say "not answered yet").
func TestFileAnswersContradictingASettlement(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	dir := t.TempDir()
	ext := skyMiles(core.FlavourFile)
	const member = "56999999999"
	prog := e.program(ext, member, 9000)
	w := New(e.ledger, quietLog(), Options{Clock: e.clock, FileDir: dir,
		RetryMin: time.Minute})
	in := filepath.Join(dir, prog, ext.Code, "in")
	answer := func(name string, lines ...string) {
		t.Helper()
		if err := os.MkdirAll(in, 0o750); err != nil {
			t.Fatal(err)
		}
		body := "txn_id,status,reference,code\n" + strings.Join(lines, "\n") + "\n"
		if err := os.WriteFile(filepath.Join(in, name), []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	step := func() {
		t.Helper()
		e.advance(2 * time.Minute)
		if _, err := w.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fa := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 1000,
		AccountID: "FA000001"})
	fb := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 2000,
		AccountID: "FB000001"})
	step()
	answer("a1.csv", fa.TxnID+",confirmed,FL-A,", fb.TxnID+",refused,,unknown_account")
	step()
	if a, b := e.conversion(prog, member, fa.ID), e.conversion(prog, member, fb.ID); a.Status !=
		core.ConversionConfirmed || b.Status != core.ConversionRefused {
		t.Fatalf("after the answers: %s and %s, want confirmed and refused", a.Status, b.Status)
	}
	e.wantBalance(prog, member, 8000, 0)

	// The partner changes its mind in a later file.
	answer("a4.csv", fa.TxnID+",refused,,account_closed", fb.TxnID+",confirmed,FL-B,")
	e.advance(time.Hour)
	rep, err := w.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Mismatches) != 2 {
		t.Fatalf("reconciliation %+v, want both conversions disputed", rep)
	}
	for _, id := range []string{fa.ID, fb.ID} {
		c := e.conversion(prog, member, id)
		if c.DisputedAt == nil || !strings.Contains(c.Dispute, "contradict") ||
			!strings.Contains(c.Dispute, "a4.csv") {
			t.Fatalf("conversion %s: dispute %q at %v, want the contradiction named", id,
				c.Dispute, c.DisputedAt)
		}
	}

	// A malformed answer file: the next conversion waits, and says why.
	fc := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 500,
		AccountID: "FC000001"})
	step()
	if err := os.WriteFile(filepath.Join(in, "a0.csv"), []byte("foo,\"bar,,\n"),
		0o640); err != nil {
		t.Fatal(err)
	}
	step()
	if c := e.conversion(prog, member, fc.ID); c.Status != core.ConversionPending ||
		!strings.Contains(c.LastError, "a0.csv") {
		t.Fatalf("conversion behind a malformed file: %s, last error %q; want pending, "+
			"naming a0.csv", c.Status, c.LastError)
	}
	e.wantBalance(prog, member, 7500, 500)
	e.check()
}

// Answer files as partners really write them: without the header line, with
// a spreadsheet's byte order mark, with spaces and capitals around the
// status. Each of them settles its conversion; before, the first line of a
// file without a header was skipped as if it were one. A line that answers
// a conversion with neither a confirmation and its reference nor a refusal
// and its code decides nothing, and the conversion's last error names it.
func TestFileAnswersAsPartnersWriteThem(t *testing.T) {
	f := newFileAnswers(t, "56988888888", 10000)
	e, prog, member, write, step, convert := f.e, f.prog, f.member, f.write, f.step, f.convert
	noHeader := convert(1000, "NH000001")
	bom := convert(2000, "BM000001")
	spaced := convert(500, "SP000001")
	vague := convert(300, "VG000001")
	step()
	write("b1.csv", noHeader.TxnID+",confirmed,NH-REF,\n")
	write("b2.csv", "\ufefftxn_id,status,reference,code\n"+bom.TxnID+",refused,,unknown_account\n")
	write("b3.csv", "txn_id,status,reference,code\n"+spaced.TxnID+", Confirmed , SP-REF ,\n"+
		vague.TxnID+",ok,,\n")
	step()
	for _, want := range []struct {
		c      core.Conversion
		status string
	}{{noHeader, core.ConversionConfirmed}, {bom, core.ConversionRefused},
		{spaced, core.ConversionConfirmed}, {vague, core.ConversionPending}} {
		if got := e.conversion(prog, member, want.c.ID); got.Status != want.status {
			t.Errorf("conversion to %s: %s, want %s (last error %q)", want.c.AccountID,
				got.Status, want.status, got.LastError)
		}
	}
	if c := e.conversion(prog, member, spaced.ID); c.Reference != "SP-REF" {
		t.Errorf("reference kept as %q, want SP-REF", c.Reference)
	}
	if c := e.conversion(prog, member, vague.ID); !strings.Contains(c.LastError,
		"line 3 of b3.csv") || !strings.Contains(c.LastError, `"ok"`) {
		t.Errorf("the undecided conversion's last error is %q, want line 3 of b3.csv "+
			"and its status named", c.LastError)
	}
	// 10,000 less the two confirmed (1,000 and 500) and the refused one
	// given back; the vague one's 300 points stay held.
	e.wantBalance(prog, member, 8200, 300)

	// The partner mends the line in its file: the conversion settles. (A
	// refusal in a later file beside the "ok" would be a contradiction for
	// a person: "ok" may have meant a credit.)
	write("b3.csv", "txn_id,status,reference,code\n"+spaced.TxnID+", Confirmed , SP-REF ,\n"+
		vague.TxnID+",refused,,account_closed\n")
	step()
	if c := e.conversion(prog, member, vague.ID); c.Status != core.ConversionRefused {
		t.Fatalf("after the mended answer: %s, want refused", c.Status)
	}
	e.wantBalance(prog, member, 8500, 0)
	e.check()
}

// From the attack on the above: invisible characters a spreadsheet or an
// editor leaves (a byte order mark on a file without a header, or in the
// middle of two files put together; a zero-width space after the id) no
// longer hide an answer; an undecided line is named by the line of the
// file it is on, even after a field that spans lines; and a confirmation
// without its reference beside a refusal is a contradiction for a person,
// not a refusal that gives the points back while the partner may have
// credited them.
func TestFileAnswersWithInvisibleCharacters(t *testing.T) {
	f := newFileAnswers(t, "56977777777", 10000)
	e, prog, member, write, step, convert := f.e, f.prog, f.member, f.write, f.step, f.convert
	bomFirst := convert(1000, "BF000001")
	bomMiddle := convert(2000, "BM000002")
	zeroWidth := convert(500, "ZW000001")
	quoted := convert(300, "QU000001")
	torn := convert(400, "TO000001")
	step()
	write("c1.csv", "\ufeff"+bomFirst.TxnID+",confirmed,BF-REF,\n"+
		"\ufefftxn_id,status,reference,code\n"+bomMiddle.TxnID+",refused,,closed\n"+
		zeroWidth.TxnID+"\u200b,confirmed,ZW-REF,\n")
	write("c2.csv", "txn_id,status,reference,code\n"+
		"someone-else,refused,,\"a code\nover two lines\"\n"+
		quoted.TxnID+",pending,,\n"+
		torn.TxnID+",refused,,unknown_account\n")
	write("c3.csv", torn.TxnID+",confirmed,,\n")
	step()
	f.want([]settled{{bomFirst, core.ConversionConfirmed, ""},
		{bomMiddle, core.ConversionRefused, ""},
		{zeroWidth, core.ConversionConfirmed, ""},
		{quoted, core.ConversionPending, "line 4 of c2.csv"},
		{torn, core.ConversionPending, "contradict"}})
	// 10,000 less the five (4,200), then the refused 2,000 back; 300 and
	// 400 still held.
	e.wantBalance(prog, member, 7800, 700)
	e.check()
}

// fileAnswers is a program with one member holding points, a worker of
// the file flavour under a folder of the test's, and what the answer
// file tests do with them.
type fileAnswers struct {
	t       *testing.T
	e       *env
	prog    string
	member  string
	in      string
	write   func(name, body string)
	step    func()
	convert func(points int64, account string) core.Conversion
}

func newFileAnswers(t *testing.T, member string, points core.Points) *fileAnswers {
	t.Helper()
	e := newEnv(t)
	dir := t.TempDir()
	ext := skyMiles(core.FlavourFile)
	prog := e.program(ext, member, points)
	w := New(e.ledger, quietLog(), Options{Clock: e.clock, FileDir: dir,
		RetryMin: time.Minute})
	in := filepath.Join(dir, prog, ext.Code, "in")
	if err := os.MkdirAll(in, 0o750); err != nil {
		t.Fatal(err)
	}
	return &fileAnswers{t: t, e: e, prog: prog, member: member, in: in,
		write: func(name, body string) {
			t.Helper()
			if err := os.WriteFile(filepath.Join(in, name), []byte(body), 0o640); err != nil {
				t.Fatal(err)
			}
		},
		step: func() {
			t.Helper()
			e.advance(2 * time.Minute)
			if _, err := w.Step(context.Background()); err != nil {
				t.Fatal(err)
			}
		},
		convert: func(n int64, account string) core.Conversion {
			return e.convert(prog, member, core.ConvertRequest{External: ext.Code,
				Points: core.Points(n), AccountID: account})
		}}
}

// Three more shapes of answer: a file a spreadsheet saved as "Unicode
// text" (UTF-16 with its byte order mark) settles its conversions as the
// same file in UTF-8 would, where before it matched nothing and the
// conversions waited without a word; a conversion confirmed twice under
// different references, and a refusal beside a status that spells a
// confirmation among stray marks, are contradictions for a person (before,
// the last reference won, and the refusal gave the points back). A file
// with NUL bytes that is no UTF-16 is refused by name.
func TestFileAnswersInOtherEncodingsAndTwice(t *testing.T) {
	f := newFileAnswers(t, "56966666666", 10000)
	e, prog, member, write, step, convert := f.e, f.prog, f.member, f.write, f.step, f.convert
	wide := convert(1000, "WI000001")
	wideRefused := convert(2000, "WR000001")
	twice := convert(500, "TW000001")
	marked := convert(300, "MK000001")
	step()
	write("d1.csv", utf16le("txn_id,status,reference,code\r\n"+wide.TxnID+",confirmed,WI-REF,\r\n"+
		wideRefused.TxnID+",refused,,unknown_account\r\n"))
	write("d2.csv", twice.TxnID+",confirmed,TW-1,\n"+marked.TxnID+",CONFIRMED.,MK-REF,\n")
	write("d3.csv", twice.TxnID+",confirmed,TW-2,\n"+marked.TxnID+",refused,,unknown_account\n")
	step()
	f.want([]settled{{wide, core.ConversionConfirmed, ""},
		{wideRefused, core.ConversionRefused, ""},
		{twice, core.ConversionPending, `"TW-1" in d2.csv, "TW-2" in d3.csv`},
		{marked, core.ConversionPending, "contradict"}})
	if c := e.conversion(prog, member, wide.ID); c.Reference != "WI-REF" {
		t.Errorf("reference from the UTF-16 file kept as %q, want WI-REF", c.Reference)
	}
	// 10,000 less the four (3,800), the refused 2,000 back; 500 and 300
	// still held.
	e.wantBalance(prog, member, 8200, 800)

	late := convert(100, "LA000001")
	step()
	write("d0.csv", "txn_id,status\n"+late.TxnID+"\x00,confirmed,LA-REF,\n")
	step()
	if c := e.conversion(prog, member, late.ID); c.Status != core.ConversionPending ||
		!strings.Contains(c.LastError, "d0.csv") || !strings.Contains(c.LastError, "line 2") {
		t.Fatalf("conversion behind a file with a NUL byte: %s, last error %q; want pending, "+
			"naming d0.csv and its line 2", c.Status, c.LastError)
	}
	e.wantBalance(prog, member, 8100, 900)
	e.check()
}

// From the attack on the reading of other encodings: a spreadsheet's
// "Unicode text" is UTF-16 with tabs between the fields, and a refusal in
// another file used to decide alone while that file's confirmation went
// unread (the points went back to a member the partner had credited). Tabs
// and semicolons now separate fields as commas do; a line naming the
// conversion that still does not read, or a status that is neither a
// decision nor a known "not yet" ("confimed", "rejected"), beside a
// decision, is a contradiction for a person; UTF-32 and NUL characters
// are refused by name.
func TestFileAnswersSeparatorsAndUnknownWords(t *testing.T) {
	f := newFileAnswers(t, "56955555555", 10000)
	e, prog, member, write, step, convert := f.e, f.prog, f.member, f.write, f.step, f.convert
	tabbed := convert(1000, "TB000001")
	semi := convert(500, "SE000001")
	typo := convert(300, "TY000001")
	rejected := convert(200, "RJ000001")
	waiting := convert(100, "WA000001")
	garbled := convert(100, "GA000001")
	step()
	write("e1.csv", utf16le("txn_id\tstatus\treference\tcode\r\n"+
		tabbed.TxnID+"\tconfirmed\tAIR-778812\t\r\n"))
	write("e2.csv", "txn_id;status;reference;code\n"+semi.TxnID+";confirmed;SE-REF;\n"+
		typo.TxnID+";confimed;TY-REF;\n"+rejected.TxnID+";rejected;;\n"+
		waiting.TxnID+";pending;;\n"+"note: "+garbled.TxnID+" credited as GA-REF\n")
	write("e3.csv", tabbed.TxnID+",refused,,E42\n"+typo.TxnID+",refused,,E42\n"+
		rejected.TxnID+",confirmed,RJ-REF,\n"+waiting.TxnID+",confirmed,WA-REF,\n"+
		garbled.TxnID+",refused,,E42\n")
	step()
	f.want([]settled{{tabbed, core.ConversionPending, "contradict"},
		{semi, core.ConversionConfirmed, ""},
		{typo, core.ConversionPending, `"confimed"`},
		{rejected, core.ConversionPending, `"rejected"`},
		{waiting, core.ConversionConfirmed, ""},
		{garbled, core.ConversionPending, "line 6 of e2.csv names it"}})
	if c := e.conversion(prog, member, semi.ID); c.Reference != "SE-REF" {
		t.Errorf("reference from the semicolon file kept as %q, want SE-REF", c.Reference)
	}
	// 10,000 less the six (2,200); the four held wait for a person.
	e.wantBalance(prog, member, 7800, 1600)

	for name, body := range map[string]string{
		"e0.csv": "\xff\xfe\x00\x00t\x00\x00\x00",
		"d0.csv": utf16le("txn_id,status\n" + "x\x00,confirmed,R,\n"),
	} {
		late := convert(100, "L"+strings.ToUpper(name[:1])+"000001")
		step()
		write(name, body)
		step()
		if c := e.conversion(prog, member, late.ID); c.Status != core.ConversionPending ||
			!strings.Contains(c.LastError, name) {
			t.Errorf("conversion behind %s: %s, last error %q; want pending, naming the file",
				name, c.Status, c.LastError)
		}
		if err := os.Remove(filepath.Join(f.in, name)); err != nil {
			t.Fatal(err)
		}
	}
	e.check()
}

// From the second attack on answer files: a file with lone carriage
// returns (a spreadsheet on an old Mac) read as one line, which was taken
// for the header; a transaction id in capitals, or without its hyphens,
// matched nothing; a refusal tucked inside a quoted reference went unseen.
// Each let the other file's answer decide alone.
func TestFileAnswersLineEndsAndIDShapes(t *testing.T) {
	f := newFileAnswers(t, "56944444444", 10000)
	e, prog, member, write, step, convert := f.e, f.prog, f.member, f.write, f.step, f.convert
	macCR := convert(1000, "MC000001")
	upper := convert(500, "UP000001")
	upperBeside := convert(300, "UB000001")
	bare := convert(200, "BA000001")
	tucked := convert(100, "TU000001")
	echoed := convert(100, "EC000001")
	extra := convert(100, "EX000001")
	comma := convert(100, "CO000001")
	nel := convert(100, "NE000001")
	joined := convert(100, "JO000001")
	spliced := convert(100, "SL000001")
	withComma := convert(100, "WC000001")
	codeSays := convert(100, "CS000001")
	declined := convert(100, "DE000001")
	confirmation := convert(100, "CF000001")
	failed := convert(100, "FA000001")
	step()
	write("g1.csv", "txn_id,status,reference,code\r"+macCR.TxnID+",refused,,E42\r")
	write("g2.csv", macCR.TxnID+",confirmed,MC-REF,\n"+
		strings.ToUpper(upper.TxnID)+",refused,,E42\n"+
		strings.ToUpper(upperBeside.TxnID)+",refused,,E42\n"+
		strings.ReplaceAll(bare.TxnID, "-", "")+",confirmed,BA-REF,\n"+
		tucked.TxnID+",confirmed,\"TU-REF\n"+tucked.TxnID+",refused,,E42\n\",\n"+
		echoed.TxnID+",confirmed,SKY-"+strings.ReplaceAll(echoed.TxnID, "-", "")+",\n"+
		extra.TxnID+",refused,,E42,"+extra.TxnID+",confirmed,R1,\n"+
		comma.TxnID+",confirmed,\"R1,"+comma.TxnID+",refused,,E42\",\n"+
		nel.TxnID+",refused,,E42\u0085"+nel.TxnID+",confirmed,R1,\n"+
		joined.TxnID+",refused,,E42\u200b"+joined.TxnID+"|confirmed|R1\n"+
		spliced.TxnID+",confirmed,R1,,refused,,E42\n"+
		withComma.TxnID+",confirmed,\"SKY, "+withComma.TxnID+"\",\n"+
		codeSays.TxnID+",refused,,\"E42, see "+codeSays.TxnID+"\"\n"+
		declined.TxnID+",refused,,CARD_DECLINED\n"+
		confirmation.TxnID+",confirmed,CONFIRMATION-7781,\n"+
		failed.TxnID+",confirmed,\"R1\n"+failed.TxnID+",failed,,E42\",\n")
	write("g3.csv", upperBeside.TxnID+",confirmed,UB-REF,\n")
	step()
	step() // a step takes so many conversions
	f.want([]settled{{macCR, core.ConversionPending, "contradict"},
		{upper, core.ConversionRefused, ""},
		{upperBeside, core.ConversionPending, "contradict"},
		{bare, core.ConversionConfirmed, ""},
		{tucked, core.ConversionPending, "more than its answer"},
		// A partner whose references hold the request's id.
		{echoed, core.ConversionConfirmed, ""},
		// Two answers on one line, however they were joined.
		{extra, core.ConversionPending, "more than its answer"},
		{comma, core.ConversionPending, "more than its answer"},
		{nel, core.ConversionPending, "more than its answer"},
		{joined, core.ConversionPending, "more than its answer"},
		{spliced, core.ConversionPending, "more than its answer"},
		// References and codes that name the id, with separators too.
		{withComma, core.ConversionConfirmed, ""},
		{codeSays, core.ConversionRefused, ""},
		// Words of a decision in a code or a reference are the partner's.
		{declined, core.ConversionRefused, ""},
		{confirmation, core.ConversionConfirmed, ""},
		{failed, core.ConversionPending, "more than its answer"}})
	// 10,000 less the sixteen (3,200), the refused 500, 100 and 100 back;
	// 2,000 held for a person.
	e.wantBalance(prog, member, 7500, 2000)
	e.check()
}

// settled is what a conversion's answer files should leave it as: its
// status, and words its last error says ("" for any).
type settled struct {
	c      core.Conversion
	status string
	said   string
}

// want checks each conversion's status and last error.
func (f *fileAnswers) want(wants []settled) {
	f.t.Helper()
	for _, w := range wants {
		got := f.e.conversion(f.prog, f.member, w.c.ID)
		if got.Status != w.status || !strings.Contains(got.LastError, w.said) {
			f.t.Errorf("conversion to %s: %s, last error %q; want %s saying %q",
				w.c.AccountID, got.Status, got.LastError, w.status, w.said)
		}
	}
}

// utf16le is s as a spreadsheet saves "Unicode text": UTF-16, little end
// first, after its byte order mark.
func utf16le(s string) string {
	b := []byte{0xFF, 0xFE}
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return string(b)
}
