#!/usr/bin/env python3
"""Independent verifier of an Anshin audit export (anshin-audit-export/1), written from
docs/audit-verification.md alone: hashlib for RFC 9162 hashing, `cryptography` for Ed25519.

    verify_audit.py EXPORT [--public-key B64]

Exit 0 when every check passes; otherwise exit 1 with a message naming the offending entry."""
import argparse, base64, hashlib, json, sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Fail(Exception):
    pass


def leaf_hash(data): return hashlib.sha256(b"\x00" + data).digest()
def node_hash(l, r): return hashlib.sha256(b"\x01" + l + r).digest()


def split(n):  # largest power of two smaller than n
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def aligned(n):  # the perfect subtrees [lo, hi) that make up [0, n), largest first
    out, lo = [], 0
    for b in reversed(range(64)):
        if n >> b & 1:
            out.append((lo, lo + (1 << b)))
            lo += 1 << b
    return out


def root(size, known):  # MTH of [0, size) from the subtree hashes in `known`
    def go(lo, hi):
        if (lo, hi) not in known:
            if hi - lo < 2:
                raise Fail(f"the proof lacks the subtree [{lo}, {hi}) for tree size {size}")
            k = split(hi - lo)
            known[(lo, hi)] = node_hash(go(lo, lo + k), go(lo + k, hi))
        return known[(lo, hi)]
    return go(0, size)


def verify(path, public_key_b64=None):
    lines = open(path, "rb").read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    header = json.loads(lines[0])
    if header.get("type") != "header" or header.get("format") != "anshin-audit-export/1":
        raise Fail("line 1: not an anshin-audit-export/1 header")
    first, last, log = header["first"], header["last"], header["log"]
    raw = lines[1:1 + (last - first)]
    tail = [json.loads(l) for l in lines[1 + (last - first):]]
    if not tail or tail[-1].get("type") != "proof" or any(t.get("type") != "checkpoint" for t in tail[:-1]):
        raise Fail("after the entries must come the checkpoint lines and one proof line "
                   "(an entry is missing or one was inserted)")
    proof, cps = tail[-1], tail[:-1]
    entries = [json.loads(l) for l in raw]
    leaves = [leaf_hash(l) for l in raw]
    prev = bytes.fromhex(proof["prev_hash"]) if first > 0 else bytes(32)
    for k, e in enumerate(entries):
        seq, ln = first + k, k + 2
        if e.get("type") != "entry" or e.get("seq") != seq:
            raise Fail(f"line {ln}: expected entry seq {seq}, found {e.get('type')} seq {e.get('seq')}: "
                       f"entry seq {seq} missing, or an entry inserted or reordered")
        if e["log"] != log:
            raise Fail(f"line {ln}: entry seq {seq} belongs to another log")
        if bytes.fromhex(e["prev"]) != (leaves[k - 1] if k else prev):
            # Link (seq-1, seq) is broken: if seq's successor still names seq, seq-1 changed.
            nxt_ok = k + 1 < len(entries) and bytes.fromhex(entries[k + 1]["prev"]) == leaves[k]
            bad = seq - 1 if k and (nxt_ok or k + 1 == len(entries)) else seq
            raise Fail(f"entry seq {bad} was altered (prev of seq {seq} does not match)")
    if public_key_b64:
        raw_key = base64.b64decode(public_key_b64)
        keys = {"ed25519:" + hashlib.sha256(raw_key).hexdigest()[:16]: raw_key}
    else:
        keys = {k["key_id"]: base64.b64decode(k["public_key"]) for k in header["keys"] if k["algorithm"] == "ed25519"}
    left = {(n["lo"], n["hi"]): bytes.fromhex(n["hash"]) for n in proof["left"]}
    if list(left) != aligned(first):
        raise Fail("the proof's left nodes are not the aligned subtrees of [0, first)")
    inner = dict(left)
    inner.update({(first + k, first + k + 1): h for k, h in enumerate(leaves)})
    right = {r["tree_size"]: {(n["lo"], n["hi"]): bytes.fromhex(n["hash"]) for n in r["nodes"]} for r in proof["right"]}
    size = 0
    for c in cps:
        body = json.loads(c["body"])
        if body["key_id"] not in keys:
            raise Fail(f"checkpoint {body['tree_size']} is signed by unknown key {body['key_id']}")
        try:
            Ed25519PublicKey.from_public_bytes(keys[body["key_id"]]).verify(
                base64.b64decode(c["signature"]), c["body"].encode())
        except InvalidSignature:
            raise Fail(f"checkpoint {body['tree_size']}: bad signature")
        if body["log"] != log or body["tree_size"] <= size or body["tree_size"] < first:
            raise Fail(f"checkpoint {body['tree_size']}: wrong log, out of order or below first")
        size = body["tree_size"]
        known = dict(inner) if size <= last else {**inner, **{k: v for k, v in right.get(size, {}).items() if k[0] >= last}}
        if root(size, known).hex() != body["root_hash"]:
            bad = min(size, last) - 1
            raise Fail(f"root of checkpoint {size} does not match: entry seq {bad} (or one before it) was altered")
        if size <= last:
            inner.update((k, v) for k, v in known.items() if k[1] <= last)
    if size < last:
        raise Fail(f"entry seq {max(size, first)} is not covered by any checkpoint (not sealed)")
    return f"OK: {last - first} entries (seq {first}..{last - 1}) of log {log}, {len(cps)} checkpoints"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export")
    ap.add_argument("--public-key", help="trusted Ed25519 public key, base64 of the raw 32 bytes")
    args = ap.parse_args()
    try:
        print(verify(args.export, args.public_key))
    except (Fail, KeyError, ValueError, TypeError, IndexError) as e:
        sys.exit(f"FAIL: {e}")
