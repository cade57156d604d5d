#!/usr/bin/env python3
"""The keys-bench workload through the AWS Encryption SDK for Python, the peer for Anshin's
envelope encryption (BENCHMARKS.md, "Keys: envelope encryption").

    .venv/bin/python bench/keys_esdk.py --endpoint http://127.0.0.1:PORT [--size 1024]
        [--tenants 20] [--ops 100000] [--algorithm committing|signed] [--record-in-context]
        [--keep-bytes 268435456]

Same workload as `tests/src/bin/keys_bench.rs`: TENANTS tenants, one KMS key each (created in the
moto server at ENDPOINT with boto3), purpose `emr.record`; OPS/2 records of SIZE bytes encrypted,
record i belonging to tenant i % TENANTS, then OPS/2 decrypts in a scattered order, one operation
at a time (Python runs one thread). Each tenant has a StrictAwsKmsMasterKeyProvider naming only
its key, and a CachingCryptoMaterialsManager (partition = tenant) over one shared
LocalCryptoMaterialsCache, with Anshin's default limits: max age 300 s, 1,000,000 messages and
2^36 bytes per data key, 4,096 entries per direction (capacity 8,192 for the shared cache).

The encryption context is {anshin:tenant, anshin:purpose}, the context Anshin binds its data keys
to. The ESDK's caching CMM keys its cache entries on the whole encryption context, so the record id
cannot be in it without defeating the cache; `--record-in-context` shows that variant (every
message then needs its own GenerateDataKey and Decrypt). Decryption checks the returned context,
as the ESDK documentation asks applications to do.

Algorithm: `committing` (default) is AES_256_GCM_HKDF_SHA512_COMMIT_KEY, key-committing and
unsigned, the suite closest to Anshin's (which has no per-message signature); `signed` is the
SDK's default suite, which adds an ECDSA P-384 signature to every message.

The decrypt phase decrypts every encrypted record when their ciphertexts fit in KEEP_BYTES
(default 256 MiB: all of them for 1 KiB records); otherwise it cycles over the first
KEEP_BYTES / SIZE of them (4,096 for 64 KiB records), which still cover every tenant. All of a
tenant's messages share one data key while it is cached, so which ones are decrypted does not
change the cache behaviour.

KMS calls are counted with a botocore `before-call.kms` event hook on the botocore session every
client is created from (one count per API operation; retries inside an operation are not counted,
like the Rust provider's interceptor). Prints one JSON object.
"""

import argparse
import json
import math
import os
import sys
import time
import uuid
from collections import Counter

REGION = "ap-northeast-1"
PURPOSE = "emr.record"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", required=True, help="moto server, e.g. http://127.0.0.1:5000")
    ap.add_argument("--tenants", type=int, default=20)
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--keep-bytes", type=int, default=256 << 20)
    ap.add_argument("--algorithm", choices=["committing", "signed"], default="committing")
    ap.add_argument("--record-in-context", action="store_true")
    a = ap.parse_args()

    # Every client below talks to moto with dummy credentials (botocore >= 1.31 honours
    # AWS_ENDPOINT_URL_KMS for clients the ESDK creates itself).
    os.environ["AWS_ENDPOINT_URL_KMS"] = a.endpoint
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ["AWS_DEFAULT_REGION"] = REGION
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(var, None)

    import boto3
    import botocore
    import botocore.session
    import aws_encryption_sdk
    from aws_encryption_sdk import CommitmentPolicy
    from aws_encryption_sdk.identifiers import Algorithm

    calls = Counter()

    def count(model=None, **_):
        calls[model.name if model is not None else "?"] += 1

    session = botocore.session.Session()
    session.set_credentials("testing", "testing")
    session.set_config_variable("region", REGION)
    session.register("before-call.kms", count)

    setup = boto3.session.Session(botocore_session=session).client("kms", region_name=REGION)
    key_arns = []
    for t in range(a.tenants):
        meta = setup.create_key(
            KeySpec="SYMMETRIC_DEFAULT",
            KeyUsage="ENCRYPT_DECRYPT",
            Description=f"keys_esdk.py tenant {t}",
        )["KeyMetadata"]
        key_arns.append(meta["Arn"])
    tenants = [str(uuid.uuid4()) for _ in range(a.tenants)]
    assert setup.meta.endpoint_url == a.endpoint, setup.meta.endpoint_url

    cache = aws_encryption_sdk.LocalCryptoMaterialsCache(capacity=8192)
    cmms = []
    for tenant, arn in zip(tenants, key_arns):
        mkp = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[arn], botocore_session=session)
        for client in mkp._regional_clients.values():  # noqa: SLF001 - checking where traffic goes
            assert client.meta.endpoint_url == a.endpoint, client.meta.endpoint_url
        cmms.append(
            aws_encryption_sdk.CachingCryptoMaterialsManager(
                master_key_provider=mkp,
                cache=cache,
                max_age=300.0,
                max_messages_encrypted=1_000_000,
                max_bytes_encrypted=1 << 36,
                partition_name=tenant,
            )
        )
    setup_calls = sum(calls.values())
    setup_by_op = dict(calls)
    calls.clear()

    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    algorithm = (
        Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
        if a.algorithm == "committing"
        else Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
    )
    plaintext = bytes((i * 31 % 251) for i in range(a.size))
    encrypts = a.ops // 2
    decrypts = a.ops - encrypts

    def context(i):
        t = i % a.tenants
        ec = {"anshin:tenant": tenants[t], "anshin:purpose": PURPOSE}
        if a.record_in_context:
            ec["anshin:record"] = f"P-{i:08}/doc"
        return t, ec

    # Ciphertexts kept for the decrypt phase: all of them when they fit in KEEP_BYTES, otherwise
    # the first ones (consecutive records, so every tenant is represented).
    keep = min(encrypts, max(a.tenants, a.keep_bytes // max(1, a.size)))
    kept = []  # (record index, ciphertext)
    started = time.perf_counter()
    for i in range(encrypts):
        t, ec = context(i)
        ct, _header = client.encrypt(
            source=plaintext, materials_manager=cmms[t], encryption_context=ec, algorithm=algorithm
        )
        if i < keep:
            kept.append((i, ct))
    encrypt_s = time.perf_counter() - started
    encrypt_calls = dict(calls)
    envelope_bytes = len(kept[0][1])

    # Scattered order: a stride coprime with the number of ciphertexts, as in keys-bench.
    stride = next(s for s in range(7919, 7919 + len(kept) + 2) if math.gcd(s, len(kept)) == 1)
    started = time.perf_counter()
    for j in range(decrypts):
        i, ct = kept[(j * stride) % len(kept)]
        t, ec = context(i)
        pt, header = client.decrypt(source=ct, materials_manager=cmms[t])
        # Only the context the application expects; the ESDK may add its own keys (signed suites).
        for k, v in ec.items():
            if header.encryption_context.get(k) != v:
                raise SystemExit(f"record {i}: unexpected encryption context {header.encryption_context}")
        if len(pt) != a.size:
            raise SystemExit(f"record {i}: {len(pt)} bytes decrypted")
    decrypt_s = time.perf_counter() - started

    data_key_calls = sum(calls.values())
    decrypt_calls = {k: v - encrypt_calls.get(k, 0) for k, v in calls.items() if v - encrypt_calls.get(k, 0)}
    print(
        json.dumps(
            {
                "tool": "keys_esdk.py",
                "peer": f"aws-encryption-sdk {aws_encryption_sdk.__version__} (Python {sys.version.split()[0]}, "
                f"botocore {botocore.__version__})",
                "algorithm": algorithm.name,
                "record_in_context": a.record_in_context,
                "provider": f"aws-kms on moto at {a.endpoint} (region {REGION})",
                "workload": f"{a.tenants} tenants x purpose {PURPOSE}: {encrypts} encrypts then {decrypts} "
                f"decrypts of {a.size}-byte records, concurrency 1",
                "tenants": a.tenants,
                "record_bytes": a.size,
                "envelope_bytes": envelope_bytes,
                "concurrency": 1,
                "operations": a.ops,
                "encrypts": encrypts,
                "decrypts": decrypts,
                "decrypt_distinct_ciphertexts": len(kept),
                "encrypt_seconds": encrypt_s,
                "decrypt_seconds": decrypt_s,
                "encrypt_ops_per_s": round(encrypts / encrypt_s),
                "decrypt_ops_per_s": round(decrypts / decrypt_s),
                "ops_per_s": round(a.ops / (encrypt_s + decrypt_s)),
                "provider_calls": {
                    "setup_create_kek": setup_calls,
                    "setup_by_operation": setup_by_op,
                    "data_key": data_key_calls,
                    "data_key_encrypt_phase": encrypt_calls,
                    "data_key_decrypt_phase": decrypt_calls,
                    "total": setup_calls + data_key_calls,
                },
                "data_key_calls_per_100k_ops": data_key_calls * 100_000 / a.ops,
                "data_key_calls_per_tenant": data_key_calls / a.tenants,
                "ops_per_tenant": a.ops // a.tenants,
            }
        )
    )


if __name__ == "__main__":
    main()
