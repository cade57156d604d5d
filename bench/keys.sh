#!/usr/bin/env bash
# Envelope encryption benchmarks (BENCHMARKS.md, "Keys: envelope encryption"):
#   1. criterion: KeyRing::encrypt/decrypt (local provider, warm cache) beside raw AES-256-GCM,
#      1 KiB and 64 KiB records, one thread (services/keys/benches/envelope.rs);
#   2. keys-bench: 100,000 operations through KeyRing against a moto KMS server, counting KMS
#      calls (20 tenants and 1 tenant, 1 KiB; 20 tenants, 64 KiB), and with the local provider;
#   3. bench/keys_esdk.py: the same workload through the AWS Encryption SDK for Python on the same
#      moto server.
# Each measurement runs RUNS times; the summary gives medians. Raw JSON goes to
# bench/results/keys-<time>/. Loopback only; moto runs from .venv and is stopped on exit.
#
#   bench/keys.sh [RUNS=3]
#   ESDK_OPS_64K=20000 ESDK_OPS_1K=100000 bench/keys.sh     # shorter Python runs if needed
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
OPS_1K="${OPS_1K:-100000}"        # keys-bench and keys_esdk.py, 1 KiB records
OPS_64K="${OPS_64K:-20000}"       # 64 KiB records (the SDK peer needs ~70 s per 20,000)
ESDK_OPS_1K="${ESDK_OPS_1K:-$OPS_1K}"
ESDK_OPS_64K="${ESDK_OPS_64K:-$OPS_64K}"
PY=.venv/bin/python
OUT="bench/results/keys-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

# Python peers: the ESDK and moto, pinned.
if [ ! -x "$PY" ]; then
  python3 -m venv .venv
fi
if ! "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as m
assert m.version("aws-encryption-sdk") == "4.0.7"
assert m.version("moto") == "5.2.5"
import flask  # moto[server]
EOF
then
  .venv/bin/pip install --quiet --disable-pip-version-check \
    -r bench/requirements.txt -r tests/python/requirements.txt
fi

echo "== build (release)"
cargo build --release -q -p anshin-tests --bin keys-bench
cargo bench -q -p anshin-keys --bench envelope --no-run 2>/dev/null
BENCH=target/release/keys-bench

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOTO_PID=""
cleanup() {
  if [ -n "$MOTO_PID" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(free_port)
ENDPOINT="http://127.0.0.1:$PORT"
.venv/bin/moto_server -H 127.0.0.1 -p "$PORT" >"$OUT/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 300); do
  "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null && break
  sleep 0.2
done
"$PY" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" \
  || { echo "moto did not start (see $OUT/moto.log)" >&2; exit 1; }
echo "== moto $($PY -c 'import moto; print(moto.__version__)') at $ENDPOINT"

echo "== criterion: KeyRing vs raw AES-256-GCM ($RUNS runs)"
for r in $(seq 1 "$RUNS"); do
  cargo bench -q -p anshin-keys --bench envelope >"$OUT/criterion-$r.log" 2>&1
  "$PY" - "$r" >>"$OUT/criterion.jsonl" <<'EOF'
import json, pathlib, sys
root = pathlib.Path("target/criterion")
out = {"run": int(sys.argv[1])}
for size in ("1KiB", "64KiB"):
    for name in ("raw_aes_gcm/encrypt", "raw_aes_gcm/encrypt_in_place", "raw_aes_gcm/decrypt",
                 "keyring/encrypt", "keyring/decrypt"):
        est = json.loads((root / f"envelope_{size}" / name / "new" / "estimates.json").read_text())
        out[f"{size}/{name}"] = est["median"]["point_estimate"]  # ns per operation
print(json.dumps(out))
EOF
  echo "   run $r done"
done

run_rust() {  # name, args...
  local name=$1; shift
  for r in $(seq 1 "$RUNS"); do
    "$BENCH" "$@" >>"$OUT/$name.jsonl"
  done
  echo "   $name done"
}
run_py() {  # name, runs, args...
  local name=$1 n=$2; shift 2
  for r in $(seq 1 "$n"); do
    "$PY" bench/keys_esdk.py --endpoint "$ENDPOINT" "$@" >>"$OUT/$name.jsonl"
  done
  echo "   $name done"
}

echo "== keys-bench: KeyRing on moto and local ($RUNS runs each)"
run_rust anshin-moto-1k-20t --provider moto --endpoint "$ENDPOINT" --tenants 20 --ops "$OPS_1K" --size 1024
run_rust anshin-moto-1k-1t --provider moto --endpoint "$ENDPOINT" --tenants 1 --ops "$OPS_1K" --size 1024
run_rust anshin-moto-64k-20t --provider moto --endpoint "$ENDPOINT" --tenants 20 --ops "$OPS_64K" --size 65536
run_rust anshin-local-1k-20t --provider local --tenants 20 --ops "$OPS_1K" --size 1024
run_rust anshin-moto-1k-20t-c2 --provider moto --endpoint "$ENDPOINT" --tenants 20 --ops "$OPS_1K" --size 1024 --concurrency 2

echo "== AWS Encryption SDK for Python on the same moto server"
run_py esdk-1k-20t "$RUNS" --tenants 20 --ops "$ESDK_OPS_1K" --size 1024
run_py esdk-1k-1t 1 --tenants 1 --ops "$ESDK_OPS_1K" --size 1024
run_py esdk-64k-20t "$RUNS" --tenants 20 --ops "$ESDK_OPS_64K" --size 65536
run_py esdk-1k-20t-signed 1 --tenants 20 --ops 10000 --size 1024 --algorithm signed
run_py esdk-1k-20t-record-in-context 1 --tenants 20 --ops 2000 --size 1024 --record-in-context

echo "== summary (medians of $RUNS runs; raw JSON in $OUT)"
"$PY" - "$OUT" <<'EOF'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
def rows(name):
    p = out / f"{name}.jsonl"
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []
med = statistics.median

crit = rows("criterion")
print("\nLibrary vs raw AES-256-GCM (criterion, one thread; ns per operation and MB/s, MB = 10^6 B)")
print(f"{'record':7} {'op':8} {'raw ns':>9} {'raw MB/s':>9} {'lib ns':>9} {'lib MB/s':>9} {'ratio':>6} {'in-place ns':>12} {'ratio':>6}")
for size, nbytes in (("1KiB", 1024), ("64KiB", 65536)):
    mbs = lambda ns: nbytes / ns * 1e9 / 1e6
    for op in ("encrypt", "decrypt"):
        raw = med(r[f"{size}/raw_aes_gcm/{op}"] for r in crit)
        lib = med(r[f"{size}/keyring/{op}"] for r in crit)
        line = f"{size:7} {op:8} {raw:9.0f} {mbs(raw):9.0f} {lib:9.0f} {mbs(lib):9.0f} {raw / lib:6.2f}"
        if op == "encrypt":
            inp = med(r[f"{size}/raw_aes_gcm/encrypt_in_place"] for r in crit)
            line += f" {inp:12.0f} {inp / lib:6.2f}"
        print(line)

print("\nWorkload runs (medians): ops/s and KMS data-key calls (dk calls: in the run; /100k: for runs of 100,000 operations)")
print(f"{'run':34} {'ops':>7} {'enc/s':>8} {'dec/s':>8} {'ops/s':>8} {'dk calls':>8} {'/100k':>7} {'/tenant':>7} {'setup':>6}")
for name in ("anshin-moto-1k-20t", "anshin-moto-1k-1t", "anshin-moto-1k-20t-c2", "anshin-moto-64k-20t",
             "anshin-local-1k-20t", "esdk-1k-20t", "esdk-1k-1t", "esdk-64k-20t", "esdk-1k-20t-signed",
             "esdk-1k-20t-record-in-context"):
    rs = rows(name)
    if not rs:
        continue
    m = lambda k: med(r[k] for r in rs)
    dk = med(r["provider_calls"]["data_key"] for r in rs)
    setup = med(r["provider_calls"]["setup_create_kek"] for r in rs)
    # Calls do not grow with operations (they follow tenants x purposes and the cache limits), so
    # a shorter run is not scaled up to 100,000.
    per100k = f"{dk:.0f}" if rs[0]["operations"] == 100_000 else "-"
    print(f"{name + f' (x{len(rs)})':34} {rs[0]['operations']:7} {m('encrypt_ops_per_s'):8.0f} {m('decrypt_ops_per_s'):8.0f} "
          f"{m('ops_per_s'):8.0f} {dk:8.0f} {per100k:>7} {m('data_key_calls_per_tenant'):7.1f} {setup:6.0f}")
EOF
