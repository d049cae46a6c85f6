#!/usr/bin/env bash
# Full benchmark run for BENCHMARKS.md: prints the machine, then runs every workload at full
# size and writes the tables to target/bench-results.md. Extra arguments go to the program
# (e.g. `--quick`, `--scale 0.1`, `--timebox 240`, `--only W1,W5`).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${CARGO_TARGET_DIR:-target}/bench-results.md"
echo "== machine"
nproc
free -h
df -h "${SPILLCHEST_BENCH_DIR:-/tmp}"
grep -m1 'model name' /proc/cpuinfo || true
rustc --version
echo "== cargo bench --bench workloads -- --out $out $*"
cargo bench --bench workloads -- --out "$out" "$@"
