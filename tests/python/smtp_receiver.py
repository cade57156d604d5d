"""A real SMTP server for the tests (aiosmtpd): every message received is decoded and appended to a
JSON Lines file, so tests can read what a person would find in their mailbox.

    python smtp_receiver.py PORT OUTFILE
"""
import email
import json
import sys
import time
from email import policy

from aiosmtpd.controller import Controller


class Record:
    def __init__(self, path):
        self.path = path

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        body = msg.get_body(preferencelist=("plain",))
        entry = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "subject": str(msg["subject"]),
            "body": body.get_content() if body else "",
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return "250 Message accepted"


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Record(out), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"smtp receiver on 127.0.0.1:{port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
