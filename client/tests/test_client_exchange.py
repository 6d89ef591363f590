"""caseapi_client against a live server: the resources, cursors, ETags, errors."""

import asyncio
import uuid
from datetime import date

import pytest
import sqlalchemy as sa
from caseapi_client import (
    AsyncClient,
    Case,
    Client,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Unauthorized,
    ValidationError,
)
from caseapi_client.errors import Conflict

from app.auth.models import Scope
from tests.conftest import Caller, make_caller

KYIV = "2025-09-23T00:00:00Z"


def open_case(client: Client, **fields: object) -> Case:
    return client.cases.create(
        reference=f"KZ-UA-2025-KYIV-{uuid.uuid4().hex[:8]}",
        title="Transnational fraudulent call centre in Kyiv",
        **fields,
    )


def test_the_two_agency_exchange(kz_client: Client, ua_client: Client, ua: Caller, kz: Caller) -> None:
    """The README's exchange: KZ-MVD sends an urgent request about the Kyiv case,
    UA-LE acknowledges, answers with a message and marks it answered."""
    case = open_case(kz_client)
    ua_le = next(a for a in kz_client.agencies.list() if a.code == "UA-LE")
    sent = kz_client.requests.create(
        to_agency_id=ua_le,
        case_id=case,
        priority="urgent",
        subject="Subscribers of the seized SIM cards",
        body="Please identify the subscribers of the SIM cards seized in Kyiv on 23 September 2025.",
    )
    assert sent.status == "sent" and sent.etag == '"1"'
    assert sent.from_agency_id == kz.agency_id and sent.to_agency_id == ua.agency_id

    [received] = ua_client.requests.list(box="inbox")
    assert received.id == sent.id and received.priority == "urgent" and received.overdue is False
    acknowledged = ua_client.requests.update(received, status="acknowledged")
    assert acknowledged.etag == '"2"'
    answer = ua_client.messages.create(
        acknowledged,
        body="Subscriber data follows through our secure channel.",
        source_evaluation="B",
        information_evaluation="2",
    )
    answered = ua_client.requests.update(acknowledged, status="answered")
    assert answered.status == "answered" and answered.etag == '"3"'

    with pytest.raises(Conflict) as refused:
        kz_client.requests.update(kz_client.requests.get(sent.id), status="withdrawn")
    assert refused.value.status == 409 and refused.value.problem["status"] == 409

    [read] = kz_client.messages.list(sent)
    assert read.body == answer.body and read.source_evaluation == "B"
    assert kz_client.messages.get(sent, answer.id) == read

    expected = ["request.created", "request.updated", "request_message.created", "request.updated"]
    for client in (kz_client, ua_client):
        kinds = [
            e.type
            for e in client.events.list()
            if e.resource_type in ("information_request", "request_message")
        ]
        assert kinds == expected


def test_lists_follow_the_cursor_to_the_end(kz_client: Client) -> None:
    case = open_case(kz_client)
    labels = [f"Search location {n}" for n in range(1, 12)]  # the article's 11 searches
    for label in labels:
        kz_client.locations.create(case, label=label, city="Kyiv", country="UA", searched_at=KYIV)
    for page_size in (1, 4, 11, 200):
        found = list(kz_client.locations.list(case, limit=page_size))
        assert sorted(x.label for x in found) == sorted(labels), page_size
        assert len({x.id for x in found}) == len(labels)
    # The feed: `after` starts it, the cursor carries it on (sending both is a 422).
    events = list(kz_client.events.list(limit=3))
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    assert sum(e.type == "location.created" for e in events) == len(labels)
    later = list(kz_client.events.list(after=events[4].seq, limit=2))
    assert [e.seq for e in later] == [e.seq for e in events[5:]]


def test_update_and_delete_send_the_etag_of_the_record_given(kz_client: Client) -> None:
    case = open_case(kz_client)
    mine = kz_client.cases.get(case.id)
    theirs = kz_client.cases.get(case.id)
    changed = kz_client.cases.update(mine, status="active")
    assert changed.status == "active" and changed.etag == '"2"'
    with pytest.raises(PreconditionFailed) as stale:
        kz_client.cases.update(theirs, status="suspended")
    assert stale.value.current_etag == '"2"'
    assert kz_client.cases.get(case.id).status == "active"
    # A record read in a list carries its version as its ETag.
    [listed] = [c for c in kz_client.cases.list(q=case.reference)]
    assert kz_client.cases.update(listed, title="Fraudulent call centre in Kyiv").version == 3
    with pytest.raises(PreconditionFailed):
        kz_client.cases.delete(changed)
    kz_client.cases.delete(kz_client.cases.get(case.id))
    with pytest.raises(NotFound):
        kz_client.cases.get(case.id)


def test_errors_carry_the_problem(kz_client: Client, live_server: str, engine: sa.Engine, kz: Caller) -> None:
    case = open_case(kz_client, handling_code="TLP:RED")
    outsider = make_caller(engine, "KG-MVD-CYBER", Scope.read, Scope.write)
    with Client(live_server, outsider.key) as other:
        with pytest.raises(NotFound) as hidden:
            other.cases.get(case.id)
        with pytest.raises(NotFound) as missing:
            other.cases.get(uuid.uuid4())
        # The same answer, but for the id of each request.
        assert hidden.value.request_id != missing.value.request_id
        del hidden.value.problem["request_id"], missing.value.problem["request_id"]
        assert hidden.value.problem == missing.value.problem
    with pytest.raises(ValidationError) as invalid:
        kz_client.seized_items.create(case, category="computer", description="Computers", quantity=0)
    assert invalid.value.errors[0]["loc"][-1] == "quantity"
    reader = make_caller(engine, "KZ-MVD", Scope.read)
    with Client(live_server, reader.key) as read_only, pytest.raises(Forbidden):
        read_only.cases.create(reference="KZ-UA-2025-KYIV-RO", title="Kyiv")
    with Client(live_server, "cak_not-a-key") as stranger, pytest.raises(Unauthorized) as refused:
        list(stranger.cases.list())
    assert refused.value.headers["www-authenticate"] == "Bearer"


def test_personal_data_needs_a_stated_purpose(kz_client: Client) -> None:
    case = open_case(kz_client)
    purposeful = kz_client.with_purpose("extradition file 2025-117")
    detainee = purposeful.detainees.create(
        case,
        label="Detainee 1",
        nationality="UA",
        detained_at=KYIV,
        full_name="Detainee One",
        review_due=date(2025, 10, 1),
    )
    assert detainee.full_name == "Detainee One" and detainee.personal_data_redacted is False
    [overdue] = kz_client.detainees.list(
        case, review_overdue=True
    )  # detained in 2025: review was due in 2026
    assert overdue.id == detainee.id
    assert list(kz_client.detainees.list(case, review_overdue=False)) == []
    redacted = kz_client.detainees.get(detainee.id)
    assert redacted.full_name is None and redacted.personal_data_redacted is True
    assert purposeful.detainees.get(detainee.id).full_name == "Detainee One"


def test_the_async_client_has_the_same_surface(live_server: str, kz: Caller) -> None:
    async def scenario() -> None:
        async with AsyncClient(live_server, kz.key) as client:
            case = await client.cases.create(reference=f"KZ-UA-ASYNC-{uuid.uuid4().hex[:6]}", title="Kyiv")
            for n in range(1, 6):
                await client.seized_items.create(case, category="mobile_phone", description=f"Phone {n}")
            items = [item async for item in client.seized_items.list(case, limit=2)]
            assert len(items) == 5 and len({i.id for i in items}) == 5
            first = await client.cases.get(case.id)
            await client.cases.update(first, status="active")
            with pytest.raises(PreconditionFailed):
                await client.cases.update(first, status="suspended")
            summary = await client.cases.summary(case)
            assert summary.seized_items["mobile_phone"].unknown_quantity == 5

    asyncio.run(scenario())
