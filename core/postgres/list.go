package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/core"
)

// Programs returns every program, in order of code. An operator runs a
// handful, so they come in one answer.
func (l *Ledger) Programs(ctx context.Context) ([]core.Program, error) {
	rows, err := l.pool.Query(ctx, `SELECT `+programCols+` FROM programs ORDER BY code`)
	if err != nil {
		return nil, fmt.Errorf("list programs: %w", err)
	}
	defer rows.Close()
	out := []core.Program{}
	for rows.Next() {
		p, err := scanProgram(rows)
		if err != nil {
			return nil, fmt.Errorf("list programs: %w", err)
		}
		out = append(out, *p.public())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list programs: %w", err)
	}
	return out, nil
}

// MemberPage is one page of a program's members, in order of reference.
type MemberPage struct {
	Program string        `json:"program"`
	Members []core.Member `json:"members"`
	Next    string        `json:"next_cursor,omitempty"`
}

// memberStatuses are the statuses a member list may be filtered by.
var memberStatuses = map[string]bool{"active": true, "suspended": true, "closed": true,
	"merged": true}

// Members returns up to limit members of the program whose reference sorts
// after cursor (the next_cursor of a previous page; empty for the first),
// of the given status when status is not empty. A merged member is listed
// as itself, with the survivor's reference in merged_into and no points.
// Errors: not_found (program), invalid (status, limit).
func (l *Ledger) Members(ctx context.Context, programCode, status, cursor string,
	limit int) (*MemberPage, error) {
	if status != "" && !memberStatuses[status] {
		return nil, core.Errorf(core.Invalid, "status",
			"must be active, suspended, closed or merged")
	}
	if limit < 1 || limit > 500 {
		return nil, core.Errorf(core.Invalid, "limit", "must be a whole number from 1 to 500")
	}
	// A cursor is the last reference of a page, so a valid reference.
	if cursor != "" && !core.ValidRef(cursor) {
		return nil, core.Errorf(core.Invalid, "cursor", "is not a cursor from a previous page")
	}
	var progID string
	err := l.pool.QueryRow(ctx, `SELECT id FROM programs WHERE code = $1`,
		programCode).Scan(&progID)
	if err == pgx.ErrNoRows {
		return nil, core.Errorf(core.NotFound, "program", "no program %q", programCode)
	}
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	rows, err := l.pool.Query(ctx, `SELECT m.id, m.customer_ref, m.status, m.channel,
			m.enrolled_at, coalesce(s.customer_ref, ''), m.available, m.pending, m.held
		FROM members m LEFT JOIN members s ON s.id = m.merged_into
		WHERE m.program_id = $1 AND m.customer_ref > $2 AND ($3 = '' OR m.status = $3)
		ORDER BY m.customer_ref LIMIT $4`, progID, cursor, status, limit+1)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	defer rows.Close()
	page := &MemberPage{Program: programCode, Members: []core.Member{}}
	for rows.Next() {
		m := core.Member{Program: programCode}
		if err := rows.Scan(&m.ID, &m.CustomerRef, &m.Status, &m.Channel, &m.EnrolledAt,
			&m.MergedInto, &m.Balance.Available, &m.Balance.Pending,
			&m.Balance.Held); err != nil {
			return nil, fmt.Errorf("list members: %w", err)
		}
		if len(page.Members) == limit {
			page.Next = page.Members[limit-1].CustomerRef
			break
		}
		page.Members = append(page.Members, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	return page, nil
}
