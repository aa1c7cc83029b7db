#!/usr/bin/env bash
# Runs every Go benchmark of the project (once, or for a second when it takes
# microseconds) and keeps its figures in
# bench/results/<stamp>-go-bench.txt, headed by a description of the
# machine and its load (benchstat reads the "key: value" lines as the
# run's configuration). `make bench` calls it; extra arguments go to
# `go test` (e.g. -bench Rules to run only some).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
out="bench/results/$(date -u +%Y-%m-%dT%H%M%SZ)-go-bench.txt"
{
	echo "machine-cpus: $(nproc)"
	echo "machine-cpu-model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "machine-mem-total: $(grep -m1 MemTotal /proc/meminfo | awk '{print $2, $3}')"
	echo "machine-kernel: $(uname -r)"
	echo "machine-postgresql: $(psql "${PUNTOS_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}" -Atc 'SHOW server_version' 2>/dev/null || echo unknown)"
	echo "machine-clickhouse: $(clickhouse-client --port "${PUNTOS_CH_PORT:-19000}" -q 'SELECT version()' 2>/dev/null || echo unknown)"
	echo "machine-load-before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "bench-events: ${PUNTOS_BENCH_EVENTS:-default}"
} >"$out"
# The benchmarks that load the platform (a million-line file, ten million
# lots, a hundred million events) run once: one run is their figure. The
# in-memory ones (rule evaluation, the command codec, envelope parsing)
# take microseconds, and a single call times a cold cache instead: they run
# for a second each, so that the rule evaluation's figure can be read
# against its target.
micro='Evaluate50Rules|CommandCodec|ParseEnvelope'
# A balance read takes a tenth of a millisecond: a single one would time a
# cold cache and PostgreSQL's CPU clock, which ticks every 10 ms, so the
# reads run 10,000 times (and not with the arguments meant for the others).
reads='^BenchmarkBalance$'
status=0
go test -run '^$' -bench . -skip "$micro|$reads" -benchtime=1x -benchmem -timeout 90m "$@" ./... 2>&1 |
	tee -a "$out" || status=$?
go test -run '^$' -bench "$reads" -benchtime=10000x -benchmem -timeout 10m \
	./core/postgres/ 2>&1 | tee -a "$out" || status=$?
go test -run '^$' -bench "$micro" -benchtime=1s -benchmem -timeout 10m "$@" \
	./core/ ./bus/ ./gateway/soap/ 2>&1 | tee -a "$out" || status=$?
echo "machine-load-after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out"
echo "Go benchmark figures written to $out"
exit "$status"
