"""The app's one middleware: every request passes through one ASGI callable.

In this order, each rule in its own module: the request is observed (its
request id, metrics and log line; app.core.observability), held to the rate
limit when one is set (app.core.ratelimit), admitted (app.core.admission),
and its query string and body checked (app.core.limits). Then a GET that
only a hot route could be given (app.core.binder.HotPaths) is answered by that
route's lean binder here, with the app's exception handlers; every other
request, and one the lean binder leaves, goes to FastAPI (its exception
middleware, routing and per-request wrapping), which answers it as always.

One callable rather than a stack of them, and the hot reads without
FastAPI's routing, because every request pays for each layer: on GET
/cases/{id} the layers cost more CPU than the statement's round trip.
"""

from collections.abc import Collection
from typing import Any

from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.admission import Admission, busy
from app.core.binder import HotPaths, HotRoute
from app.core.http import StrictJSONRequest
from app.core.limits import BodyLimits
from app.core.observability.metrics import Metrics
from app.core.observability.middleware import RequestObserver
from app.core.ratelimit.middleware import RateLimit
from app.core.ratelimit.service import Limiter


class Gate(RequestObserver):
    """`app`: what FastAPI puts inside the app's middleware (its exception
    middleware); `router`: the app's, whose hot routes are answered here."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        api_prefix: str,
        api_routes: Collection[object],
        admission: Admission,
        body_limits: BodyLimits,
        router: Router,
        limiter: Limiter | None = None,
        log_requests: bool = False,
    ) -> None:
        inner: ASGIApp = self._admitted
        if limiter is not None:
            inner = RateLimit(inner, limiter=limiter, metrics=metrics)
        super().__init__(inner, metrics, api_prefix, api_routes, log_requests)
        self.fastapi = app
        self.admission = admission
        self.body_limits = body_limits
        self.router = router
        # The hot routes need the handlers FastAPI's exception middleware holds.
        self.hot = HotPaths(router.routes) if isinstance(app, ExceptionMiddleware) else None
        self._handlers: tuple[Any, Any] = (
            (app._exception_handlers, app._status_handlers)
            if isinstance(app, ExceptionMiddleware)
            else ({}, {})
        )

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fastapi(scope, receive, send)
            return
        slot = self.admission.needs_slot(scope)
        if slot and not self.admission.enter_now() and not await self.admission.enter():
            await busy()(scope, receive, send)
            return
        try:
            refusal, limit = self.body_limits.check(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
            elif limit is not None:
                await self.body_limits.counted(self._routed, limit, scope, receive, send)
            else:
                await self._routed(scope, receive, send)
        finally:
            if slot:
                self.admission.leave()

    async def _routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.hot is not None
            and scope["method"] == "GET"
            and not scope.get("root_path")
            # FastAPI's own telemetry, when configured, follows requests through its routing.
            and "fastapi.telemetry" not in scope
        ):
            found = self.hot.match(scope["path"])
            if found is not None and await self._hot(found[0], found[1], scope, receive, send):
                return
        await self.fastapi(scope, receive, send)

    async def _hot(
        self, route: HotRoute, params: dict[str, Any], scope: Scope, receive: Receive, send: Send
    ) -> bool:
        """Answer through `route`'s lean binder, with the scope FastAPI's
        routing would give the endpoint; False when the binder leaves it."""
        scope.setdefault("router", self.router)
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {**scope.get("path_params", {}), **params}
        scope["route"] = route
        scope["starlette.exception_handlers"] = self._handlers
        request = StrictJSONRequest(scope, receive, send)
        left = False

        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal left
            response = await route.answer(request)
            if response is None:
                left = True
            else:
                await response(scope, receive, send)

        # The exception handlers as FastAPI applies them to a route's errors.
        await wrap_app_handling_exceptions(answer, request)(scope, receive, send)
        return not left
