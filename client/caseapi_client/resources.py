"""The resources as attributes of a client: `client.cases.list()`, ...

Each resource is assembled from the operations it has, so a typed caller
cannot call one the API does not offer (there is no `client.events.create`).
The synchronous and asynchronous operations differ only in how they wait;
what they send and how they read the answer is built once, in `_core`.
"""

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

from caseapi_client._core import API, Call, Page, R, Ref, Spec, document, raw, ref_id
from caseapi_client.models import (
    Agency,
    AuditEntry,
    AuditVerification,
    Case,
    CaseSummary,
    CustodyEvent,
    Detainee,
    Event,
    InformationRequest,
    Location,
    Message,
    Participant,
    SeizedItem,
)

T = TypeVar("T")

CASES = Spec(Case, "/cases", "/cases/{}")
PARTICIPANTS = Spec(Participant, "/cases/{}/participants", "/cases/{}/participants/{}")
LOCATIONS = Spec(Location, "/cases/{}/locations", "/locations/{}")
SEIZED_ITEMS = Spec(SeizedItem, "/cases/{}/seized-items", "/seized-items/{}")
CUSTODY = Spec(CustodyEvent, "/seized-items/{}/custody", "/seized-items/{}/custody/{}")
DETAINEES = Spec(Detainee, "/cases/{}/detainees", "/detainees/{}")
REQUESTS = Spec(InformationRequest, "/requests", "/requests/{}")
MESSAGES = Spec(Message, "/requests/{}/messages", "/requests/{}/messages/{}")
AGENCIES = Spec(Agency, "/agencies", "/agencies/{}")
# `after` starts the feed at a seq; the cursor then carries the position.
EVENTS = Spec(Event, "/events", starts_only=frozenset({"after"}))
AUDIT = Spec(AuditEntry, "/audit")


class Runner(Protocol):
    def run(self, call: Call[T]) -> T: ...


class AsyncRunner(Protocol):
    async def run(self, call: Call[T]) -> T: ...


# --- synchronous ---------------------------------------------------------------


class _Resource(Generic[R]):
    def __init__(self, runner: Runner, spec: Spec[R]) -> None:
        self._runner = runner
        self._spec = spec

    def _pages(self, parent: Ref | None, filters: Mapping[str, Any]) -> Iterator[R]:
        cursor: str | None = None
        while True:
            page: Page[R] = self._runner.run(self._spec.list_call(parent, filters, cursor))
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


class _List(_Resource[R]):
    def list(self, **filters: Any) -> Iterator[R]:
        """Every record the caller sees, page after page (`limit` sets the page size)."""
        return self._pages(None, filters)


class _ListUnder(_Resource[R]):
    def list(self, parent: Ref, **filters: Any) -> Iterator[R]:
        """Every record under `parent` (a record or its id), page after page."""
        return self._pages(parent, filters)


class _Get(_Resource[R]):
    def get(self, *ids: Ref) -> R:
        """One record by its id (under a case or request: the parent's, then its own)."""
        return self._runner.run(self._spec.get_call(ids))


class _Create(_Resource[R]):
    def create(self, **fields: Any) -> R:
        return self._runner.run(self._spec.create_call(None, fields))


class _CreateUnder(_Resource[R]):
    def create(self, parent: Ref, **fields: Any) -> R:
        return self._runner.run(self._spec.create_call(parent, fields))


class _Update(_Resource[R]):
    def update(self, current: R, **changes: Any) -> R:
        """Change the record as last read: a change made since raises PreconditionFailed."""
        return self._runner.run(self._spec.update_call(current, changes))


class _Delete(_Resource[R]):
    def delete(self, current: R) -> None:
        self._runner.run(self._spec.delete_call(current))


class Cases(_List[Case], _Get[Case], _Create[Case], _Update[Case], _Delete[Case]):
    def summary(self, case: Ref) -> CaseSummary:
        path = self._spec.path(ref_id(case)) + "/summary"
        return self._runner.run(Call("GET", path, document(CaseSummary), replayable=True))

    def bundle(self, case: Ref) -> dict[str, Any]:
        """The case and everything under it as one document (`bundle_version: 1`)."""
        path = self._spec.path(ref_id(case)) + "/bundle"
        return self._runner.run(Call("GET", path, raw, replayable=True))


class Participants(
    _ListUnder[Participant],
    _Get[Participant],
    _CreateUnder[Participant],
    _Update[Participant],
    _Delete[Participant],
):
    pass


class Locations(
    _ListUnder[Location], _Get[Location], _CreateUnder[Location], _Update[Location], _Delete[Location]
):
    pass


class SeizedItems(
    _ListUnder[SeizedItem],
    _Get[SeizedItem],
    _CreateUnder[SeizedItem],
    _Update[SeizedItem],
    _Delete[SeizedItem],
):
    pass


class Custody(_ListUnder[CustodyEvent], _Get[CustodyEvent], _CreateUnder[CustodyEvent]):
    pass


class Detainees(
    _ListUnder[Detainee], _Get[Detainee], _CreateUnder[Detainee], _Update[Detainee], _Delete[Detainee]
):
    pass


class Requests(
    _List[InformationRequest],
    _Get[InformationRequest],
    _Create[InformationRequest],
    _Update[InformationRequest],
):
    pass


class Messages(_ListUnder[Message], _Get[Message], _CreateUnder[Message]):
    pass


class Agencies(_List[Agency], _Get[Agency], _Create[Agency], _Update[Agency]):
    pass


class Events(_List[Event]):
    pass


class Audit(_List[AuditEntry]):
    def verify(self) -> AuditVerification:
        return self._runner.run(
            Call("GET", API + "/audit/verify", document(AuditVerification), replayable=True)
        )


# --- asynchronous ----------------------------------------------------------------


class _AsyncResource(Generic[R]):
    def __init__(self, runner: AsyncRunner, spec: Spec[R]) -> None:
        self._runner = runner
        self._spec = spec

    async def _pages(self, parent: Ref | None, filters: Mapping[str, Any]) -> AsyncIterator[R]:
        cursor: str | None = None
        while True:
            page: Page[R] = await self._runner.run(self._spec.list_call(parent, filters, cursor))
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


class _AsyncList(_AsyncResource[R]):
    def list(self, **filters: Any) -> AsyncIterator[R]:
        return self._pages(None, filters)


class _AsyncListUnder(_AsyncResource[R]):
    def list(self, parent: Ref, **filters: Any) -> AsyncIterator[R]:
        return self._pages(parent, filters)


class _AsyncGet(_AsyncResource[R]):
    async def get(self, *ids: Ref) -> R:
        return await self._runner.run(self._spec.get_call(ids))


class _AsyncCreate(_AsyncResource[R]):
    async def create(self, **fields: Any) -> R:
        return await self._runner.run(self._spec.create_call(None, fields))


class _AsyncCreateUnder(_AsyncResource[R]):
    async def create(self, parent: Ref, **fields: Any) -> R:
        return await self._runner.run(self._spec.create_call(parent, fields))


class _AsyncUpdate(_AsyncResource[R]):
    async def update(self, current: R, **changes: Any) -> R:
        return await self._runner.run(self._spec.update_call(current, changes))


class _AsyncDelete(_AsyncResource[R]):
    async def delete(self, current: R) -> None:
        await self._runner.run(self._spec.delete_call(current))


class AsyncCases(
    _AsyncList[Case], _AsyncGet[Case], _AsyncCreate[Case], _AsyncUpdate[Case], _AsyncDelete[Case]
):
    async def summary(self, case: Ref) -> CaseSummary:
        path = self._spec.path(ref_id(case)) + "/summary"
        return await self._runner.run(Call("GET", path, document(CaseSummary), replayable=True))

    async def bundle(self, case: Ref) -> dict[str, Any]:
        path = self._spec.path(ref_id(case)) + "/bundle"
        return await self._runner.run(Call("GET", path, raw, replayable=True))


class AsyncParticipants(
    _AsyncListUnder[Participant],
    _AsyncGet[Participant],
    _AsyncCreateUnder[Participant],
    _AsyncUpdate[Participant],
    _AsyncDelete[Participant],
):
    pass


class AsyncLocations(
    _AsyncListUnder[Location],
    _AsyncGet[Location],
    _AsyncCreateUnder[Location],
    _AsyncUpdate[Location],
    _AsyncDelete[Location],
):
    pass


class AsyncSeizedItems(
    _AsyncListUnder[SeizedItem],
    _AsyncGet[SeizedItem],
    _AsyncCreateUnder[SeizedItem],
    _AsyncUpdate[SeizedItem],
    _AsyncDelete[SeizedItem],
):
    pass


class AsyncCustody(_AsyncListUnder[CustodyEvent], _AsyncGet[CustodyEvent], _AsyncCreateUnder[CustodyEvent]):
    pass


class AsyncDetainees(
    _AsyncListUnder[Detainee],
    _AsyncGet[Detainee],
    _AsyncCreateUnder[Detainee],
    _AsyncUpdate[Detainee],
    _AsyncDelete[Detainee],
):
    pass


class AsyncRequests(
    _AsyncList[InformationRequest],
    _AsyncGet[InformationRequest],
    _AsyncCreate[InformationRequest],
    _AsyncUpdate[InformationRequest],
):
    pass


class AsyncMessages(_AsyncListUnder[Message], _AsyncGet[Message], _AsyncCreateUnder[Message]):
    pass


class AsyncAgencies(_AsyncList[Agency], _AsyncGet[Agency], _AsyncCreate[Agency], _AsyncUpdate[Agency]):
    pass


class AsyncEvents(_AsyncList[Event]):
    pass


class AsyncAudit(_AsyncList[AuditEntry]):
    async def verify(self) -> AuditVerification:
        return await self._runner.run(
            Call("GET", API + "/audit/verify", document(AuditVerification), replayable=True)
        )
