"""The outermost part of the app's middleware (app.core.gate is one): a
request id for every request, its metrics, its log line, and the last word
on an exception nothing else handled.

Pure ASGI and cheap, as every request pays for it: one header scan, one
closure, one list copy of the response headers, two metric updates, one
log record.
"""

import logging
import os
import re
import time
from collections.abc import Collection
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import problem_response
from app.core.observability.logs import request_id_var
from app.core.observability.metrics import UNMATCHED, Metrics

log = logging.getLogger("caseapi")
request_log = logging.getLogger("caseapi.request")

REQUEST_ID_HEADER = b"x-request-id"
# 1 to 128 visible ASCII characters: anything else (control characters, spaces,
# non-ASCII, something long) could forge or break log lines, so it is replaced.
_SANE_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")


def request_id_of(scope: Scope) -> str:
    """The client's X-Request-ID when it is sane, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _SANE_REQUEST_ID.fullmatch(value):
                return bytes(value).decode("ascii")
            break
    return os.urandom(16).hex()  # as unique as a uuid4, at a fraction of its cost


def _path_of(scope: Scope) -> str:
    """The path as the client sent it, still percent-encoded, so that no
    control character reaches a text log line; never the query string."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        return quote(scope["path"])
    return raw.partition(b"?")[0].decode("latin-1")


def _client_id(scope: Scope) -> str | None:
    # app.auth leaves the authenticated principal in the request's state.
    principal = scope.get("state", {}).get("principal")
    return None if principal is None else str(principal.client_id)


class RequestObserver:
    """`api_routes`: the routes included under `api_prefix`. FastAPI may put
    a router's own route object, whose path lacks the prefix, in the scope;
    the health routes are included both under the prefix and at the root.
    With `log_requests`, one line per request: what was asked and how it
    ended, with no query string, header or body (search terms and personal
    data travel there)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        api_prefix: str,
        api_routes: Collection[object],
        log_requests: bool = False,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.api_prefix = api_prefix
        self.log_requests = log_requests
        # By identity: route objects define equality but no hash.
        self.api_route_ids = frozenset(id(route) for route in api_routes)

    def route_template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        path: str = route.path
        if id(route) in self.api_route_ids and not path.startswith(self.api_prefix):
            return self.api_prefix + path if scope["path"].startswith(self.api_prefix) else path
        return path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_of(scope)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        token = request_id_var.set(request_id)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # The traceback and the problem body carry the same request id, so
            # that a client reporting a 500 can be matched with its cause.
            log.exception("unhandled error")
            if status == 0:
                response = problem_response(500, "An unexpected error occurred.", slug="internal-error")
                await response(scope, receive, send_with_id)
            # Else the response was under way: the server closes the connection.
        finally:
            seconds = time.perf_counter() - start
            route = self.route_template(scope)
            if self.log_requests:
                request_log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": _path_of(scope),
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "client_id": _client_id(scope),
                    },
                )
            request_id_var.reset(token)
            self.metrics.observe(scope["method"], route, status, seconds)
