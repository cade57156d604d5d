#!/usr/bin/env bash
# Load benchmark: authenticated GET /api/v1/tenants/{id} at concurrency 64 on SQLite and on
# PostgreSQL, beside GET /healthz (the ceiling) in the same run. Prints a Markdown table.
#
#   bench/run.sh [DURATION]     (default 20s per measurement)
#
# Needs: wrk (apt-get install wrk), a release build (cargo build --release), PostgreSQL as for
# infra/test.sh. Sends traffic only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-20s}"
CONNS=64
THREADS=2
BIN=target/release/anshin
ADMIN="${TEST_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
command -v wrk >/dev/null || { echo "error: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release --locked --bin anshin
OUT=bench/results
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wrk --latency output → "req/s p50 p99"
summarise() {
  awk '/Requests\/sec/ {rps=$2}
       /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
       END {print rps, p50, p99}' "$1"
}

run_backend() {
  local backend=$1 dir port pid token id
  dir=$(mktemp -d)
  export ANSHIN_DATA_DIR="$dir/data" ANSHIN_LOG=warn ANSHIN_HTTP__AUTH_RATE_PER_MINUTE=0
  unset ANSHIN_DATABASE_URL ANSHIN_MIGRATION_DATABASE_URL
  if [ "$backend" = postgres ]; then
    psql "$ADMIN" -q -c "DROP DATABASE IF EXISTS anshin_bench WITH (FORCE)" -c "CREATE DATABASE anshin_bench OWNER anshin_owner"
    export ANSHIN_DATABASE_URL=postgres://anshin_app@127.0.0.1:5432/anshin_bench
    export ANSHIN_MIGRATION_DATABASE_URL=postgres://anshin_owner@127.0.0.1:5432/anshin_bench
  fi
  "$BIN" tenant create --kind provider --slug bench-provider --name "ベンチ事業者" >/dev/null
  id=$("$BIN" tenant create --kind institution --slug bench-clinic --name "ベンチ診療所" --parent bench-provider --pattern IV --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  token=$("$BIN" token issue --tenant bench-clinic --role institution_admin --name bench | tail -n 1)
  port=$(free_port)
  "$BIN" serve --services api --listen "127.0.0.1:$port" >/dev/null 2>"$OUT/$backend-server.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  # Warm-up, then the two measurements back to back.
  wrk -t$THREADS -c$CONNS -d3s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/tenants/$id" >/dev/null
  wrk -t$THREADS -c$CONNS -d"$DURATION" --latency -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/tenants/$id" >"$OUT/$backend-tenant.txt"
  wrk -t$THREADS -c$CONNS -d"$DURATION" --latency "http://127.0.0.1:$port/healthz" >"$OUT/$backend-healthz.txt"
  local rss
  rss=$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # Non-2xx answers would make the figures meaningless.
  if grep -q "Non-2xx" "$OUT/$backend-tenant.txt"; then
    echo "error: the tenant read returned errors during the $backend run:" >&2; cat "$OUT/$backend-tenant.txt" >&2; exit 1
  fi
  read -r t_rps t_p50 t_p99 < <(summarise "$OUT/$backend-tenant.txt")
  read -r h_rps h_p50 h_p99 < <(summarise "$OUT/$backend-healthz.txt")
  local ratio
  ratio=$(python3 -c "print(f'{float(\"$t_rps\")/float(\"$h_rps\"):.2f}')")
  printf '| %s | GET /api/v1/tenants/{id} | %s | %s | %s | %s | %s |\n' "$backend" "$t_rps" "$t_p50" "$t_p99" "$ratio" "$rss"
  printf '| %s | GET /healthz | %s | %s | %s | 1.00 | |\n' "$backend" "$h_rps" "$h_p50" "$h_p99"
  rm -rf "$dir"
}

echo "| backend | request | req/s | p50 | p99 | ratio to /healthz | peak RSS |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
run_backend sqlite
run_backend postgres
