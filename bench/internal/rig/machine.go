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
	return n
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
