package testenv

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat: Linux reports
// them in clock ticks of 1/100 s on every architecture Go runs on.
const userHZ = 100

// CPU is the CPU used so far by this process and by each PostgreSQL backend
// connected to one database.
type CPU struct {
	Self     time.Duration
	Backends map[int]time.Duration
}

// SampleCPU reads the CPU times now. The backends are those connected to
// pool's database, found through pg_stat_activity and read from /proc, so
// PostgreSQL must run on this machine; when they cannot be read, only this
// process is counted.
func SampleCPU(ctx context.Context, pool *pgxpool.Pool) CPU {
	s := CPU{Backends: map[int]time.Duration{}}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.Self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database()`)
	if err != nil {
		return s
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		if rows.Scan(&pid) == nil {
			if d, ok := ProcCPU(pid); ok {
				s.Backends[pid] = d
			}
		}
	}
	return s
}

// Since is the CPU used between before and s: by this process, and by the
// backends in s. A backend that started in between counts from zero; one
// that ended in between is lost, so the PostgreSQL figure is a floor.
func (s CPU) Since(before CPU) (self, postgres time.Duration) {
	for pid, d := range s.Backends {
		postgres += d - before.Backends[pid]
	}
	return s.Self - before.Self, postgres
}

// ProcCPU is the user plus system CPU time of process pid.
func ProcCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces; the fields after it are
	// plain numbers: state is field 3, utime 14 and stime 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * time.Second / userHZ, true
}
