"""A real SNTP server for the trusted-time tests (RFC 4330 / RFC 5905 server mode), Python stdlib
only. It answers with the local clock shifted by a configurable offset, so a test can check that
the client measures that offset.

    python sntp_server.py [--offset-ms 1500] [--port 0] [--kiss RATE] [--unsynchronized]

Binds 127.0.0.1 (port 0 picks a free one) and prints one JSON line on stdout once it listens:
{"port": N}. Runs until killed.
"""
import argparse
import json
import socket
import struct
import sys
import time

NTP_UNIX_DELTA = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def ntp_bytes(t):
    """64-bit NTP timestamp (seconds since 1900 and a 32-bit fraction) of a Unix time."""
    t += NTP_UNIX_DELTA
    secs = int(t)
    frac = int((t - secs) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack("!II", secs & 0xFFFFFFFF, frac)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--offset-ms", type=float, default=0.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--kiss", help="answer every request with this kiss-o'-death code")
    ap.add_argument("--unsynchronized", action="store_true", help="leap indicator 3 (alarm)")
    args = ap.parse_args()
    offset = args.offset_ms / 1000.0

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", args.port))
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)

    while True:
        data, peer = sock.recvfrom(1024)
        received = time.time() + offset
        if len(data) < 48:
            continue
        first = data[0]
        version, mode = (first >> 3) & 0x7, first & 0x7
        if mode != 3:  # answer clients only
            continue
        leap = 3 if args.unsynchronized else 0
        stratum = 0 if args.kiss else 1
        refid = (args.kiss or "TEST").encode("ascii")[:4].ljust(4, b"\0")
        poll = data[2]
        precision = (-20) & 0xFF
        reply = bytearray(48)
        reply[0] = (leap << 6) | (version << 3) | 4
        reply[1] = stratum
        reply[2] = poll
        reply[3] = precision
        reply[4:8] = struct.pack("!I", 0)  # root delay
        reply[8:12] = struct.pack("!I", 1 << 10)  # root dispersion (1/64 s)
        reply[12:16] = refid
        reply[16:24] = ntp_bytes(received)  # reference timestamp
        reply[24:32] = data[40:48]  # originate = the client's transmit timestamp
        reply[32:40] = ntp_bytes(received)
        reply[40:48] = ntp_bytes(time.time() + offset)
        sock.sendto(bytes(reply), peer)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
