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
import collections
import re
from collections.abc import Sequence
from typing import Protocol

from starlette.responses import Response
from starlette.types import Scope

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
        # A semaphore of its own, rather than asyncio's: a free slot is taken
        # without a coroutine (enter_now), and a waiter belongs to no event
        # loop in particular (tests drive one app from several).
        self._free = limit
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def needs_slot(self, scope: Scope) -> bool:
        """Whether an HTTP request takes a slot: under the prefix, and not exempt."""
        path: str = scope.get("path", "")
        return path.startswith(self.prefix) and not any(
            scope["method"] == m and p.fullmatch(path) for m, p in self.exempt
        )

    def enter_now(self) -> bool:
        """Take a slot if one is free and no request waits for one."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def enter(self) -> bool:
        """Take a slot, after the requests already waiting, within `wait_seconds`;
        False if none was given in time."""
        if self.enter_now():
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.waiting.inc()
        try:
            async with asyncio.timeout(self.wait_seconds):
                await waiter
        except BaseException as exc:
            given = waiter.done() and not waiter.cancelled()  # leave() gave it the slot as the wait ended
            if not given and waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                return given
            if given:
                self.leave()
            raise
        finally:
            self.waiting.dec()
        return True

    def leave(self) -> None:
        """Give the slot taken to the first request waiting, or back."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
