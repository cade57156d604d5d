#!/usr/bin/env bash
# WebAuthn sign-in benchmark: completed passkey sign-ins per second (begin + soft-passkey
# assertion + finish, session created) against a release `anshin serve` on SQLite and
# PostgreSQL. Loopback only.
#
#   bench/signin.sh [SECONDS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN="${1:-15}"
CONC="${2:-32}"
ADMIN="${TEST_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
cargo build --release --locked --bin anshin -p anshin-server
cargo build --release --locked --bin signin-bench -p anshin-tests
BIN=target/release/anshin
LOAD=target/release/signin-bench
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for backend in sqlite postgres; do
  dir=$(mktemp -d)
  export ANSHIN_DATA_DIR="$dir/data" ANSHIN_LOG=warn ANSHIN_HTTP__AUTH_RATE_PER_MINUTE=0
  unset ANSHIN_DATABASE_URL ANSHIN_MIGRATION_DATABASE_URL
  if [ "$backend" = postgres ]; then
    psql "$ADMIN" -q -c "DROP DATABASE IF EXISTS anshin_bench WITH (FORCE)" -c "CREATE DATABASE anshin_bench OWNER anshin_owner" 2>/dev/null
    export ANSHIN_DATABASE_URL=postgres://anshin_app@127.0.0.1:5432/anshin_bench
    export ANSHIN_MIGRATION_DATABASE_URL=postgres://anshin_owner@127.0.0.1:5432/anshin_bench
  fi
  "$BIN" tenant create --kind provider --slug bench-provider --name "ベンチ事業者" >/dev/null
  "$BIN" tenant create --kind institution --slug bench-clinic --name "ベンチ診療所" --parent bench-provider --pattern IV >/dev/null
  token=$("$BIN" token issue --tenant bench-clinic --role institution_admin --name bench | tail -n 1)
  port=$(free_port)
  ANSHIN_PUBLIC_URL="http://localhost:$port" "$BIN" serve --services api --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  printf '%-9s ' "$backend"
  SERVER_PID=$pid "$LOAD" "http://localhost:$port" "$token" "$CONC" "$CONC" "$SECONDS_RUN"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
done
