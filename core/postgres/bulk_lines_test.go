package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/puntos-loyalty/puntos/core"
)

// Lines name an existing batch and go with it, though bulk_lines has no
// foreign key any more (0017): lines of an unknown batch are refused, and
// deleting a batch deletes its lines.
func TestBulkLinesNeedTheirBatch(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	line := core.BatchLine{Line: 2, Member: "m1", Points: 10, Reason: "r", TxnID: "t1",
		Status: core.LineValid}

	err := f.l.AddBatchLines(ctx, uuid.Must(uuid.NewV7()).String(), []core.BatchLine{line})
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23503" {
		t.Fatalf("lines of an unknown batch: got %v, want a foreign key violation", err)
	}

	b := &core.Batch{ID: uuid.Must(uuid.NewV7()).String(), Program: f.prog, Checksum: "c1",
		Path: "/dev/null", Charset: "utf-8", UploadedBy: "u", Channel: "rest",
		CreatedAt: time.Now()}
	if _, _, err := f.l.CreateBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := f.l.AddBatchLines(ctx, b.ID, []core.BatchLine{line}); err != nil {
		t.Fatal(err)
	}
	got, err := f.l.BatchLines(ctx, b.ID, 0, 10, false)
	if err != nil || len(got) != 1 || got[0].TxnID != "t1" || got[0].Points != 10 {
		t.Fatalf("stored lines: %v %+v", err, got)
	}

	if _, err := f.l.Pool().Exec(ctx, `UPDATE bulk_batches SET id = $2 WHERE id = $1`, b.ID,
		uuid.Must(uuid.NewV7())); err == nil {
		t.Fatal("a batch's id changed under its lines")
	}
	if _, err := f.l.Pool().Exec(ctx, `DELETE FROM bulk_batches WHERE id = $1`,
		b.ID); err != nil {
		t.Fatal(err)
	}
	got, err = f.l.BatchLines(ctx, b.ID, 0, 10, false)
	if err != nil || len(got) != 0 {
		t.Fatalf("lines of a deleted batch: %v %+v", err, got)
	}
}
