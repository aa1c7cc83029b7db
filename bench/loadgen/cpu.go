package main

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat: Linux reports
// them in clock ticks of 1/100 s on every architecture Go runs on.
const userHZ = 100

// cpuSample is the CPU used so far by this process (the generator and, in
// an in-process run, the whole platform with its embedded NATS server) and
// by each PostgreSQL backend serving the ledger's database.
type cpuSample struct {
	self     time.Duration
	backends map[int]time.Duration
}

// sampleCPU reads the CPU times now. Backends are found through
// pg_stat_activity and read from /proc, so PostgreSQL must run on this
// machine; when it cannot be read, only this process is counted.
func (r *runner) sampleCPU(ctx context.Context) cpuSample {
	s := cpuSample{backends: map[int]time.Duration{}}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	rows, err := r.target.pool.Query(ctx, `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database()`)
	if err != nil {
		return s
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		if rows.Scan(&pid) == nil {
			if d, ok := procCPU(pid); ok {
				s.backends[pid] = d
			}
		}
	}
	return s
}

// procCPU is the user plus system CPU time of process pid.
func procCPU(pid int) (time.Duration, bool) {
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

// cpuSince reports the CPU used between before and now, in total and per
// answer. A backend that started in between counts from zero; one that
// ended in between is lost, so the PostgreSQL figure is a floor.
func (r *runner) cpuSince(ctx context.Context, before cpuSample, answers int) map[string]any {
	now := r.sampleCPU(ctx)
	self := now.self - before.self
	var pg time.Duration
	for pid, d := range now.backends {
		pg += d - before.backends[pid]
	}
	out := map[string]any{
		"process_cpu_s":     self.Seconds(),
		"postgres_cpu_s":    pg.Seconds(),
		"postgres_backends": len(now.backends),
	}
	if answers > 0 {
		out["process_cpu_ms_per"] = self.Seconds() * 1000 / float64(answers)
		out["postgres_cpu_ms_per"] = pg.Seconds() * 1000 / float64(answers)
		out["total_cpu_ms_per"] = (self + pg).Seconds() * 1000 / float64(answers)
	}
	return out
}
