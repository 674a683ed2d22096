#!/usr/bin/python3
"""A real SMTP server for Herald's tests (aiosmtpd, from Debian's python3-aiosmtpd): it listens on
127.0.0.1, prints its port on the first line of stdout, and writes every message it accepts to
DIR/<n>.eml with DIR/<n>.json beside it (the envelope, the decoded headers and each MIME part), the .json last, so a test that sees it
sees the whole message.

Recipients steer it, so each test can ask for what it checks:
  reject550...@  -> 550 at RCPT (a permanent refusal)
  tempfail...@   -> 451 at RCPT (a transient one)
  slow<ms>...@   -> waits that long before answering DATA

--tls MODE: none (default), starttls (STARTTLS offered and required) or tls (TLS from the first byte),
with --cert and --key.
"""
import argparse
import asyncio
import email
import email.policy
import json
import os
import re
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class Capture:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0]
        if local.startswith("reject550"):
            return "550 5.1.1 unknown mailbox"
        if local.startswith("tempfail"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            m = re.match(r"slow(\d+)", rcpt)
            if m:
                await asyncio.sleep(int(m.group(1)) / 1000)
        self.count += 1
        base = os.path.join(self.directory, f"{self.count:06d}")
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        parts = [
            {"content_type": part.get_content_type(), "charset": part.get_content_charset(),
             "content": part.get_content()}
            for part in (message.iter_parts() if message.is_multipart() else [message])
        ]
        tmp = base + ".json.tmp"
        with open(tmp, "w") as f:
            json.dump({
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                # After STARTTLS, or on a connection that was TLS from the first byte.
                "tls": session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None,
                # Decoded as a mail reader would; "raw_headers" shows how they travelled.
                "subject": str(message["subject"]),
                "from": str(message["from"]),
                "to": str(message["to"]),
                "message_id": str(message["message-id"]),
                "date": str(message["date"]),
                "mime_version": str(message["mime-version"]),
                "content_type": message.get_content_type(),
                "raw_headers": raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace"),
                "parts": parts,
            }, f)
        os.rename(tmp, base + ".json")
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", default="none", choices=["none", "starttls", "tls"])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()

    context = None
    if args.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    handler = Capture(args.dir)
    kwargs = {}
    if args.tls == "starttls":
        kwargs = {"tls_context": context, "require_starttls": True}
    elif args.tls == "tls":
        kwargs = {"ssl_context": context}
    controller = Controller(handler, hostname="127.0.0.1", port=args.port, server_kwargs={}, **kwargs)
    if args.port == 0:
        # aiosmtpd wants a port: find a free one the way the kernel would give it.
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            controller.port = s.getsockname()[1]
    controller.start()
    print(controller.port, flush=True)
    try:
        sys.stdin.read()  # runs until the test closes stdin or kills it
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
