#!/usr/bin/env bash
# Audit trail append and seal throughput on SQLite and PostgreSQL (BENCHMARKS.md).
#   bench/audit.sh [EVENTS=100000] [WRITERS=8] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-100000}"; writers="${2:-8}"; runs="${3:-3}"
cargo build --release -q -p anshin-tests --bin audit-bench
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
admin="${TEST_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
echo "== SQLite"
target/release/audit-bench "sqlite://$dir/bench.db?mode=rwc" "$events" "$writers" "$runs"
echo "== PostgreSQL"
psql "$admin" -q -c "DROP DATABASE IF EXISTS anshin_audit_bench" -c "CREATE DATABASE anshin_audit_bench"
target/release/audit-bench "${admin%/*}/anshin_audit_bench" "$events" "$writers" "$runs"
psql "$admin" -q -c "DROP DATABASE IF EXISTS anshin_audit_bench"
