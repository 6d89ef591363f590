"""A webhook receiver on 127.0.0.1 that records what it gets and answers as told."""

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
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


@dataclass
class Dribbler:
    """An asyncio receiver that keeps each request waiting for `answer_after(path)`
    seconds, sending a `100 Continue` every `drip` seconds meanwhile, then 200.
    Requests in flight are counted by the path's first segment (`/slow/3`: `/slow`)."""

    answer_after: Callable[[str], float]
    drip: float
    port: int = 0
    received: list[Received] = field(default_factory=list)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _answer(self, path: str, writer: asyncio.StreamWriter) -> None:
        deadline = time.monotonic() + self.answer_after(path)
        while (left := deadline - time.monotonic()) > 0:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(min(self.drip, left))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers["content-length"]))
                group = "/" + path.split("/")[1]
                self._in_flight[group] = self._in_flight.get(group, 0) + 1
                self.max_in_flight[group] = max(self.max_in_flight.get(group, 0), self._in_flight[group])
                try:
                    await self._answer(path, writer)
                    self.received.append(Received(path, headers, body, time.time()))
                finally:
                    self._in_flight[group] -= 1
        writer.close()

    def in_flight(self, group: str) -> int:
        return self._in_flight.get(group, 0)

    def bodies(self, group: str) -> list[bytes]:
        return [r.body for r in self.received if r.path.startswith(group)]


@contextlib.asynccontextmanager
async def dribbling(answer_after: Callable[[str], float], *, drip: float) -> AsyncIterator[Dribbler]:
    receiver = Dribbler(answer_after, drip)
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
