"""An event receiver of the tests' own: a small threaded HTTP server that records every POST.

It stands in for an organization's application: it answers 200 at once, or whatever status it is
told (`answer(500)`), or hangs before answering (`hang(seconds)`), or is down (`down()`, then
`up()` on the same port). Every request is recorded with its headers and raw body, so tests verify
signatures with the `standardwebhooks` library as a real receiver would.

    with Receiver().start() as receiver:
        ... receiver.url ...
        receiver.wait_for(3)
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from tests.services import free_port


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def event_id(self) -> str:
        return self.headers["webhook-id"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: Receiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, the second waits for a delayed ACK
    # (40 ms a request on keep-alive connections). Real servers set TCP_NODELAY too.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        receiver._record(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        status, delay, reply = receiver._behaviour()
        if delay:
            receiver._released.wait(delay)
        payload = reply.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Receiver:
    """The receiver; `url` is where to register it (`http://127.0.0.1:<port>/hooks`)."""

    def __init__(
        self,
        port: int | None = None,
        path: str = "/hooks",
        tls: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.port = port or free_port()
        self.path = path
        self.tls = tls  # (certificate file, key file): serve https
        self.host = host  # the name in `url` (it listens on 127.0.0.1 whatever it is)
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._status = 200
        self._delay = 0.0
        self._reply = "ok"
        self._released = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}{self.path}"

    def start(self) -> Self:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.receiver = self
        if self.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._released.clear()
        # Polls for shutdown every 20 ms, not the default 0.5 s that stop() would wait out.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()  # hanging requests end now
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def down(self) -> None:
        """Stop listening: connections are refused until `up()`."""
        self.stop()

    def up(self) -> None:
        """Listen again on the same port."""
        self.start()

    def answer(self, status: int, reply: str = "ok") -> None:
        """Answer every request with this status (and body) from now on."""
        with self._lock:
            self._status, self._reply, self._delay = status, reply, 0.0

    def hang(self, seconds: float) -> None:
        """Wait this long before answering each request (200)."""
        with self._lock:
            self._status, self._reply, self._delay = 200, "late", seconds

    def _behaviour(self) -> tuple[int, float, str]:
        with self._lock:
            return self._status, self._delay, self._reply

    def _record(self, item: Received) -> None:
        with self._lock:
            self.received.append(item)

    def event_ids(self) -> list[str]:
        with self._lock:
            return [r.event_id for r in self.received]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Wait until at least `count` requests arrived; return them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.received)} requests arrived, not {count}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve a receiver answering 200 at once until SIGTERM; print its URL on one line."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m tests.standin.receiver")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    receiver = Receiver(args.port or None).start()
    print(receiver.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    receiver.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
