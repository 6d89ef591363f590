"""A webhook receiver on 127.0.0.1 that records what it gets and answers as told."""

import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


# path, how many requests arrived there before this one -> (status, seconds to wait before answering)
Behaviour = Callable[[str, int], tuple[int, float]]


def always_ok(_path: str, _n: int) -> tuple[int, float]:
    return 204, 0.0


@dataclass
class Receiver:
    port: int
    behaviour: Behaviour = always_ok
    received: list[Received] = field(default_factory=list)
    # Requests to one path being answered at the same moment, at most.
    max_in_flight: dict[str, int] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _arrived: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str | None = None) -> list[bytes]:
        with self._lock:
            return [r.body for r in self.received if path is None or r.path == path]


@contextmanager
def receiving(behaviour: Behaviour = always_ok, *, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    receiver = Receiver(port=0, behaviour=behaviour)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver._lock:
                seen = receiver._arrived.get(self.path, 0)
                receiver._arrived[self.path] = seen + 1
                receiver._in_flight[self.path] = receiver._in_flight.get(self.path, 0) + 1
                receiver.max_in_flight[self.path] = max(
                    receiver.max_in_flight.get(self.path, 0), receiver._in_flight[self.path]
                )
            status, delay = receiver.behaviour(self.path, seen)
            try:
                time.sleep(delay)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.received.append(Received(self.path, headers, body, time.time()))
            finally:
                with receiver._lock:
                    receiver._in_flight[self.path] -= 1
            answer = b"" if status == 204 else b'{"secret": "a receiver body the server must not keep"}'
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", receiver.url("/redirected"))
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the deliverer gave up waiting (a time-out test)
                self.wfile.write(answer)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
