package conversion

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf16"
)

// The columns of the files of the file flavour.
var (
	outHeader    = []string{"txn_id", "program", "member_id", "amount", "points", "requested_at"}
	answerHeader = []string{"txn_id", "status", "reference", "code"}
)

// FilePartner speaks the file flavour of the partner protocol: conversions
// go out as lines of a daily CSV file in Dir/out, answers come back as CSV
// files that the partner drops in Dir/in. A delivery looks for an answer
// first and otherwise makes sure the conversion is in the day's file.
type FilePartner struct {
	dir      string
	external string
	clock    func() time.Time
	mu       sync.Mutex
}

// NewFilePartner returns a partner exchanging files under dir for the
// external program code; clock dates the outgoing files (UTC days).
func NewFilePartner(dir, external string, clock func() time.Time) *FilePartner {
	if clock == nil {
		clock = time.Now
	}
	return &FilePartner{dir: dir, external: external, clock: clock}
}

// String names the partner.
func (p *FilePartner) String() string { return "file " + p.dir }

// OutDir is where the files of conversions go; InDir where answers come.
func (p *FilePartner) OutDir() string { return filepath.Join(p.dir, "out") }

// InDir is where the partner drops its answer files.
func (p *FilePartner) InDir() string { return filepath.Join(p.dir, "in") }

// Deliver answers from the answer files when they know req, and otherwise
// puts req in the day's outgoing file (once a day) and answers Unclear: the
// partner's answer comes later, in a file.
func (p *FilePartner) Deliver(ctx context.Context, req Request) Answer {
	st := p.Status(ctx, req)
	if st.Outcome == Confirmed || st.Outcome == Refused {
		return st
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	name := filepath.Join(p.OutDir(), fmt.Sprintf("%s-%s.csv", p.external,
		p.clock().UTC().Format("20060102")))
	rows, err := readCSV(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Answer{Detail: fmt.Sprintf("read %s: %v", filepath.Base(name), err)}
	}
	if len(rows) == 0 {
		rows = [][]string{outHeader}
	}
	for _, r := range rows[1:] {
		if len(r) > 0 && r[0] == req.TxnID {
			// Answer files that could not be read, or that contradict
			// each other, are what a person must mend: say so.
			if st.Detail != noAnswerYet {
				return st
			}
			return Answer{Detail: "in " + filepath.Base(name) + ", not answered yet"}
		}
	}
	rows = append(rows, []string{req.TxnID, req.Program, req.MemberID,
		strconv.FormatInt(req.Amount, 10), strconv.FormatInt(req.Points, 10),
		req.RequestedAt.UTC().Format(time.RFC3339)})
	if err := writeCSV(name, rows); err != nil {
		return Answer{Detail: fmt.Sprintf("write %s: %v", filepath.Base(name), err)}
	}
	return Answer{Detail: "written to " + filepath.Base(name) + ", not answered yet"}
}

// Status reads every answer file for req.TxnID.
//
// TODO(conversion): every answer file is read at each attempt and none is
// ever archived, and the day's file is rewritten for each new line: fine
// for hundreds of conversions a day, slow for a partner with years of
// files. Archive answer files whose conversions are all settled. The same answer twice is
// one answer; a confirmation and a refusal of the same transaction
// contradict each other and decide nothing. A line of the transaction
// that is neither (another status, a confirmation without a reference, a
// refusal without a code) decides nothing either: when nothing else
// answers, the answer names it, so that a person sees why the conversion
// waits. A confirmation without its reference still says the partner
// credited: beside a refusal it is a contradiction, as is a refusal
// without its code beside a confirmation, and a status that spells either
// among stray marks leans the same way. Two confirmations under different
// references contradict each other too: which credit is the partner's?
func (p *FilePartner) Status(_ context.Context, req Request) Answer {
	names, err := filepath.Glob(filepath.Join(p.InDir(), "*.csv"))
	if err != nil {
		return Answer{Detail: err.Error()}
	}
	slices.Sort(names)
	var found *Answer
	var foundIn, unread, doubt string
	leaning := map[Outcome]string{} // outcome of a line lacking its reference or code: file
	for _, name := range names {
		lines, err := readAnswers(name)
		if err != nil {
			return Answer{Detail: fmt.Sprintf("read %s: %v", filepath.Base(name), err)}
		}
		file := partnerWords(filepath.Base(name))
		for i, ln := range lines {
			r := ln.fields
			// A txn_id is matched whatever its case, and without the
			// hyphens or invisible characters a partner's system may add
			// or drop. A line that names the conversion elsewhere than in
			// its first field (in the header, say) is one this reading
			// missed; so is a line of the conversion with more than four
			// columns, or whose status, reference or code holds the id
			// with more after it: a second answer joined to the first,
			// however. Either may decide either way. A reference or code
			// that ends with the id is the partner's own way of writing
			// them.
			first := sameTxn(r[0], req.TxnID)
			switch {
			case doubt != "":
			case !first && slices.ContainsFunc(r, func(f string) bool {
				return mentions(f, req.TxnID)
			}):
				doubt = fmt.Sprintf("line %d of %s names it but does not read as "+
					"txn_id,status,reference,code", ln.number, file)
			case first && (slices.ContainsFunc(r[len(answerHeader):], func(f string) bool {
				return answerField(f) != ""
			}) || slices.ContainsFunc(r[1:len(answerHeader)], func(f string) bool {
				return idThenMore(f, req.TxnID)
			})):
				doubt = fmt.Sprintf("line %d of %s holds more than its answer (columns past "+
					"the fourth, or the id again with more after it)", ln.number, file)
			}
			if i == 0 && strings.EqualFold(answerField(r[0]), answerHeader[0]) || !first {
				continue
			}
			status := strings.ToLower(answerField(r[1]))
			ref, code := answerField(r[2]), answerField(r[3])
			var a Answer
			switch {
			case status == "confirmed" && ref != "":
				a = Answer{Outcome: Confirmed, Reference: ref}
			case status == "refused" && code != "":
				a = Answer{Outcome: Refused, Code: code}
			default:
				// A status that spells a decision among stray marks
				// ("CONFIRMED.") leans as that decision does.
				word := strings.Map(func(r rune) rune {
					if unicode.IsLetter(r) {
						return r
					}
					return -1
				}, status)
				if word == "confirmed" && leaning[Confirmed] == "" {
					leaning[Confirmed] = file
				}
				if word == "refused" && leaning[Refused] == "" {
					leaning[Refused] = file
				}
				// A status no one knows ("confimed", "rejected") may be a
				// decision this reading missed; those that say the partner
				// has not decided yet are not.
				if word != "confirmed" && word != "refused" && !waitingWords[word] &&
					doubt == "" {
					doubt = fmt.Sprintf("line %d of %s answers it with the status %q, which "+
						"is neither confirmed nor refused", ln.number, file, partnerWords(r[1]))
				}
				if unread == "" {
					unread = fmt.Sprintf("line %d of %s answers it with status %q, "+
						"reference %q and code %q, which decide nothing: a confirmation "+
						"needs a reference, a refusal a code", ln.number, file,
						partnerWords(r[1]), partnerWords(ref), partnerWords(code))
				}
				continue
			}
			if found != nil && found.Outcome != a.Outcome {
				return Answer{Contradicts: true, Detail: fmt.Sprintf("the answer files "+
					"contradict each other: %s in %s, %s in %s", found.Outcome, foundIn,
					a.Outcome, file)}
			}
			if found != nil && a.Outcome == Confirmed && a.Reference != found.Reference {
				return Answer{Contradicts: true, Detail: fmt.Sprintf("the answer files "+
					"confirm it twice under different references: %q in %s, %q in %s",
					partnerWords(found.Reference), foundIn, partnerWords(a.Reference), file)}
			}
			found, foundIn = &a, file
		}
	}
	if found != nil && doubt != "" {
		return Answer{Contradicts: true, Detail: fmt.Sprintf("the answer files may "+
			"contradict each other: %s in %s, but %s", found.Outcome, foundIn, doubt)}
	}
	if found == nil && unread == "" {
		unread = doubt
	}
	if found == nil && unread != "" {
		return Answer{Detail: unread}
	}
	if found == nil {
		return Answer{Detail: noAnswerYet}
	}
	other := Confirmed
	if found.Outcome == Confirmed {
		other = Refused
	}
	if in := leaning[other]; in != "" {
		return Answer{Contradicts: true, Detail: fmt.Sprintf("the answer files contradict "+
			"each other: %s in %s, %s (without its %s) in %s", found.Outcome, foundIn, other,
			map[Outcome]string{Confirmed: "reference", Refused: "code"}[other], in)}
	}
	return *found
}

// idThenMore reports whether field holds the transaction id txn with
// letters or digits after it: the start of another answer.
func idThenMore(field, txn string) bool {
	f, k := txnKey(field), txnKey(txn)
	i := strings.Index(f, k)
	return k != "" && i >= 0 && i+len(k) < len(f)
}

// txnKey is a transaction id as Status matches it: its letters in lower
// case and its digits, nothing else.
func txnKey(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'z':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return -1
	}, s)
}

// sameTxn reports whether field is the transaction id txn.
func sameTxn(field, txn string) bool { return txnKey(field) == txnKey(txn) }

// mentions reports whether field holds the transaction id txn.
func mentions(field, txn string) bool {
	k := txnKey(txn)
	return k != "" && strings.Contains(txnKey(field), k)
}

// waitingWords are the statuses, in lower-case letters only, by which a
// partner says it has not decided yet.
var waitingWords = map[string]bool{"pending": true, "processing": true, "received": true,
	"queued": true, "inprogress": true}

// answerField is a field of an answer line as Status compares it: without
// the spaces, byte order marks and other invisible formatting characters
// (a zero-width space, say) that spreadsheets and editors leave around it.
func answerField(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.Is(unicode.Cf, r)
	})
}

// answerLine is one record of an answer file, with the line of the file
// it starts on, and at least as many fields as answerHeader.
type answerLine struct {
	number int
	fields []string
}

// readAnswers reads an answer file's records.
func readAnswers(name string) ([]answerLine, error) {
	var lines []answerLine
	err := eachRecord(name, func(rec []string, line int) {
		for len(rec) < len(answerHeader) {
			rec = append(rec, "")
		}
		lines = append(lines, answerLine{number: line, fields: rec})
	})
	return lines, err
}

// eachRecord calls fn with each record of the CSV file name and the line
// of the file it starts on.
func eachRecord(name string, fn func(rec []string, line int)) error {
	data, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	text, err := utf8Text(data)
	if err != nil {
		return err
	}
	// A lone carriage return ends a line too, as spreadsheets on old Macs
	// write them.
	text = strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\r", "\n")
	r := csv.NewReader(strings.NewReader(text))
	r.Comma = separator(text)
	r.FieldsPerRecord = -1
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		line, _ := r.FieldPos(0)
		fn(rec, line)
	}
}

// utf8Text answers a file's bytes as UTF-8 text. A file that starts with
// a UTF-16 byte order mark, as some spreadsheets save "Unicode text", is
// decoded; any other file with NUL bytes is refused, since it is no text
// whose lines could be matched.
func utf8Text(data []byte) (string, error) {
	var order binary.ByteOrder
	switch {
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE, 0, 0}) ||
		bytes.HasPrefix(data, []byte{0, 0, 0xFE, 0xFF}):
		return "", errors.New("UTF-32 text, which is not read: save the file as UTF-8 CSV")
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE}):
		order = binary.LittleEndian
	case bytes.HasPrefix(data, []byte{0xFE, 0xFF}):
		order = binary.BigEndian
	}
	if order == nil {
		if i := bytes.IndexByte(data, 0); i >= 0 {
			return "", fmt.Errorf("not UTF-8 text: a NUL byte on line %d; "+
				"save the file as UTF-8 CSV", bytes.Count(data[:i], []byte("\n"))+1)
		}
		return string(data), nil
	}
	data = data[2:]
	if len(data)%2 != 0 {
		return "", errors.New("UTF-16 text with an odd number of bytes: the file is cut short")
	}
	units := make([]uint16, len(data)/2)
	for i := range units {
		units[i] = order.Uint16(data[2*i:])
	}
	text := string(utf16.Decode(units))
	if i := strings.IndexByte(text, 0); i >= 0 {
		return "", fmt.Errorf("UTF-16 text with a NUL character on line %d; save the file "+
			"as UTF-8 CSV", strings.Count(text[:i], "\n")+1)
	}
	return text, nil
}

// separator is the field separator of a CSV text: of comma, semicolon and
// tab, the one its first line holds most of (a spreadsheet's "Unicode text"
// separates by tabs, and one set for a decimal comma by semicolons); a
// comma when the line holds none.
func separator(text string) rune {
	first, _, _ := strings.Cut(strings.TrimLeft(text, "\r\n"), "\n")
	best, most := ',', strings.Count(first, ",")
	for _, c := range []rune{';', '\t'} {
		if n := strings.Count(first, string(c)); n > most {
			best, most = c, n
		}
	}
	return best
}

// noAnswerYet is Status's answer when no answer file names the conversion.
const noAnswerYet = "no answer file mentions it yet"

func readCSV(name string) ([][]string, error) {
	var rows [][]string
	err := eachRecord(name, func(rec []string, _ int) { rows = append(rows, rec) })
	return rows, err
}

// writeCSV replaces name with rows through a temporary file and a rename,
// so that a reader never sees half a file.
func writeCSV(name string, rows [][]string) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return err
	}
	w := csv.NewWriter(tmp)
	if err := w.WriteAll(rows); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), name)
}

// safeName reports whether s can be a directory name under the worker's
// folder: a program or external code (letters, digits, '-', '_').
func safeName(s string) bool {
	return s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"+
		"0123456789-_") == "" && s != "." && s != ".."
}
