"""Refuse what no route may receive, before anything reads it: bodies over
the limit, and NUL characters in the query string (PostgreSQL cannot even
compare a text with one; SQLite would quietly search for it)."""

import re
from urllib.parse import parse_qsl

from fastapi import HTTPException
from starlette.responses import Response
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


class BodyLimits:
    """What a request may send (app.core.gate checks it before anything reads
    the request): a body within `max_bytes` (or its path's own limit), by its
    Content-Length and by the bytes it streams; a query string without NUL."""

    def __init__(
        self,
        max_bytes: int,
        per_path: dict[str, int] | None = None,
        per_pattern: list[tuple[re.Pattern[str], int]] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.per_path = per_path or {}
        self.per_pattern = per_pattern or []

    def _limit(self, path: str) -> int:
        if path in self.per_path:
            return self.per_path[path]
        return next((limit for pattern, limit in self.per_pattern if pattern.fullmatch(path)), self.max_bytes)

    def check(self, scope: Scope) -> tuple[Response | None, int | None]:
        """An HTTP request's refusal (422, 413) or None, and the limit its
        streamed body is held to (None: it has no body)."""
        nul_names = _nul_query_names(scope.get("query_string", b""))
        if nul_names:
            return problem_response(
                422,
                "NUL characters are not allowed in the query string.",
                slug="validation-error",
                extra={
                    "errors": [
                        {"loc": ["query", n], "msg": "NUL characters are not allowed"} for n in nul_names
                    ]
                },
            ), None
        limit: int | None = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 1  # let the server's parser and the route refuse it
                if limit is None:
                    limit = self._limit(scope["path"])
                if length > limit:
                    return too_large(limit), None
                has_body = has_body or length > 0
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:
            # HTTP/1.1 frames a body by Content-Length or Transfer-Encoding: without either there is none.
            return None, None
        return None, self._limit(scope["path"]) if limit is None else limit

    async def counted(self, app: ASGIApp, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        """`app` with the body's bytes counted as they arrive: a 413 once they exceed `limit`."""
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
            await app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await too_large(limit)(scope, receive, send)


def too_large(limit: int) -> Response:
    return problem_response(
        413,
        f"The request body is larger than {limit} bytes.",
        slug="content-too-large",
        headers={"Connection": "close"},
    )


class BodySizeLimit:
    """BodyLimits on their own, as an ASGI middleware (the app has them in app.core.gate)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        per_path: dict[str, int] | None = None,
        per_pattern: list[tuple[re.Pattern[str], int]] | None = None,
    ) -> None:
        self.app = app
        self.limits = BodyLimits(max_bytes, per_path, per_pattern)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal, limit = self.limits.check(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
        elif limit is None:
            await self.app(scope, receive, send)
        else:
            await self.limits.counted(self.app, limit, scope, receive, send)
