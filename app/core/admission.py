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

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import problem_response


class Gauge(Protocol):
    def inc(self) -> None: ...

    def dec(self) -> None: ...


class AdmissionLimit:
    """`waiting` counts the requests waiting for a slot (a metric); `exempt` names
    the (method, path pattern) pairs that take no slot."""

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
        self.exempt = exempt
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.waiting = waiting
        self.prefix = prefix
        self._slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not path.startswith(self.prefix)
            or any(scope["method"] == m and p.fullmatch(path) for m, p in self.exempt)
        ):
            await self.app(scope, receive, send)
            return
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
            response = problem_response(
                503, "The service is busy; try again shortly.", slug="busy", headers={"Retry-After": "1"}
            )
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()
