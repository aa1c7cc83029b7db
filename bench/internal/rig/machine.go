// Package rig holds what the benchmark programs under bench/ share: a
// description of the machine and of its load, the CPU used by this process
// and by the PostgreSQL backends serving it, latency percentiles, and a
// throwaway database to measure in.
package rig

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Machine describes where the figures were measured.
type Machine struct {
	CPUs       int    `json:"nproc"`
	CPUModel   string `json:"cpu_model"`
	MemTotal   string `json:"mem_total"`
	Kernel     string `json:"kernel"`
	GoVersion  string `json:"go_version"`
	PostgreSQL string `json:"postgresql_version"`
	LoadBefore Load   `json:"load_before_run"`
}

// Load is the machine's load at one moment: other work may share these
// cores, and a busy machine gives lower figures.
type Load struct {
	At     time.Time `json:"at"`
	Uptime string    `json:"uptime"`
	Load1  string    `json:"load_1m"`
	// Ticks are the machine's CPU time so far, from /proc/stat, in clock
	// ticks: all of it, and what the hypervisor gave other guests while
	// this one wanted to run (steal).
	Ticks      uint64 `json:"cpu_ticks,omitempty"`
	StealTicks uint64 `json:"steal_ticks,omitempty"`
}

// StealSince is the share of the machine's CPU time, in percent, that the
// hypervisor took away between before and l; -1 when unknown. On a shared
// host it can halve the figures of a run: compare runs with little of it.
func (l Load) StealSince(before Load) float64 {
	if l.Ticks <= before.Ticks || before.Ticks == 0 {
		return -1
	}
	return 100 * float64(l.StealTicks-before.StealTicks) / float64(l.Ticks-before.Ticks)
}

// DescribeMachine reads the machine's CPUs, memory and kernel, and the
// version of the PostgreSQL server behind pool.
func DescribeMachine(ctx context.Context, pool *pgxpool.Pool) Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(),
		CPUModel: procField("/proc/cpuinfo", "model name"),
		MemTotal: procField("/proc/meminfo", "MemTotal")}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	_ = pool.QueryRow(ctx, `SHOW server_version`).Scan(&m.PostgreSQL)
	return m
}

// DescribeLoad records `uptime` and the one-minute load average now.
func DescribeLoad() Load {
	n := Load{At: time.Now().UTC()}
	if out, err := exec.Command("uptime").Output(); err == nil {
		n.Uptime = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			n.Load1 = f[0]
		}
	}
	n.Ticks, n.StealTicks = cpuTicks()
	return n
}

// cpuTicks reads the machine's total and stolen CPU time from the "cpu"
// line of /proc/stat (user nice system idle iowait irq softirq steal ...).
func cpuTicks() (total, steal uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	// guest and guest_nice (fields 9 and 10) are already in user and nice.
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0
		}
		total += n
		if i == 7 {
			steal = n
		}
	}
	return total, steal
}

// procField returns the value of the first "key: value" line in a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
