"""The resources as attributes of a client: `client.cases.list()`, ...

Each resource is assembled from the operations it has, so a typed caller
cannot call one the API does not offer (there is no `client.events.create`).
What each operation sends and how its answer is read is built once, in
`_core`; this file only waits for it.
"""
# The synchronous resources are generated from this file (client/unasync.py).

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import IO, Any, Generic, Protocol, TypeVar

import httpx

from caseapi_client._core import (
    API,
    Call,
    Page,
    R,
    Ref,
    Spec,
    content,
    creating,
    document,
    raw,
    record,
    ref_id,
)
from caseapi_client.errors import raise_for_problem
from caseapi_client.models import (
    Agency,
    Attachment,
    AuditEntry,
    AuditVerification,
    Case,
    CaseSummary,
    CustodyEvent,
    Delivery,
    Detainee,
    Event,
    Health,
    HitResults,
    Identifier,
    InformationRequest,
    InstanceDocument,
    Location,
    Message,
    Participant,
    PeerList,
    PeerState,
    SeizedItem,
    Subscription,
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
IDENTIFIERS = Spec(Identifier, "/cases/{}/identifiers", "/identifiers/{}")
ATTACHMENTS = Spec(Attachment, "/cases/{}/attachments", "/attachments/{}")
MESSAGE_ATTACHMENTS = Spec(Attachment, "/requests/{}/messages/{}/attachments", "/attachments/{}")
SUBSCRIPTIONS = Spec(Subscription, "/subscriptions", "/subscriptions/{}")
DELIVERIES = Spec(Delivery, "/subscriptions/{}/deliveries")

# How much of a file is read at a time when it is uploaded.
_CHUNK = 64 * 1024


class AsyncRunner(Protocol):
    async def run(self, call: Call[T]) -> T: ...

    def stream(self, call: Call[Any]) -> AbstractAsyncContextManager[httpx.Response]: ...


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
        """Every record the caller sees, page after page (`limit` sets the page size)."""
        return self._pages(None, filters)


class _AsyncListUnder(_AsyncResource[R]):
    def list(self, parent: Ref, **filters: Any) -> AsyncIterator[R]:
        """Every record under `parent` (a record or its id), page after page."""
        return self._pages(parent, filters)


class _AsyncGet(_AsyncResource[R]):
    async def get(self, *ids: Ref) -> R:
        """One record by its id (under a case or request: the parent's, then its own)."""
        return await self._runner.run(self._spec.get_call(ids))


class _AsyncCreate(_AsyncResource[R]):
    async def create(self, **fields: Any) -> R:
        return await self._runner.run(self._spec.create_call(None, fields))


class _AsyncCreateUnder(_AsyncResource[R]):
    async def create(self, parent: Ref, **fields: Any) -> R:
        return await self._runner.run(self._spec.create_call(parent, fields))


class _AsyncUpdate(_AsyncResource[R]):
    async def update(self, current: R, **changes: Any) -> R:
        """Change the record as last read: a change made since raises PreconditionFailed."""
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
        """The case and everything under it as one document (`bundle_version: 1`)."""
        path = self._spec.path(ref_id(case)) + "/bundle"
        return await self._runner.run(Call("GET", path, raw, replayable=True))

    async def stix(self, case: Ref) -> dict[str, Any]:
        """The case as a STIX 2.1 bundle (a dict), marked with its handling code."""
        path = self._spec.path(ref_id(case)) + "/stix"
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


class AsyncIdentifiers(
    _AsyncListUnder[Identifier],
    _AsyncGet[Identifier],
    _AsyncCreateUnder[Identifier],
    _AsyncDelete[Identifier],
):
    pass


class _AsyncUpload(_AsyncResource[Attachment]):
    async def upload(
        self,
        parent: Ref,
        data: bytes | IO[bytes],
        *,
        filename: str,
        content_type: str = "application/octet-stream",
    ) -> Attachment:
        """Attach a file: its bytes, or a binary file object read in chunks
        (never whole in memory). The server computes the sha256."""
        call = creating(
            self._spec.collection_path(parent),
            record(Attachment),
            params={"filename": filename},
            headers={"Content-Type": content_type},
            content=_body(data),
        )
        return await self._runner.run(call)


class AsyncAttachments(
    _AsyncListUnder[Attachment], _AsyncGet[Attachment], _AsyncDelete[Attachment], _AsyncUpload
):
    async def download(self, attachment: Ref) -> bytes:
        """The file's bytes, whole: for large files, use stream()."""
        path = self._spec.path(ref_id(attachment)) + "/content"
        return await self._runner.run(Call("GET", path, content, replayable=True))

    @asynccontextmanager
    async def stream(self, attachment: Ref, *, start: int = 0) -> AsyncIterator[AsyncIterator[bytes]]:
        """The file's bytes as they arrive, from byte `start` on (to resume a
        download that broke off): `async with client.attachments.stream(a) as chunks:`."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        path = self._spec.path(ref_id(attachment)) + "/content"
        async with self._runner.stream(Call("GET", path, content, headers=headers)) as response:
            if response.is_error:
                await response.aread()
                raise_for_problem(response)
            yield response.aiter_bytes()


class AsyncMessageAttachments(_AsyncListUnder[Attachment], _AsyncUpload):
    pass


class AsyncSubscriptions(
    _AsyncList[Subscription], _AsyncGet[Subscription], _AsyncCreate[Subscription], _AsyncDelete[Subscription]
):
    """Webhook subscriptions of the caller's agency (an `admin` key). The
    answer to create() carries the signing `secret`, shown once."""


class AsyncDeliveries(_AsyncListUnder[Delivery]):
    """A subscription's delivery attempts: `client.deliveries.list(subscription)`."""


class AsyncHits:
    def __init__(self, runner: AsyncRunner) -> None:
        self._runner = runner

    async def search(self, items: Iterable[Mapping[str, str]], *, federated: bool = False) -> HitResults:
        """Hit/no-hit: whether the cases this instance holds (and, `federated`,
        its peers') hold these identifiers, each `{"kind": ..., "value": ...}`.
        The answer's `.items` follow the order asked."""
        body: dict[str, Any] = {"items": [dict(item) for item in items]}
        if federated:
            body["federated"] = True
        # A search creates nothing: sending it again is safe.
        return await self._runner.run(
            Call("POST", API + "/hits", document(HitResults), json=body, replayable=True)
        )


class AsyncBundles:
    def __init__(self, runner: AsyncRunner) -> None:
        self._runner = runner

    async def import_(self, bundle: Mapping[str, Any]) -> Case:
        """Import a bundle (as `cases.bundle()` gives it) as a new case led by
        the caller's agency: all of it, or an error and nothing."""
        return await self._runner.run(creating(API + "/bundles", record(Case), json=bundle))


class AsyncFederation:
    def __init__(self, runner: AsyncRunner) -> None:
        self._runner = runner

    async def instance(self) -> InstanceDocument:
        """The instance's id and public key, and the key's thumbprint (no key
        needed): compare it before trusting the instance as a peer."""
        path = API + "/federation/instance"
        return await self._runner.run(Call("GET", path, document(InstanceDocument), replayable=True))

    async def peers(self) -> list[PeerState]:
        """Scope `admin`: the peers this instance trusts and how delivery to each
        stands (`last_success_at`, `last_error`, `pending`)."""
        path = API + "/federation/peers"
        found = await self._runner.run(Call("GET", path, document(PeerList), replayable=True))
        return list(found.items)


class AsyncHealthChecks:
    def __init__(self, runner: AsyncRunner) -> None:
        self._runner = runner

    async def live(self) -> Health:
        return await self._runner.run(Call("GET", API + "/health", document(Health), replayable=True))

    async def ready(self) -> Health:
        """Ready when the database answers at the newest schema; else ServiceUnavailable."""
        return await self._runner.run(Call("GET", API + "/health/ready", document(Health), replayable=True))


def _body(data: bytes | IO[bytes]) -> Any:
    """The upload's body for one attempt: the bytes, or the file from where it
    stood when the upload began (a retry reads it again from there)."""
    if isinstance(data, bytes | bytearray | memoryview):
        whole = bytes(data)
        return lambda: whole
    start = data.tell() if data.seekable() else None
    sent = False

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        if start is not None:
            data.seek(start)
        elif sent:
            # A pipe read by a failed attempt is gone: never send its rest as the file.
            raise ValueError("This upload's stream cannot be rewound to be sent again.")
        sent = True
        while piece := data.read(_CHUNK):
            yield piece

    return chunks
