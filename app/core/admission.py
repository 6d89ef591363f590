"""Admission control: never more requests at work than database connections.

A sync route holds a pooled connection between worker-thread hops (the
route, then the commit). If more requests were at work than there are
connections, threads would wait on the pool while the requests holding
connections wait for a thread: a stall that ends only in pool timeouts.
Admitting at most `limit` requests at a time, and giving the thread pool
more threads than that, means an admitted request always finds both. The
rest wait on the event loop, where waiting is cheap, and get a 503 with
Retry-After if no slot frees in time: bounded latency, never a hang.

File transfers (`exempt`: method and path) are not admitted this way: one lasts as long as
the client's link takes, holds no connection while its bytes move (only
for its short transactions, each within one thread hop), and would
otherwise keep a slot from every other request for minutes.
"""

import asyncio
import re
from collections.abc import Sequence
from typing import Protocol

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import problem_response


class Gauge(Protocol):
    def inc(self) -> None: ...

    def dec(self) -> None: ...


def busy() -> Response:
    """The answer to a request that found no slot in time."""
    return problem_response(
        503, "The service is busy; try again shortly.", slug="busy", headers={"Retry-After": "1"}
    )


class Admission:
    """The slots (app.core.gate takes them around the rest of a request).
    `waiting` counts the requests waiting for a slot (a metric); `exempt` names
    the (method, path pattern) pairs that take no slot."""

    def __init__(
        self,
        limit: int,
        wait_seconds: float,
        waiting: Gauge,
        prefix: str = "/api/",
        exempt: Sequence[tuple[str, re.Pattern[str]]] = (),
    ) -> None:
        self.exempt = exempt
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.waiting = waiting
        self.prefix = prefix
        self._slots: asyncio.Semaphore | None = None

    def needs_slot(self, scope: Scope) -> bool:
        """Whether an HTTP request takes a slot: under the prefix, and not exempt."""
        path: str = scope.get("path", "")
        return path.startswith(self.prefix) and not any(
            scope["method"] == m and p.fullmatch(path) for m, p in self.exempt
        )

    async def enter(self) -> bool:
        """Take a slot, waiting up to `wait_seconds`; False if none freed in time."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        try:
            if self._slots.locked():
                self.waiting.inc()
                try:
                    await asyncio.wait_for(self._slots.acquire(), timeout=self.wait_seconds)
                finally:
                    self.waiting.dec()
            else:
                await self._slots.acquire()  # free: returns at once, without wait_for's timer
        except TimeoutError:
            return False
        return True

    def leave(self) -> None:
        """Give back the slot enter() took."""
        assert self._slots is not None
        self._slots.release()


class AdmissionLimit:
    """Admission on its own, as an ASGI middleware (the app has it in app.core.gate)."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        wait_seconds: float,
        waiting: Gauge,
        prefix: str = "/api/",
        exempt: Sequence[tuple[str, re.Pattern[str]]] = (),
    ) -> None:
        self.app = app
        self.admission = Admission(limit, wait_seconds, waiting, prefix, exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.admission.needs_slot(scope):
            await self.app(scope, receive, send)
            return
        if not await self.admission.enter():
            await busy()(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave()
