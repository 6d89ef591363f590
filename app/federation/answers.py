"""Reading what a peer answers: never more than a bound. A hostile peer that
answers a delivery, a forwarded write or a search with an endless body (or a
compressed bomb) is cut off at the bound, not read into memory whole."""

from typing import Any

import httpx

# A receipt, or a problem document: a few hundred bytes.
RECEIPT_BYTES = 1024 * 1024
# A peer's directory of agencies: tens of thousands of them.
DIRECTORY_BYTES = 16 * 1024 * 1024
# Headers that describe the body as it travelled, not as it was read.
_TRANSFER_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class AnswerTooLarge(httpx.HTTPError):
    """The peer's answer went past the bound: it is not read further."""


async def request(
    http: httpx.AsyncClient, method: str, url: str, *, limit: int, **kwargs: Any
) -> httpx.Response:
    """The peer's answer, read (decoded) up to `limit` bytes; AnswerTooLarge past it."""
    async with http.stream(method, url, **kwargs) as response:
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise AnswerTooLarge(f"{url} answered more than {limit} bytes")
            chunks.append(chunk)
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _TRANSFER_HEADERS]
    return httpx.Response(
        response.status_code, headers=headers, content=b"".join(chunks), request=response.request
    )
