"""The HTTP client that POSTs webhooks: one aiohttp session per deliverer.

Its connector never asks DNS: the PinnedResolver answers a name only with
the address app.webhooks.targets checked for it before the batch, so a DNS
answer that changes in between (DNS rebinding) is never connected to.
Under TLS aiohttp verifies the certificate for the subscribed name (SNI and
hostname check) with the deliverer's context. No redirects, no proxies from
the environment, no cookies. Connections are kept alive across batches.

One bound covers a whole POST: connecting, sending and the whole answer. A
bound on each read would let a receiver that drips its answer (a `100
Continue` now and then) hold the deliverer for as long as it likes. The
answer's body is read up to MAX_RESPONSE_BYTES, so that the connection can
carry the next event, and never kept.
"""

import asyncio
import socket
import ssl

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from app.webhooks.targets import Target, host_of

# A response body is never kept; at most this much is read, so that the
# connection can serve the next event.
MAX_RESPONSE_BYTES = 4096
# A status line or header line, and the number of header fields, at most.
MAX_LINE_BYTES = 8190
MAX_HEADERS = 100


class ReceiverError(Exception):
    """The connection failed, or the answer was not HTTP/1.x."""


class PinnedResolver(AbstractResolver):
    """Each name resolves to the address last checked for it, and nothing else does."""

    def __init__(self) -> None:
        self._checked: dict[str, str] = {}

    def pin(self, target: Target) -> None:
        self._checked[host_of(target.url)] = target.address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self._checked.get(host)
        if address is None:
            raise OSError(f"{host} was not checked")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


class Client:
    """A deliverer's HTTP client; made and closed inside its event loop.
    `timeout` bounds each POST as a whole."""

    def __init__(self, tls: ssl.SSLContext, timeout: float) -> None:
        self.timeout = timeout
        self.resolver = PinnedResolver()
        self.session = aiohttp.ClientSession(
            # No limit of its own: the deliverer's slots (CASEAPI_WEBHOOK_CONCURRENCY) are the limit.
            connector=aiohttp.TCPConnector(resolver=self.resolver, use_dns_cache=False, ssl=tls, limit=0),
            # post() bounds each POST, its second try included.
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_LINE_BYTES,
            max_headers=MAX_HEADERS,
        )

    async def close(self) -> None:
        await self.session.close()

    async def post(self, target: Target, headers: list[tuple[str, str]], body: bytes) -> int:
        """The answer's status. TimeoutError or ReceiverError when there is none."""
        self.resolver.pin(target)
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    return await self._post(target, headers, body)
                except aiohttp.ClientConnectorError:
                    raise
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                    # Connected, then cut off before any answer: most often a
                    # kept-alive connection the receiver had closed as this request
                    # went out. Once more, on a new one, within the same bound.
                    return await self._post(target, headers, body)
        except TimeoutError:
            raise
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise ReceiverError(str(exc) or type(exc).__name__) from exc

    async def _post(self, target: Target, headers: list[tuple[str, str]], body: bytes) -> int:
        async with self.session.post(
            # Stored as it is sent (app.webhooks.targets): not encoded again.
            URL(str(target.url), encoded=True),
            data=body,
            headers=headers,
            allow_redirects=False,
            skip_auto_headers=("Accept", "Accept-Encoding"),
        ) as response:
            read = 0
            async for chunk in response.content.iter_any():
                read += len(chunk)
                if read > MAX_RESPONSE_BYTES:
                    response.close()  # the connection goes rather than read on
                    break
            return response.status
