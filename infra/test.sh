#!/usr/bin/env bash
# The whole Anshin test suite, on SQLite and on PostgreSQL. Sets up what it needs on a fresh
# machine: starts PostgreSQL if it is stopped and creates the owner and application roles.
#
#   TEST_PG_ADMIN_URL  superuser connection used to create roles and test databases
#                      (default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."

export TEST_PG_ADMIN_URL="${TEST_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

step() { printf '\n==> %s\n' "$*"; }

step "PostgreSQL"
if ! pg_isready -d "$TEST_PG_ADMIN_URL" -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    echo "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  for _ in $(seq 1 60); do
    pg_isready -d "$TEST_PG_ADMIN_URL" -q 2>/dev/null && break
    sleep 0.5
  done
fi
if ! pg_isready -d "$TEST_PG_ADMIN_URL" -q; then
  echo "error: PostgreSQL is not reachable at $TEST_PG_ADMIN_URL; the PostgreSQL half of the suite needs it" >&2
  exit 1
fi

step "database roles (anshin_owner runs migrations; anshin_app owns nothing and cannot bypass RLS)"
psql "$TEST_PG_ADMIN_URL" -v ON_ERROR_STOP=1 -q <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anshin_owner') THEN
    CREATE ROLE anshin_owner LOGIN NOSUPERUSER NOBYPASSRLS CREATEDB;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anshin_app') THEN
    CREATE ROLE anshin_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END $$;
ALTER ROLE anshin_app NOSUPERUSER NOBYPASSRLS;
SQL
# Databases left by earlier runs (each test creates its own).
psql "$TEST_PG_ADMIN_URL" -Atq -c "SELECT datname FROM pg_database WHERE datname LIKE 'anshin\_t\_%'" |
  while read -r db; do psql "$TEST_PG_ADMIN_URL" -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done

step "browser peers (Debian Chromium, playwright-core from npm)"
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
fi
command -v node >/dev/null 2>&1 || { echo "error: node is needed for the browser tests" >&2; exit 1; }
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)

step "Python peers (virtualenv .venv: aiosmtpd, cryptography, moto KMS server; openssl for the RFC 3161 TSA)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
if ! command -v openssl >/dev/null 2>&1; then
  echo "installing Debian's openssl (the audit tests run a real RFC 3161 time-stamping authority with it)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi

step "build (the CLI tests run the real anshin binary)"
cargo build --workspace --bins --locked

step "tests (SQLite and PostgreSQL)"
cargo test --workspace --locked "$@"
