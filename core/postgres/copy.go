package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// binCopy builds the rows of one COPY in PostgreSQL's binary format, for the
// bulk paths that write thousands of rows a statement. pgx's CopyFrom takes
// rows of []any and finds an encoder for every value in turn, which cost
// more Go CPU than everything else a bulk line does; here each column is
// appended by a method of its own type. The caller must append, for every
// row, exactly the columns named in the statement, in order and of the
// column's own type (bigint, text, uuid, timestamptz, boolean, jsonb or json): the
// binary format has no conversions, and a wrong type is refused by the
// database, so it cannot go in unnoticed.
type binCopy struct {
	table string
	cols  []string
	buf   []byte
	rows  int
	ncols int16
}

// pgEpoch is the zero of PostgreSQL's timestamps.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()

// copyBufs keeps the buffers of sent COPYs for the next ones: a bulk load
// sends a few megabytes per chunk, the same again for every chunk.
var copyBufs = sync.Pool{New: func() any { return new([]byte) }}

// newBinCopy starts the rows of a COPY into table's cols. sizeHint is the
// bytes the rows are expected to take. Once sent, the binCopy is done with.
func newBinCopy(table string, cols []string, sizeHint int) *binCopy {
	buf := *copyBufs.Get().(*[]byte)
	if cap(buf) < 19+sizeHint {
		buf = make([]byte, 0, 19+sizeHint)
	}
	c := &binCopy{table: table, cols: cols, ncols: int16(len(cols)), buf: buf[:0]}
	// Signature, flags, header extension length.
	c.buf = append(c.buf, "PGCOPY\n\xff\r\n\x00"...)
	c.buf = binary.BigEndian.AppendUint32(c.buf, 0)
	c.buf = binary.BigEndian.AppendUint32(c.buf, 0)
	return c
}

// row starts a row.
func (c *binCopy) row() {
	c.rows++
	c.buf = binary.BigEndian.AppendUint16(c.buf, uint16(c.ncols))
}

func (c *binCopy) null() { c.buf = binary.BigEndian.AppendUint32(c.buf, 0xFFFFFFFF) }

func (c *binCopy) int8(v int64) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, 8)
	c.buf = binary.BigEndian.AppendUint64(c.buf, uint64(v))
}

func (c *binCopy) text(s string) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(s)))
	c.buf = append(c.buf, s...)
}

func (c *binCopy) bool(v bool) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, 1)
	if v {
		c.buf = append(c.buf, 1)
	} else {
		c.buf = append(c.buf, 0)
	}
}

// uuid appends u, or NULL when it is not valid.
func (c *binCopy) uuid(u pgtype.UUID) {
	if !u.Valid {
		c.null()
		return
	}
	c.buf = binary.BigEndian.AppendUint32(c.buf, 16)
	c.buf = append(c.buf, u.Bytes[:]...)
}

// timestamptz appends t to the microsecond, as pgx would: the database keeps
// no finer.
func (c *binCopy) timestamptz(t time.Time) {
	us := t.Unix()*1_000_000 + int64(t.Nanosecond())/1000
	c.int8(us - pgEpoch)
}

// timestamptzOrNull appends *t, or NULL when t is nil.
func (c *binCopy) timestamptzOrNull(t *time.Time) {
	if t == nil {
		c.null()
		return
	}
	c.timestamptz(*t)
}

// jsonb appends a JSON document (version 1 of jsonb's binary form is the
// text itself).
func (c *binCopy) jsonb(doc []byte) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(doc)+1))
	c.buf = append(c.buf, 1)
	c.buf = append(c.buf, doc...)
}

// jsonbText appends a JSON document held in a string, as jsonb does.
func (c *binCopy) jsonbText(doc string) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(doc)+1))
	c.buf = append(c.buf, 1)
	c.buf = append(c.buf, doc...)
}

// json appends a JSON document for a json column (its binary form is the
// text).
func (c *binCopy) json(doc []byte) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(doc)))
	c.buf = append(c.buf, doc...)
}

// send writes the rows to the table, unless there are none, and gives the
// buffer back.
//
// After a failed COPY the buffer is not given back: pgx may return from a
// broken connection while its goroutine still reads the rows.
func (c *binCopy) send(ctx context.Context, conn *pgx.Conn) (err error) {
	defer func() {
		if err == nil && cap(c.buf) <= 64<<20 {
			buf := c.buf[:0]
			copyBufs.Put(&buf)
		}
		c.buf = nil
	}()
	if c.rows == 0 {
		return nil
	}
	c.buf = binary.BigEndian.AppendUint16(c.buf, 0xFFFF)
	cols := make([]string, len(c.cols))
	for i, col := range c.cols {
		cols[i] = pgx.Identifier{col}.Sanitize()
	}
	sql := fmt.Sprintf("COPY %s (%s) FROM STDIN WITH (FORMAT binary)",
		pgx.Identifier{c.table}.Sanitize(), strings.Join(cols, ", "))
	tag, err := conn.PgConn().CopyFrom(ctx, bytes.NewReader(c.buf), sql)
	if err != nil {
		return fmt.Errorf("write %s: %w", c.table, err)
	}
	if int(tag.RowsAffected()) != c.rows {
		return fmt.Errorf("write %s: %d of %d rows", c.table, tag.RowsAffected(), c.rows)
	}
	return nil
}
