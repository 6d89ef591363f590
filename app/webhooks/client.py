"""The HTTP/1.1 client that POSTs webhooks: one connection per batch, kept alive.

It does one thing, so it does it with little: a request is one write, an
answer is its status line and headers, and at most MAX_RESPONSE_BYTES of
its body, which is read only so that the connection can carry the next
event and is never kept. A general client (httpx, httpcore) spent four
times the CPU per delivery on what it offers besides (bench/webhooks.py).
No redirects, no proxies, no cookies. It connects to the address the
target was checked with; under TLS the certificate is verified for the
subscribed name (SNI and hostname check).

One bound covers a whole POST: connecting, sending and the whole answer. A
bound on each read would let a receiver that drips its answer (a `100
Continue` now and then) hold the deliverer for as long as it likes.
"""

import asyncio
import contextlib
import ssl

from app.webhooks.targets import Target, host_of

# A response body is never kept; at most this much is read, so that the
# connection can serve the next event.
MAX_RESPONSE_BYTES = 4096
# The status line and headers of an answer, at most.
MAX_HEAD_BYTES = 16 * 1024


class ReceiverError(Exception):
    """The connection failed, or the answer was not HTTP/1.x."""


class Connection:
    """To one target; `timeout` bounds each POST, and closing."""

    def __init__(self, target: Target, tls: ssl.SSLContext, timeout: float) -> None:
        self.target = target
        self.tls = tls if target.url.scheme == "https" else None
        self.timeout = timeout
        self.path = target.url.raw_path.decode("ascii")
        self.host = target.authority
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            # A receiver that is gone has nothing more to say.
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await asyncio.wait_for(writer.wait_closed(), self.timeout)

    def _is_open(self) -> bool:
        return self.reader is not None and self.writer is not None and not self.reader.at_eof()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._is_open():
            assert self.reader is not None and self.writer is not None
            return self.reader, self.writer
        await self.close()
        port = self.target.url.port or (443 if self.tls else 80)
        self.reader, self.writer = await asyncio.open_connection(
            self.target.address,
            port,
            ssl=self.tls,
            server_hostname=host_of(self.target.url) if self.tls else None,
            limit=MAX_HEAD_BYTES,
        )
        return self.reader, self.writer

    async def post(self, headers: list[tuple[str, str]], body: bytes) -> int:
        """The answer's status. TimeoutError or ReceiverError when there is none."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(headers, body)
        except TimeoutError:
            await self.close()
            raise
        except (
            OSError,
            ssl.SSLError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ) as exc:
            await self.close()
            raise ReceiverError(str(exc) or type(exc).__name__) from exc

    async def _post(self, headers: list[tuple[str, str]], body: bytes) -> int:
        reused = self._is_open()
        reader, writer = await self._open()
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body)
        try:
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            # The receiver had closed the kept-alive connection before this
            # request reached it (its close crossed our send): a new one, once.
            await self.close()
            return await self._post(headers, body)
        while True:
            version, status, fields = _parse_head(head)
            if not 100 <= status < 200:
                break  # 1xx answers (103 Early Hints) precede the real one
            head = await reader.readuntil(b"\r\n\r\n")
        keep = await self._skip_body(reader, status, fields) and version == "HTTP/1.1"
        if not keep or fields.get("connection", "").lower() == "close":
            await self.close()
        return status

    async def _skip_body(self, reader: asyncio.StreamReader, status: int, fields: dict[str, str]) -> bool:
        """Read past the body, up to MAX_RESPONSE_BYTES; False when the connection
        cannot carry another request (a longer body, or one that ends at close)."""
        if status in (204, 304):
            return True
        if "chunked" in fields.get("transfer-encoding", "").lower():
            read = 0
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    return True
                read += size
                if read > MAX_RESPONSE_BYTES:
                    return False
                await reader.readexactly(size + 2)
        if "content-length" in fields:
            length = int(fields["content-length"])
            if length > MAX_RESPONSE_BYTES:
                return False
            await reader.readexactly(length)
            return True
        return False  # the body ends when the receiver closes


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, code, *_ = status_line.split(" ", 2)
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3:
        raise ValueError(f"not an HTTP/1.x answer: {status_line[:40]!r}")
    fields = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return version, int(code), fields
