"""Refuse what no route may receive, before anything reads it: bodies over
the limit, and NUL characters in the query string (PostgreSQL cannot even
compare a text with one; SQLite would quietly search for it)."""

import re
from urllib.parse import parse_qsl

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import problem_response


class BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing lets it through."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body is larger than {max_bytes} bytes.")


def _nul_query_names(query_string: bytes) -> list[str]:
    if b"\x00" not in query_string and b"%00" not in query_string:
        return []
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    return [name.replace("\x00", "") for name, value in pairs if "\x00" in name or "\x00" in value]


class BodySizeLimit:
    """Pure ASGI: checks Content-Length up front and counts streamed bytes;
    refuses a query string that carries a NUL character with a 422."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        per_path: dict[str, int] | None = None,
        per_pattern: list[tuple[re.Pattern[str], int]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}
        self.per_pattern = per_pattern or []

    def _limit(self, path: str) -> int:
        if path in self.per_path:
            return self.per_path[path]
        return next((limit for pattern, limit in self.per_pattern if pattern.fullmatch(path)), self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nul_names = _nul_query_names(scope.get("query_string", b""))
        if nul_names:
            response = problem_response(
                422,
                "NUL characters are not allowed in the query string.",
                slug="validation-error",
                extra={
                    "errors": [
                        {"loc": ["query", n], "msg": "NUL characters are not allowed"} for n in nul_names
                    ]
                },
            )
            await response(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 1  # let the server's parser and the route refuse it
                if length > limit:
                    await self._refuse(scope, receive, send, limit)
                    return
                has_body = has_body or length > 0
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:
            # HTTP/1.1 frames a body by Content-Length or Transfer-Encoding: without either there is none.
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem_response(
            413,
            f"The request body is larger than {limit} bytes.",
            slug="content-too-large",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
