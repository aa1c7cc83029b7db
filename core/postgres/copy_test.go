package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// binCopy's rows read back as pgx would have written them: times to the
// microsecond (before 2000 too), NULLs, text with any characters, jsonb,
// and json kept byte for byte.
func TestBinCopyRoundTrip(t *testing.T) {
	ctx := context.Background()
	pool := testDB(t)
	times := []time.Time{time.Date(2026, 6, 15, 16, 0, 0, 123456789, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(1969, 7, 20, 20, 17, 0, 500, time.UTC)}
	u := uuid.Must(uuid.NewV7())
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `CREATE TEMP TABLE bc (n bigint, s text, id uuid,
			at timestamptz, maybe timestamptz, ok boolean, doc jsonb, raw json) ON COMMIT DROP`)
		if err != nil {
			return err
		}
		cp := newBinCopy("bc", []string{"n", "s", "id", "at", "maybe", "ok", "doc", "raw"},
			0)
		for i, at := range times {
			cp.row()
			cp.int8(int64(-i) * 1_000_000_000_000)
			cp.text("Señora \"Ñandú\" " + at.String())
			cp.uuid(pgtype.UUID{Bytes: u, Valid: i == 0})
			cp.timestamptz(at)
			if i == 1 {
				cp.timestamptzOrNull(nil)
			} else {
				cp.timestamptzOrNull(&at)
			}
			cp.bool(i == 2)
			cp.jsonb([]byte(`{"i":` + string(rune('0'+i)) + `}`))
			cp.json([]byte(rawDoc(i)))
		}
		if err := cp.send(ctx, tx.Conn()); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT n, s, id, at, maybe, ok, doc->>'i', raw::text FROM bc
			ORDER BY at DESC`)
		if err != nil {
			return err
		}
		defer rows.Close()
		i := 0
		for rows.Next() {
			var n int64
			var s, doc, raw string
			var id pgtype.UUID
			var at time.Time
			var maybe *time.Time
			var ok bool
			if err := rows.Scan(&n, &s, &id, &at, &maybe, &ok, &doc, &raw); err != nil {
				return err
			}
			want := times[i].Truncate(time.Microsecond)
			switch {
			case n != int64(-i)*1_000_000_000_000,
				s != "Señora \"Ñandú\" "+times[i].String(),
				id.Valid != (i == 0) || (i == 0 && id.Bytes != u),
				!at.Equal(want),
				(maybe == nil) != (i == 1) || (maybe != nil && !maybe.Equal(want)),
				ok != (i == 2), doc != string(rune('0'+i)), raw != rawDoc(i):
				t.Errorf("row %d read back as %d %q %v %v %v %v %s %s", i, n, s, id, at, maybe,
					ok, doc, raw)
			}
			i++
		}
		if i != len(times) {
			t.Errorf("%d rows read back, %d written", i, len(times))
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// rawDoc is row i's json document: keys out of order, a space, a repeated
// key, as jsonb would not keep them.
func rawDoc(i int) string {
	return `{"z":1, "a":"Ñ","a":` + string(rune('0'+i)) + `}`
}
