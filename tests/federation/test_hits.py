"""Federated hit/no-hit: a search asks every peer, signed, naming the
searching agency; each answers by its own rules for that agency, and every
peer is named in the answer with how it answered."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.datastructures import State

from app.core.config import Settings
from app.federation.hits import PeerSearcher
from tests.federation.conftest import Instance, peered
from tests.federation.test_hostile_peers import post_signed, refused
from tests.federation.test_mirrors import Api, a_case, eventually

KZ_PHONE, UA_PHONE, GREEN_PHONE = "+7 701 123 45 67", "+380 44 123 4567", "+7 701 765 43 21"


def search(api: Api, *phones: str, federated: bool = True) -> dict:
    items = [{"kind": "phone", "value": phone} for phone in phones]
    body = {"items": items, "federated": True} if federated else {"items": items}
    return api.ok("POST", "/hits", json=body)


@pytest.mark.fresh_instances
def test_a_federated_search_asks_every_peer_and_names_each(
    kz_ua: tuple[Instance, Instance], instances: Callable[[str], Instance]
) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    red = a_case(kz, reference="KZ-RED", handling_code="TLP:RED")
    kz.ok("POST", f"/cases/{red['id']}/identifiers", json={"kind": "phone", "value": KZ_PHONE})
    green = a_case(kz, reference="KZ-GREEN", handling_code="TLP:GREEN")
    kz.ok("POST", f"/cases/{green['id']}/identifiers", json={"kind": "phone", "value": GREEN_PHONE})
    own = ua.ok(
        "POST",
        "/cases",
        json={"reference": "UA-1", "title": "Kyiv call centre", "handling_code": "TLP:AMBER"},
    )
    ua.ok("POST", f"/cases/{own['id']}/identifiers", json={"kind": "phone", "value": UA_PHONE})

    # Not federated: only Ukraine's own case, and no word of peers.
    local = search(ua, UA_PHONE, KZ_PHONE, GREEN_PHONE, federated=False)
    assert "peers" not in local
    assert [item["hit"] for item in local["items"]] == [True, False, False]

    answer = search(ua, UA_PHONE, KZ_PHONE, GREEN_PHONE)
    assert answer["peers"] == [{"instance_id": "kz.caseapi", "status": "answered"}]
    mine, hidden, summary = answer["items"]
    assert mine["hit"] and [m["home_instance"] for m in mine["matches"]] == [None]
    # The RED case is Kazakhstan's to tell about: nothing of it in the answer...
    assert hidden == {"kind": "phone", "normalized": "+77011234567", "hit": False, "matches": []}
    # ...and a GREEN one names only the case and its lead, as Kazakhstan's rules say.
    [match] = summary["matches"]
    assert match["access"] == "summary" and match["identifier"] is None
    assert match["case"]["id"] == green["id"] and match["home_instance"] == "kz.caseapi"

    # Kazakhstan's lead learns that Ukraine's agency searched for its RED case's number.
    ua_le = kz.agency_id("UA-LE")

    def noticed() -> list[dict]:
        events = kz.ok("GET", "/events", params={"limit": 100})["items"]
        return [e for e in events if e["type"] == "hit.received" and e["case_id"] == red["id"]]

    [event] = eventually(noticed, timeout=30)
    assert event["from_agency_id"] == ua_le

    # A peer that is down is named, never left out.
    ghost = instances("ghost.caseapi")
    ghost.serve()
    peered(ua_i, ghost)
    ghost.stop()
    statuses = {p["instance_id"]: p["status"] for p in search(ua, KZ_PHONE)["peers"]}
    assert statuses == {"kz.caseapi": "answered", "ghost.caseapi": "unreachable"}


def test_a_peer_searching_for_an_agency_it_does_not_host_is_refused(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    kz = Api(kz_i, "KZ-MVD")
    document = {
        "agency_id": kz.agency_id("KZ-MVD"),
        "client_id": str(uuid.uuid4()),
        "scopes": ["read"],
        "items": [{"kind": "phone", "value": "+77011234567"}],
    }
    assert "does not host" in refused(post_signed(ua_i, kz_i.url + "/api/v1/federation/hits", document), 403)


def test_a_peer_searches_the_normal_form_of_what_it_is_sent_never_the_form_it_is_sent_in(
    kz_ua: tuple[Instance, Instance],
) -> None:
    """A searcher sends its values normalised, and the peer takes one as it is only when normalising it
    gives it back: a peer sending other forms, or values that only look normalised, gets the answer of
    their normal form, and an invalid value is a 422 as in any search."""
    kz_i, ua_i = kz_ua
    kz = Api(kz_i, "KZ-MVD")
    # A number of this test's own: the instances may be shared with other tests.
    green = a_case(kz, reference=f"KZ-GREEN-{uuid.uuid4().hex[:8]}", handling_code="TLP:GREEN")
    kz.ok("POST", f"/cases/{green['id']}/identifiers", json={"kind": "phone", "value": "+7 701 555 01 23"})
    url = kz_i.url + "/api/v1/federation/hits"

    def search_as_ua(*values: str) -> httpx.Response:
        document = {
            "agency_id": kz.agency_id("UA-LE"),
            "client_id": str(uuid.uuid4()),
            "scopes": ["read"],
            "items": [{"kind": "phone", "value": value} for value in values],
        }
        return post_signed(ua_i, url, document)

    forms = [
        "+77015550123",  # as a searcher sends it
        "+7 701 555 01 23",
        "+787015550123",  # shaped as E.164, but the 8 is the national prefix
        "+７７０１５５５０１２３",  # noqa: RUF001  (full-width digits)
        "+77015550124",  # another number: no match
    ]
    answer = search_as_ua(*forms)
    assert answer.status_code == 200, answer.text
    *same, other = answer.json()["items"]
    assert [item["normalized"] for item in same] == ["+77015550123"] * 4
    assert all(item == same[0] for item in same)
    [match] = same[0]["matches"]
    assert same[0]["hit"] and match["access"] == "summary" and match["case"]["id"] == green["id"]
    assert other == {"kind": "phone", "normalized": "+77015550124", "hit": False, "matches": []}

    # Looking normalised is not enough: a digit short is not a valid number.
    assert "Invalid phone" in refused(search_as_ua("+77015550123", "+7701555012"), 422)


def test_the_peers_are_asked_on_one_client_until_the_app_stops(application: FastAPI) -> None:
    """Its connections to the peers stay open from one search to the next; a stopped app closes it, and
    started again makes another."""
    with TestClient(application):
        http = application.state.ask_peers.http()
        assert application.state.ask_peers.http() is http and not http.is_closed
    assert http.is_closed
    with TestClient(application):
        assert application.state.ask_peers.http() is not http


@pytest.mark.fresh_instances
def test_a_mirrored_case_seen_in_summary_is_matched_only_by_its_home_which_tells_its_lead(
    kz_ua: tuple[Instance, Instance],
) -> None:
    kz_i, ua_i = kz_ua
    # A second agency of Ukraine's instance, which takes part in no case.
    ua_i.command("agency", "create", "--code", "UA-OTHER", "--name", "Another body", "--kind", "police")
    peered(kz_i, ua_i)
    kz, ua, other = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE"), Api(ua_i, "UA-OTHER")
    green = a_case(kz, reference="KZ-GREEN-MIRROR", handling_code="TLP:GREEN")
    identifier = kz.ok(
        "POST", f"/cases/{green['id']}/identifiers", json={"kind": "phone", "value": GREEN_PHONE}
    )
    kz.ok(
        "POST",
        f"/cases/{green['id']}/participants",
        json={"agency_id": kz.agency_id("UA-LE"), "role": "partner"},
    )
    eventually(lambda: ua("GET", f"/identifiers/{identifier['id']}").status_code == 200)

    # Searched on Ukraine's instance alone, the mirror names nothing: its lead would never know.
    local = search(other, GREEN_PHONE, federated=False)
    assert local["items"] == [{"kind": "phone", "normalized": "+77017654321", "hit": False, "matches": []}]

    # Federated, the case's home answers, by its rules, and tells its lead who searched.
    [found] = search(other, GREEN_PHONE)["items"]
    [match] = found["matches"]
    assert match["access"] == "summary" and match["identifier"] is None
    assert match["case"]["id"] == green["id"] and match["home_instance"] == "kz.caseapi"
    searcher = kz.agency_id("UA-OTHER")

    def noticed() -> list[dict]:
        events = kz.ok("GET", "/events", params={"limit": 200})["items"]
        return [e for e in events if e["type"] == "hit.received" and e["case_id"] == green["id"]]

    [event] = eventually(noticed, timeout=30)
    assert event["from_agency_id"] == searcher
    # The partner sees the case in full on its own instance, and searches it there as before.
    [mine] = search(ua, GREEN_PHONE, federated=False)["items"]
    assert [m["access"] for m in mine["matches"]] == ["full"]


class _Endless(httpx.AsyncByteStream):
    """A hostile peer's answer: `chunk` after `chunk`, `pause` seconds apart, never ending."""

    def __init__(self, chunk: bytes, pause: float) -> None:
        self.chunk, self.pause = chunk, pause

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(self.pause)
            yield self.chunk


def _ask_hostile(settings: Settings, stream: httpx.AsyncByteStream) -> tuple[str, float]:
    """How a search names a peer that answers with `stream`, and how long it took to."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "application/json"}, stream=stream)

    async def ask() -> tuple[str, float]:
        searcher = PeerSearcher(State({"settings": settings}))
        peer = SimpleNamespace(instance_id="hostile.caseapi", url="http://hostile.invalid")
        started = time.monotonic()
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            # Bounded here too: before the fix the search never ended.
            _, answered = await asyncio.wait_for(searcher._ask(http, peer, b"{}", 1), timeout=30)
        return answered.status, time.monotonic() - started

    return asyncio.run(ask())


def test_a_peer_answering_a_search_endlessly_is_cut_off(settings: Settings) -> None:
    small = settings.model_copy(
        update={"max_delivery_bytes": 1024 * 1024, "federation_hit_timeout_seconds": 20}
    )
    # Megabytes as fast as it can: refused once past the bound, never held whole in memory.
    status, took = _ask_hostile(small, _Endless(b" " * 65536, 0))
    assert status == "refused" and took < 10
    # A byte now and then, each well within a read timeout: cut off at the search's timeout.
    brief = settings.model_copy(update={"federation_hit_timeout_seconds": 1})
    status, took = _ask_hostile(brief, _Endless(b" ", 0.05))
    assert status == "timeout" and took < 5
