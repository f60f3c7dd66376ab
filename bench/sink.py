"""A mail relay for benchmarks, in its own process so that it takes no CPU from the driver: the project's
SMTP sink (aiosmtpd) with a handler that counts and discards instead of parsing and keeping every message."""

from __future__ import annotations

import argparse
import signal
import threading

from aiosmtpd.smtp import SMTP, Envelope, Session

from starter.smtp_sink import SinkHandler, SmtpSink


class DiscardHandler(SinkHandler):
    def __init__(self) -> None:
        super().__init__(None)
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sink = SmtpSink(port=args.port)
    sink.handler = DiscardHandler()
    sink.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    sink.stop()


if __name__ == "__main__":
    main()
