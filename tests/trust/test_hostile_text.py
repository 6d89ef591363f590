"""Text as it is stored: NFC, trimmed, no invisible or control characters where
a human compares values by eye; X-Purpose as the client wrote it (UTF-8)."""

import asyncio
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.errors import AppError
from app.core.http import read_purpose
from tests.conftest import Caller
from tests.trust.world import World, build_world

API = "/api/v1"
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e"]
BIDI += ["\u200f", "\u061c"]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
CONTROLS = ["\x01", "\x1b", "\x7f", "\x85", "\x9f", "\u2028"]


@pytest.fixture
def world(client: TestClient, lead: Caller, partner: Caller) -> World:
    return build_world(client, lead, partner)


def ref() -> str:
    return f"R-{uuid.uuid4().hex[:8]}"


def assert_422_at(response: Any, *loc: str | int) -> None:
    assert response.status_code == 422, response.text
    assert ["body", *loc] in [e["loc"] for e in response.json()["errors"]], response.text


def test_single_line_fields_refuse_invisible_and_control_characters(
    client: TestClient, world: World, lead: Caller, partner: Caller, admin: Caller
) -> None:
    cid = world.case_id
    for char in [*BIDI, *ZERO_WIDTH, *CONTROLS, "\n", "\t", "\r"]:
        for url, body, loc in (
            (f"{API}/cases", {"reference": f"KZ{char}-1", "title": "T"}, ("reference",)),
            (f"{API}/cases", {"reference": ref(), "title": f"Kyiv {char}call centre"}, ("title",)),
            (
                f"{API}/cases",
                {"reference": ref(), "title": "T", "offence_types": [f"fraud{char}"]},
                ("offence_types", 0),
            ),
            (f"{API}/cases/{cid}/locations", {"label": f"Flat{char}"}, ("label",)),
            (f"{API}/cases/{cid}/detainees", {"label": "D", "full_name": f"Ivan{char}"}, ("full_name",)),
            (
                f"{API}/requests",
                {"to_agency_id": str(partner.agency_id), "subject": f"S{char}", "body": "B"},
                ("subject",),
            ),
        ):
            response = client.post(url, json=body, headers=lead.h(x_purpose="p"))
            assert_422_at(response, *loc)
        agency = {"code": f"XX{char}1", "name": "N", "kind": "police"}
        assert_422_at(client.post(f"{API}/agencies", json=agency, headers=admin.headers), "code")
        response = client.patch(
            f"{API}/cases/{cid}", json={"title": f"T{char}"}, headers=lead.h(if_match='"1"')
        )
        assert_422_at(response, "title")
    # Nothing of it was stored.
    assert len(client.get(f"{API}/cases", headers=lead.headers).json()["items"]) == 1


def test_multi_line_fields_keep_lines_and_tabs_and_refuse_other_controls(
    client: TestClient, world: World, lead: Caller
) -> None:
    text = "Line one\r\n\tLine two\rLine three \u05e9\u05dc\u05d5\u05dd\u200f."
    case = client.post(
        f"{API}/cases", json={"reference": ref(), "title": "T", "summary": text}, headers=lead.headers
    )
    assert case.status_code == 201, case.text
    assert case.json()["summary"] == "Line one\n\tLine two\nLine three \u05e9\u05dc\u05d5\u05dd\u200f."
    for char in ["\x00", "\x07", "\x1b", "\x0b", "\x0c", "\x85"]:
        response = client.post(
            f"{API}/cases",
            json={"reference": ref(), "title": "T", "summary": f"a{char}b"},
            headers=lead.headers,
        )
        assert_422_at(response, "summary")
        item = {"action": "examined", "note": f"n{char}"}
        response = client.post(
            f"{API}/seized-items/{world.ids['item_id']}/custody", json=item, headers=lead.headers
        )
        assert_422_at(response, "note")


def test_lone_surrogates_are_refused(client: TestClient, lead: Caller) -> None:
    for raw in (
        b'{"reference": "R", "title": "T", "summary": "a\\udc00b"}',
        b'{"reference": "R\\ud800", "title": "T"}',
    ):
        response = client.post(
            f"{API}/cases", content=raw, headers={**lead.headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text


def test_text_is_stored_in_nfc_and_trimmed(client: TestClient, lead: Caller) -> None:
    reference = ref()
    response = client.post(
        f"{API}/cases",
        json={"reference": f"  {reference}\u00a0", "title": " Cafe\u0301 in Kyiv ", "summary": "Cafe\u0301 "},
        headers=lead.headers,
    )
    assert response.status_code == 201, response.text
    case = response.json()
    assert (case["reference"], case["title"], case["summary"]) == (
        reference,
        "Caf\u00e9 in Kyiv",
        "Caf\u00e9 ",
    )
    # Its twin that differs only by spaces or the composition of a letter is the same reference.
    twin = client.post(
        f"{API}/cases", json={"reference": f"{reference} ", "title": "T"}, headers=lead.headers
    )
    assert twin.status_code == 409, twin.text
    for spelling in ("Caf\u00e9", "Cafe\u0301"):
        found = client.get(f"{API}/cases", params={"q": spelling}, headers=lead.headers).json()["items"]
        assert [c["id"] for c in found] == [case["id"]], spelling


def test_the_length_bound_holds_for_what_is_stored(client: TestClient, lead: Caller) -> None:
    # U+0958 is one character as sent and two in NFC: 300 of them fit as sent, not as stored.
    response = client.post(
        f"{API}/cases", json={"reference": ref(), "title": "\u0958" * 300}, headers=lead.headers
    )
    assert_422_at(response, "title")
    response = client.post(
        f"{API}/cases", json={"reference": ref(), "title": "\u0958" * 150}, headers=lead.headers
    )
    assert response.status_code == 201, response.text
    assert len(response.json()["title"]) == 300


def test_required_text_is_not_blank(client: TestClient, world: World, lead: Caller, partner: Caller) -> None:
    cid = world.case_id
    for blank in ("   ", "\u3000", "\u00a0 "):
        for url, body, loc in (
            (f"{API}/cases", {"reference": blank, "title": "T"}, "reference"),
            (f"{API}/cases", {"reference": ref(), "title": blank}, "title"),
            (f"{API}/cases/{cid}/locations", {"label": blank}, "label"),
            (f"{API}/cases/{cid}/seized-items", {"category": "cash", "description": blank}, "description"),
            (
                f"{API}/requests",
                {"to_agency_id": str(partner.agency_id), "subject": blank, "body": "B"},
                "subject",
            ),
            (
                f"{API}/requests",
                {"to_agency_id": str(partner.agency_id), "subject": "S", "body": blank},
                "body",
            ),
        ):
            assert_422_at(client.post(url, json=body, headers=lead.headers), loc)
        response = client.patch(
            f"{API}/locations/{world.ids['location_id']}",
            json={"label": blank},
            headers=lead.h(if_match='"1"'),
        )
        assert_422_at(response, "label")


def test_bundle_import_normalises_and_refuses_the_same(client: TestClient, lead: Caller) -> None:
    def doc(title: str) -> dict[str, Any]:
        return {"bundle_version": 1, "case": {"reference": ref(), "title": title}, "locations": []}

    refused = client.post(f"{API}/bundles", json=doc("Kyiv\u202e"), headers=lead.headers)
    assert_422_at(refused, "case", "title")
    made = client.post(f"{API}/bundles", json=doc("  Cafe\u0301 "), headers=lead.headers)
    assert made.status_code == 201, made.text
    assert made.json()["title"] == "Caf\u00e9"


def disclosed_purposes(client: TestClient, caller: Caller) -> list[str]:
    entries = client.get(f"{API}/audit", params={"action": "personal_data.disclosed"}, headers=caller.headers)
    return [e["purpose"] for e in entries.json()["items"]]


def test_x_purpose_is_read_as_utf8(client: TestClient, world: World, lead: Caller) -> None:
    url = f"{API}/detainees/{world.ids['detainee_id']}"
    purpose = "Ermittlungsakte M\u00fcnchen / \u0434\u0435\u043b\u043e 17"
    response = client.get(url, headers={**lead.headers, "X-Purpose": purpose.encode()})
    assert response.status_code == 200, response.text
    assert response.json()["full_name"] == "Ivan Petrenko"
    assert purpose in disclosed_purposes(client, lead)

    before = disclosed_purposes(client, lead)
    for raw in ("a\u202eb".encode(), "a\u200bb".encode(), b"a\x1bb"):
        response = client.get(url, headers={**lead.headers, "X-Purpose": raw})
        assert response.status_code == 422, (raw, response.text)
        assert response.json()["errors"][0]["loc"] == ["header", "X-Purpose"]
    assert disclosed_purposes(client, lead) == before


def test_x_purpose_that_is_not_utf8_is_refused() -> None:
    """What the server is handed for bytes that are not UTF-8 (the test client
    re-encodes header values, so this is checked where the header is read)."""
    for raw in (b"\xff\xfe", "caf\u00e9".encode("latin-1"), b"\xc3"):
        with pytest.raises(AppError) as refused:
            asyncio.run(read_purpose(raw.decode("latin-1")))
        assert refused.value.status == 422
        assert refused.value.extra["errors"][0]["loc"] == ["header", "X-Purpose"]
    assert asyncio.run(read_purpose("M\u00fcnchen ".encode().decode("latin-1"))) == "M\u00fcnchen"
