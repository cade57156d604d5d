"""A real RFC 3161 time-stamping authority for the trusted-time tests: Python's http.server in
front of `openssl ts -reply`. Python stdlib and the `openssl` command only.

    python tsa_server.py [--port 0] [--dir DIR] [--key ec|rsa] [--ess sha1|sha256]

At startup it makes, with the openssl CLI, a root CA and a TSA certificate issued by it
(extendedKeyUsage critical timeStamping), and the `openssl ts` configuration. Then it answers
POSTed TimeStampReq bodies (content type application/timestamp-query) with the TimeStampResp
that `openssl ts -reply` makes. Paths:

    /        the TSA: SHA-256, SHA-384 and SHA-512 imprints, genTime with milliseconds
    /strict  a TSA section that accepts SHA-512 imprints only (others get status rejection,
             failInfo badAlg)

Binds 127.0.0.1 (port 0 picks a free one) and prints one JSON line on stdout once it listens:
{"port", "url", "ca", "tsa_cert", "dir"}. Files go to DIR (a new temporary directory when not
given). Runs until killed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

MAX_QUERY = 64 * 1024


def run(*args, cwd):
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(f"openssl {' '.join(args)} failed:\n{done.stderr}\n")
        sys.exit(1)


def newkey_args(kind):
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


def make_pki(d, key_kind, ess_alg):
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write(
            "[req]\n"
            "distinguished_name = dn\n"
            "[dn]\n"
            "[ca_ext]\n"
            "basicConstraints = critical, CA:TRUE\n"
            "keyUsage = critical, keyCertSign, cRLSign\n"
            "subjectKeyIdentifier = hash\n"
            "[tsa_ext]\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, nonRepudiation\n"
            "extendedKeyUsage = critical, timeStamping\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid\n"
        )
    run("req", "-x509", *newkey_args(key_kind), "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "30", "-subj", "/O=Anshin Test/CN=Anshin Test TSA Root",
        "-config", "ext.cnf", "-extensions", "ca_ext", cwd=d)
    run("req", "-new", *newkey_args(key_kind), "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr",
        "-subj", "/O=Anshin Test/CN=Anshin Test TSA", "-config", "ext.cnf", cwd=d)
    run("x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "tsa.pem", "-days", "30", "-extfile", "ext.cnf", "-extensions", "tsa_ext", cwd=d)
    with open(os.path.join(d, "tsaserial"), "w") as f:
        f.write("01\n")
    section = (
        "dir = {dir}\n"
        "serial = $dir/tsaserial\n"
        "signer_cert = $dir/tsa.pem\n"
        "certs = $dir/ca.pem\n"
        "signer_key = $dir/tsa.key\n"
        "signer_digest = sha256\n"
        "default_policy = 1.3.6.1.4.1.99999.1\n"
        "other_policies = 1.3.6.1.4.1.99999.2\n"
        "digests = {digests}\n"
        "accuracy = secs:1, millisecs:0\n"
        "clock_precision_digits = 3\n"
        "ordering = no\n"
        "tsa_name = yes\n"
        "ess_cert_id_chain = no\n"
        "ess_cert_id_alg = {ess}\n"
    )
    with open(os.path.join(d, "tsa.cnf"), "w") as f:
        f.write("[ tsa ]\ndefault_tsa = tsa_main\n\n")
        f.write("[ tsa_main ]\n" + section.format(dir=d, digests="sha256, sha384, sha512", ess=ess_alg))
        f.write("\n[ tsa_strict ]\n" + section.format(dir=d, digests="sha512", ess=ess_alg))


class Tsa(BaseHTTPRequestHandler):
    lock = threading.Lock()
    dir = None

    def do_POST(self):
        section = {"/": "tsa_main", "/strict": "tsa_strict"}.get(self.path)
        if section is None:
            return self.fail(404, "no such TSA")
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/timestamp-query":
            return self.fail(415, "expected application/timestamp-query")
        length = int(self.headers.get("Content-Length", "0"))
        if length <= 0 or length > MAX_QUERY:
            return self.fail(400, "bad Content-Length")
        query = self.rfile.read(length)
        d = self.dir
        with self.lock:  # the serial file is shared
            q, r = os.path.join(d, "query.tsq"), os.path.join(d, "reply.tsr")
            with open(q, "wb") as f:
                f.write(query)
            if os.path.exists(r):
                os.remove(r)
            done = subprocess.run(
                ["openssl", "ts", "-reply", "-config", os.path.join(d, "tsa.cnf"),
                 "-section", section, "-queryfile", q, "-inkey", os.path.join(d, "tsa.key"),
                 "-signer", os.path.join(d, "tsa.pem"), "-chain", os.path.join(d, "ca.pem"),
                 "-out", r],
                capture_output=True, text=True)
            reply = None
            if done.returncode == 0 and os.path.exists(r):
                with open(r, "rb") as f:
                    reply = f.read()
        if reply is None:
            return self.fail(500, done.stderr)
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def fail(self, code, text):
        body = text.encode("utf-8", "replace")
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dir")
    ap.add_argument("--key", choices=["ec", "rsa"], default="ec")
    ap.add_argument("--ess", choices=["sha1", "sha256"], default="sha256",
                    help="ESSCertID hash: sha1 gives signingCertificate, sha256 signingCertificateV2")
    args = ap.parse_args()
    d = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="anshin-tsa-"))
    os.makedirs(d, exist_ok=True)
    make_pki(d, args.key, args.ess)
    Tsa.dir = d
    server = HTTPServer(("127.0.0.1", args.port), Tsa)
    port = server.server_address[1]
    print(json.dumps({
        "port": port,
        "url": f"http://127.0.0.1:{port}/",
        "ca": os.path.join(d, "ca.pem"),
        "tsa_cert": os.path.join(d, "tsa.pem"),
        "dir": d,
    }), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
