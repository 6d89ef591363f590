"""Hit/no-hit: what a match shows follows the case's handling code and the caller's place in it;
a match it may not see answers exactly as no match. The lead of a case the caller does not see in
full is notified (app.identifiers.notices, run here by hit_events())."""

import hashlib
import hmac
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.core.config import Settings
from app.core.secrets import search_term_key
from app.core.uow import run_with_database
from app.identifiers import notices
from tests.conftest import AUDIT_KEY, Caller, join, make_agency, make_caller, new_case, walk

T = TypeVar("T")

API = "/api/v1"
PHONE = "+7 701 000 00 01"
E164 = "+77010000001"


def add(client: TestClient, caller: Caller, case_id: str, kind: str, value: str) -> dict[str, Any]:
    response = client.post(
        f"{API}/cases/{case_id}/identifiers", json={"kind": kind, "value": value}, headers=caller.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def search(client: TestClient, caller: Caller, *items: tuple[str, str]) -> Any:
    body = {"items": [{"kind": k, "value": v} for k, v in items]}
    return client.post(f"{API}/hits", json=body, headers=caller.headers)


def on_database(engine: sa.Engine | str, step: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """`await step(db, *args, **kwargs)` on a Database of `engine` (a notices step, as a command runs it)."""
    return run_with_database(engine, lambda db: step(db, *args, **kwargs), audit_key=AUDIT_KEY, size=2)


def hit_events(client: TestClient, caller: Caller) -> list[dict[str, Any]]:
    """The caller's hit.received events, once the notices of every search so far are written."""
    state = client.app.state  # type: ignore[attr-defined]
    on_database(state.settings.database_url, notices.process, state.settings)
    return [e for e in walk(client, f"{API}/events", caller.headers) if e["type"] == "hit.received"]


@pytest.fixture
def searcher(engine: sa.Engine) -> Caller:
    """An agency in no case, with the read scope only."""
    return make_caller(engine, "EU-SEARCH", Scope.read)


@pytest.mark.parametrize(
    ("handling_code", "shown"),
    [
        ("TLP:RED", None),
        ("TLP:AMBER+STRICT", None),
        ("TLP:AMBER", None),
        ("TLP:GREEN", "summary"),
        ("TLP:CLEAR", "summary"),
    ],
)
def test_a_non_participant_sees_only_public_cases(
    client: TestClient, lead: Caller, searcher: Caller, handling_code: str, shown: str | None
) -> None:
    case = new_case(client, lead, handling_code=handling_code, title="Call centre in Kyiv")
    add(client, lead, case["id"], "phone", PHONE)
    result = search(client, searcher, ("phone", PHONE))
    assert result.status_code == 200, result.text
    (item,) = result.json()["items"]
    assert item["kind"] == "phone" and item["normalized"] == E164
    # The lead learns of the search either way: a summary match is as much a lead as a hidden one.
    assert len(hit_events(client, lead)) == 1
    if shown is None:
        assert item == {"kind": "phone", "normalized": E164, "hit": False, "matches": []}
    else:
        assert item["hit"] is True
        assert item["matches"] == [
            {
                "access": "summary",
                "case": {
                    "id": case["id"],
                    "reference": case["reference"],
                    "title": "Call centre in Kyiv",
                    "handling_code": handling_code,
                    "lead_agency_id": str(lead.agency_id),
                },
                "identifier": None,
            }
        ]


@pytest.mark.parametrize(
    "handling_code", ["TLP:RED", "TLP:AMBER+STRICT", "TLP:AMBER", "TLP:GREEN", "TLP:CLEAR"]
)
@pytest.mark.parametrize("role", ["partner", "observer"])
def test_a_participant_sees_the_identifier(
    client: TestClient, lead: Caller, searcher: Caller, handling_code: str, role: str
) -> None:
    case = new_case(client, lead, handling_code=handling_code)
    identifier = add(client, lead, case["id"], "phone", PHONE)
    join(client, lead, case["id"], searcher, role=role)
    (item,) = search(client, searcher, ("phone", "8 701 000 00 01")).json()["items"]
    assert item["hit"] is True
    (match,) = item["matches"]
    assert match["access"] == "full"
    assert match["case"]["id"] == case["id"]
    assert match["identifier"] == {
        "id": identifier["id"],
        "case_id": case["id"],
        "kind": "phone",
        "normalized": E164,
        "note": None,
    }
    assert hit_events(client, lead) == []


@pytest.mark.parametrize(
    ("handling_code", "full"), [("TLP:AMBER", True), ("TLP:AMBER+STRICT", False), ("TLP:RED", False)]
)
def test_a_sub_agency_of_a_participant_sees_amber_cases_only(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, handling_code: str, full: bool
) -> None:
    sub = make_caller(engine, "UA-CYBER", Scope.read, parent_id=partner.agency_id)
    case = new_case(client, lead, handling_code=handling_code)
    join(client, lead, case["id"], partner)
    add(client, lead, case["id"], "phone", PHONE)
    (item,) = search(client, sub, ("phone", PHONE)).json()["items"]
    assert item["hit"] is full
    assert [m["access"] for m in item["matches"]] == (["full"] if full else [])
    assert len(hit_events(client, lead)) == (0 if full else 1)


def test_hit_received_reaches_the_lead_only(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, searcher: Caller
) -> None:
    case = new_case(client, lead, handling_code="TLP:RED")
    join(client, lead, case["id"], partner)
    phone = add(client, lead, case["id"], "phone", PHONE)
    email = add(client, lead, case["id"], "email", "support@chargeback.example")
    before = {c.agency_code: len(hit_events(client, c)) for c in (lead, partner, searcher)}
    # Two identifiers of the same hidden case, one of them searched twice: one event per identifier.
    response = search(
        client, searcher, ("phone", PHONE), ("email", "support@Chargeback.Example"), ("phone", "+77010000001")
    )
    assert response.status_code == 200
    assert [x["hit"] for x in response.json()["items"]] == [False, False, False]
    events = hit_events(client, lead)
    assert len(events) == before[lead.agency_code] + 2
    assert [e["resource_id"] for e in events[-2:]] == [phone["id"], email["id"]]
    for event in events[-2:]:
        assert event["case_id"] == case["id"]
        assert event["resource_type"] == "identifier"
        assert event["from_agency_id"] == str(searcher.agency_id)
    # Not the partner of the case, not the searcher, not by id from the feed of others.
    assert len(hit_events(client, partner)) == before[partner.agency_code] == 0
    assert len(hit_events(client, searcher)) == before[searcher.agency_code] == 0
    # Every other event leaves from_agency_id null.
    assert all(
        e["from_agency_id"] is None
        for e in walk(client, f"{API}/events", lead.headers)
        if e["type"] != "hit.received"
    )


def test_hidden_match_answers_exactly_as_no_match(client: TestClient, lead: Caller, searcher: Caller) -> None:
    items = [("phone", PHONE), ("iban", "KZ86 125K ZT50 0410 0100"), ("domain", "nothing.example")]
    before = search(client, searcher, *items)
    for code in ("TLP:RED", "TLP:AMBER+STRICT", "TLP:AMBER"):
        case = new_case(client, lead, handling_code=code)
        add(client, lead, case["id"], "phone", PHONE)
        add(client, lead, case["id"], "iban", "KZ86125KZT5004100100")
    after = search(client, searcher, *items)
    assert after.status_code == before.status_code == 200
    assert after.content == before.content
    assert after.headers["content-type"] == before.headers["content-type"]
    assert after.headers["content-length"] == before.headers["content-length"]
    assert len(hit_events(client, lead)) == 6  # two identifiers in each of three cases


def test_search_is_audited_without_the_values(
    client: TestClient, engine: sa.Engine, settings: Settings, lead: Caller, searcher: Caller
) -> None:
    case = new_case(client, lead, handling_code="TLP:RED")
    add(client, lead, case["id"], "phone", PHONE)
    assert search(client, searcher, ("phone", PHONE), ("email", "victim@example.com")).status_code == 200
    entries = walk(client, f"{API}/audit?action=hit.searched", searcher.headers)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["agency_id"] == str(searcher.agency_id)
    assert entry["case_id"] is None  # the search names no case, not even the hidden one that matched
    # Nothing the searcher reads in the audit trail tells it about the hidden case.
    assert case["id"] not in str(walk(client, f"{API}/audit", searcher.headers))
    # The stored terms are keyed hashes: no value in clear, no plain hash of it either.
    with engine.connect() as conn:
        dump = " ".join(
            str(tuple(row))
            for table in ("audit_entry", "hit_search_term", "hit_notice_pending")
            for row in conn.execute(sa.text(f"SELECT * FROM {table}"))
        )
        terms = conn.execute(
            sa.text("SELECT kind, digest FROM hit_search_term WHERE search_id = :s ORDER BY position"),
            {
                "s": uuid.UUID(entry["resource_id"]).hex
                if engine.dialect.name == "sqlite"
                else entry["resource_id"]
            },
        ).all()
    for secret in (E164, "7010000001", "victim@example.com", hashlib.sha256(E164.encode()).hexdigest()):
        assert secret not in dump
    key = search_term_key(settings)
    expected = [
        ("phone", hmac.new(key, f"phone\x1f{E164}".encode(), hashlib.sha256).hexdigest()),
        ("email", hmac.new(key, b"email\x1fvictim@example.com", hashlib.sha256).hexdigest()),
    ]
    assert [(row.kind, row.digest) for row in terms] == expected


def test_item_limits_and_invalid_items(client: TestClient, engine: sa.Engine, searcher: Caller) -> None:
    def audit_rows() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar_one()

    many = [("ip", f"10.0.{n // 256}.{n % 256}") for n in range(1000)]
    response = search(client, searcher, *many)
    assert response.status_code == 200
    assert [x["normalized"] for x in response.json()["items"]] == [v for _, v in many]
    before = audit_rows()
    too_many = search(client, searcher, *many, ("ip", "10.9.9.9"))
    assert too_many.status_code == 422
    assert too_many.headers["content-type"] == "application/problem+json"
    assert search(client, searcher).status_code == 422
    bad = search(client, searcher, ("ip", "10.0.0.1"), ("iban", "GB82 WEST 1234 5698 7654 33"))
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["loc"] == ["body", "items", 1, "value"]
    assert search(client, searcher, ("fax", "1")).status_code == 422
    extra = client.post(
        f"{API}/hits",
        json={"items": [{"kind": "ip", "value": "10.0.0.1", "case_id": "x"}]},
        headers=searcher.headers,
    )
    assert extra.status_code == 422
    assert audit_rows() == before, "a refused search is not recorded as a search"


def test_search_needs_the_read_scope(client: TestClient, engine: sa.Engine) -> None:
    writer = make_caller(engine, "KZ-WRITE-ONLY", Scope.write)
    assert search(client, writer, ("ip", "10.0.0.1")).status_code == 403
    assert (
        client.post(f"{API}/hits", json={"items": [{"kind": "ip", "value": "10.0.0.1"}]}).status_code == 401
    )


def test_phone_without_country_code_is_read_in_the_searchers_country(
    client: TestClient, engine: sa.Engine, lead: Caller
) -> None:
    case = new_case(client, lead, handling_code="TLP:CLEAR")
    add(client, lead, case["id"], "phone", "+380 44 123 45 67")
    make_agency(engine, "UA-SEARCH", country="UA")
    ua = make_caller(engine, "UA-SEARCH", Scope.read)
    (item,) = search(client, ua, ("phone", "044 123 45 67")).json()["items"]
    assert (item["normalized"], item["hit"]) == ("+380441234567", True)
    kz = make_caller(engine, "KZ-SEARCH", Scope.read)  # agencies of the test factory are in KZ
    refused = search(client, kz, ("phone", "044 123 45 67"))
    assert refused.status_code == 422  # not a Kazakh number


def test_own_cases_and_several_matches(
    client: TestClient, lead: Caller, partner: Caller, searcher: Caller
) -> None:
    own = new_case(client, lead, handling_code="TLP:RED")
    public = new_case(client, partner, handling_code="TLP:GREEN")
    hidden = new_case(client, partner, handling_code="TLP:AMBER")
    for case, caller in ((own, lead), (public, partner), (hidden, partner)):
        add(client, caller, case["id"], "domain", "chargeback-help.example")
    (item,) = search(client, lead, ("domain", "Chargeback-Help.Example.")).json()["items"]
    assert item["hit"] is True
    assert sorted((m["access"], m["case"]["id"]) for m in item["matches"]) == sorted(
        [("full", own["id"]), ("summary", public["id"])]
    )
    assert len(hit_events(client, partner)) == 2  # the GREEN case seen in summary and the hidden one
    assert hit_events(client, lead) == []
