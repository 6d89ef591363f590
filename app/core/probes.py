"""Probes of ids: a client that keeps getting 404 on routes that name an id.

Hidden rows answer exactly as missing ones (app.access), so a client trying
ids learns nothing; this is what tells the operator that one is trying.
Counts are kept per worker in fixed windows: with N workers a prober is
reported once it passes the threshold in one of them.
"""

import logging
import time
from collections.abc import Callable

from fastapi import Request

security_log = logging.getLogger("caseapi.security")


class ProbeCounter:
    """404s on id routes per client, in windows of `window` seconds.

    `note()` answers the count when it reaches the threshold, and again at
    each further multiple of it, so a long probe is reported as it goes on
    without writing one line per request.
    """

    def __init__(
        self,
        threshold: int,
        window: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # client -> (window start, 404s in it)

    def note(self, client: str) -> int | None:
        now = self._clock()
        start, count = self._windows.get(client, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        elif client not in self._windows and len(self._windows) >= self.max_clients:
            self._forget_expired(now)
        count += 1
        self._windows[client] = (start, count)
        return count if count % self.threshold == 0 else None

    def _forget_expired(self, now: float) -> None:
        self._windows = {c: w for c, w in self._windows.items() if now - w[0] < self.window}
        if len(self._windows) >= self.max_clients:
            self._windows.clear()  # a flood of clients: bounded memory first


def route_template(request: Request) -> str:
    """The request's path with each path parameter's segment named, not valued:
    `/api/v1/detainees/{detainee_id}` (the ids a prober tries stay out of the log)."""
    names = {value: name for name, value in request.path_params.items()}
    return "/".join(f"{{{names[s]}}}" if s in names else s for s in request.url.path.split("/"))


def note_not_found(request: Request) -> None:
    """Count a 404 of an authenticated client on a route with an id in its path."""
    principal = getattr(request.state, "principal", None)
    if principal is None or not request.path_params:
        return
    probes: ProbeCounter = request.app.state.probes
    count = probes.note(str(principal.client_id))
    if count is None:
        return
    security_log.warning(
        "id_probe",
        extra={
            "count": count,
            "window_seconds": probes.window,
            "method": request.method,
            "route": route_template(request),
            "client_id": str(principal.client_id),
            "agency_id": str(principal.agency_id),
            "remote": request.client.host if request.client else None,
        },
    )
