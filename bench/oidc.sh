#!/usr/bin/env bash
# OpenID Connect sign-in benchmark: completed federation sign-ins per second (start at Anshin,
# authorization + login + consent at the provider, callback at Anshin, session created) and the
# callback alone, against a release `anshin serve` on SQLite and PostgreSQL and a real node
# `oidc-provider` (tests/node/oidc_provider.mjs). Loopback only.
#
#   bench/oidc.sh [SECONDS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN="${1:-15}"
CONC="${2:-16}"
ADMIN="${TEST_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
SECRET=bench-provider-shared-secret-0123456789
[ -d tests/node/node_modules/oidc-provider ] || (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
cargo build --release --locked --bin anshin -p anshin-server
cargo build --release --locked --bin oidc-bench -p anshin-tests
BIN=target/release/anshin
LOAD=target/release/oidc-bench
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pid= idp=
trap 'kill $pid $idp 2>/dev/null || true' EXIT
wait_for() { for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

for backend in sqlite postgres; do
  dir=$(mktemp -d)
  export ANSHIN_DATA_DIR="$dir/data" ANSHIN_LOG=warn ANSHIN_HTTP__AUTH_RATE_PER_MINUTE=0
  unset ANSHIN_DATABASE_URL ANSHIN_MIGRATION_DATABASE_URL
  if [ "$backend" = postgres ]; then   # its own database: never drops bench/signin.sh's
    psql "$ADMIN" -q -c "DROP DATABASE IF EXISTS anshin_bench_oidc WITH (FORCE)" -c "CREATE DATABASE anshin_bench_oidc OWNER anshin_owner" 2>/dev/null
    export ANSHIN_DATABASE_URL=postgres://anshin_app@127.0.0.1:5432/anshin_bench_oidc
    export ANSHIN_MIGRATION_DATABASE_URL=postgres://anshin_owner@127.0.0.1:5432/anshin_bench_oidc
  fi
  "$BIN" tenant create --kind provider --slug bench-provider --name "ベンチ事業者" >/dev/null
  "$BIN" tenant create --kind institution --slug bench-clinic --name "ベンチ診療所" --parent bench-provider --pattern IV >/dev/null
  token=$("$BIN" token issue --tenant bench-clinic --role institution_admin --name bench | tail -n 1)
  port=$(free_port)
  idp_port=$(free_port)
  # The provider: its only client is Anshin, sent back to Anshin's public callback.
  (cd tests/node && PORT=$idp_port CLIENT_ID=anshin-bench CLIENT_SECRET=$SECRET \
    REDIRECT_URI="http://localhost:$port/auth/oidc/callback" exec node oidc_provider.mjs >/dev/null 2>&1) &
  idp=$!
  ANSHIN_PUBLIC_URL="http://localhost:$port" "$BIN" serve --services api --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  pid=$!
  wait_for "http://127.0.0.1:$idp_port/.well-known/openid-configuration"
  wait_for "http://127.0.0.1:$port/healthz"
  # The tenant signs in with the provider: people of its domain, multi-factor amr, JIT accounts.
  curl -sf -X PUT "http://127.0.0.1:$port/api/v1/identity-provider" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -o /dev/null -d "{\"issuer\": \"http://127.0.0.1:$idp_port\",
      \"client_id\": \"anshin-bench\", \"client_secret\": \"$SECRET\", \"allowed_domains\": [\"hikari.example.jp\"],
      \"default_role\": \"institution_staff\", \"jit_provisioning\": true, \"accepted_acr\": []}"
  printf '%-9s ' "$backend"
  "$LOAD" "http://127.0.0.1:$port" bench-clinic "$CONC" "$SECONDS_RUN" mfa@hikari.example.jp
  kill "$pid" "$idp"; wait "$pid" "$idp" 2>/dev/null || true
  pid= idp=
  rm -rf "$dir"
done
