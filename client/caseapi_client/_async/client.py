"""The client: one attribute per resource, one method per operation of the API."""
# The synchronous client is generated from this file (client/unasync.py).

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from caseapi_client._async import resources as r
from caseapi_client._core import Call, RetryPolicy, attempts

T = TypeVar("T")

USER_AGENT = "caseapi-client/0.1.0"


@dataclasses.dataclass(frozen=True)
class _Options:
    retry: RetryPolicy
    purpose: str | None


def _headers(call: Call[Any], options: _Options) -> dict[str, str]:
    headers = dict(call.headers)
    if options.purpose is not None:
        headers["X-Purpose"] = options.purpose
    return headers


def _http_options(base_url: str, api_key: str, timeout: float) -> dict[str, Any]:
    return {
        "base_url": base_url.rstrip("/"),
        "headers": {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT},
        "timeout": timeout,
    }


class AsyncClient:
    """A caseapi instance, e.g. `AsyncClient("https://caseapi.example", api_key)`
    (the base URL without `/api/v1`), used as a context manager. A list
    follows the cursors as it is iterated."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(transport=transport, **_http_options(base_url, api_key, timeout))
        self._options = _Options(retry or RetryPolicy(), None)
        self._owns_http = True
        self._attach()

    def _attach(self) -> None:
        self.cases = r.AsyncCases(self, r.CASES)
        self.participants = r.AsyncParticipants(self, r.PARTICIPANTS)
        self.locations = r.AsyncLocations(self, r.LOCATIONS)
        self.seized_items = r.AsyncSeizedItems(self, r.SEIZED_ITEMS)
        self.custody = r.AsyncCustody(self, r.CUSTODY)
        self.detainees = r.AsyncDetainees(self, r.DETAINEES)
        self.requests = r.AsyncRequests(self, r.REQUESTS)
        self.messages = r.AsyncMessages(self, r.MESSAGES)
        self.agencies = r.AsyncAgencies(self, r.AGENCIES)
        self.events = r.AsyncEvents(self, r.EVENTS)
        self.audit = r.AsyncAudit(self, r.AUDIT)
        self.identifiers = r.AsyncIdentifiers(self, r.IDENTIFIERS)
        self.attachments = r.AsyncAttachments(self, r.ATTACHMENTS)
        self.message_attachments = r.AsyncMessageAttachments(self, r.MESSAGE_ATTACHMENTS)
        self.subscriptions = r.AsyncSubscriptions(self, r.SUBSCRIPTIONS)
        self.deliveries = r.AsyncDeliveries(self, r.DELIVERIES)
        self.hits = r.AsyncHits(self)
        self.bundles = r.AsyncBundles(self)
        self.health = r.AsyncHealthChecks(self)
        self.federation = r.AsyncFederation(self)

    def with_purpose(self, purpose: str) -> "AsyncClient":
        """The same client, stating why it needs personal data (`X-Purpose`,
        audited by the server) on every request it sends."""
        view = object.__new__(AsyncClient)
        view._http = self._http
        view._options = dataclasses.replace(self._options, purpose=purpose)
        view._owns_http = False
        view._attach()
        return view

    async def run(self, call: Call[T]) -> T:
        """Send one call, retrying as the policy allows."""
        steps = attempts(call, self._options.retry)
        wait = next(steps)
        while True:
            if wait:
                await asyncio.sleep(wait)
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    content=call.content() if call.content else None,
                    headers=_headers(call, self._options),
                )
            except httpx.TransportError as error:
                outcome = error
            try:
                wait = steps.send(outcome)
            except StopIteration as done:
                result: T = done.value
                return result

    @asynccontextmanager
    async def stream(self, call: Call[Any]) -> AsyncIterator[httpx.Response]:
        """Send one call once and hand over its response unread, for bodies
        too large to hold (the caller resumes a broken download with Range)."""
        async with self._http.stream(
            call.method, call.path, params=call.params, headers=_headers(call, self._options)
        ) as response:
            yield response

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()
