"""Mirrors: a case reaches exactly the instances hosting an agency that may
see it in full, with the same ids and versions, personal data kept home
unless the lead shares it, and is withdrawn when they stop qualifying."""

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.federation import signatures
from tests.federation.conftest import Instance, peered

API = "/api/v1"
KEYS = ("--scope", "read", "--scope", "write", "--scope", "personal_data", "--scope", "admin")


def key(instance: Instance, code: str) -> str:
    return instance.command("client", "create", "--agency", code, "--name", "tool", *KEYS)[-1]


class Api:
    """An agency's tool on one instance."""

    def __init__(self, instance: Instance, code: str) -> None:
        self.instance = instance
        self.headers = {"Authorization": f"Bearer {key(instance, code)}"}

    def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self.headers | kwargs.pop("headers", {})
        return httpx.request(method, f"{self.instance.url}{API}{path}", headers=headers, timeout=30, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self(method, path, **kwargs)
        assert answer.status_code in (200, 201), (method, path, answer.status_code, answer.text)
        return answer.json()

    def agency_id(self, code: str) -> str:
        return next(a["id"] for a in self.ok("GET", "/agencies")["items"] if a["code"] == code)


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """The first truthy result of `check`, polled: delivery takes a moment."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "not delivered in time"
        time.sleep(0.1)


def audited(instance: Instance, action: str) -> list[dict[str, Any]]:
    """The instance's own audit entries of `action` (those of the instance itself
    name no agency: an operator reads them, with the CLI)."""
    return [json.loads(line) for line in instance.command("audit", "list", "--action", action, "--json")]


def status_of(api: Api, path: str) -> int:
    return api("GET", path).status_code


def feed(api: Api) -> list[dict[str, Any]]:
    """The agency's whole event feed on its instance, page after page."""
    events: list[dict[str, Any]] = []
    while page := api.ok("GET", "/events", params={"limit": 200, "after": seq(events)})["items"]:
        events += page
    return events


def seq(events: list[dict[str, Any]]) -> int:
    return events[-1]["seq"] if events else 0


def a_case(kz: Api, reference: str = "KZ-2025-CALL-CENTRE", **fields: Any) -> dict[str, Any]:
    """A new case of KZ-MVD; its reference made unique (the tests share their instances)."""
    return kz.ok(
        "POST",
        "/cases",
        json={"reference": f"{reference}-{uuid.uuid4().hex[:8]}", "title": "Fraudulent call centre in Kyiv"}
        | fields,
    )


def test_a_case_reaches_the_instance_of_a_participant_with_the_same_ids_and_versions(
    kz_ua: tuple[Instance, Instance],
) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = a_case(kz, handling_code="TLP:AMBER")
    # Not a participant yet: Ukraine's instance holds nothing of it.
    time.sleep(1)
    assert status_of(ua, f"/cases/{case['id']}") == 404

    kz.ok(
        "POST",
        f"/cases/{case['id']}/participants",
        json={"agency_id": kz.agency_id("UA-LE"), "role": "partner"},
    )
    location = kz.ok(
        "POST", f"/cases/{case['id']}/locations", json={"label": "Office in Kyiv", "country": "UA"}
    )
    item = kz.ok(
        "POST",
        f"/cases/{case['id']}/seized-items",
        json={
            "category": "computer",
            "description": "Computers",
            "quantity": 41,
            "location_id": location["id"],
        },
    )
    detainee = kz.ok(
        "POST",
        f"/cases/{case['id']}/detainees",
        json={"label": "Detainee 1", "full_name": "Someone Named"},
    )
    home = kz.ok("GET", f"/cases/{case['id']}")

    # The detainee was recorded last: once it is there, so is the rest.
    eventually(lambda: status_of(ua, f"/detainees/{detainee['id']}") == 200)
    mirrored = ua.ok("GET", f"/cases/{case['id']}")
    assert mirrored["home_instance"] == "kz.caseapi" and home["home_instance"] is None
    assert {k: v for k, v in mirrored.items() if k != "home_instance"} == {
        k: v for k, v in home.items() if k != "home_instance"
    }
    assert ua.ok("GET", f"/seized-items/{item['id']}")["version"] == item["version"]
    # Its agencies follow it in their own instance's feed, as a local case.
    events = {(e["type"], e["resource_id"]) for e in feed(ua)}
    assert {("case.created", case["id"]), ("seized_item.created", item["id"])} <= events
    assert ua.ok("GET", f"/locations/{location['id']}")["label"] == "Office in Kyiv"
    # Personal data stayed home, even for a personal_data key that states its purpose.
    held = ua.ok("GET", f"/detainees/{detainee['id']}", headers={"X-Purpose": "joint investigation"})
    assert held["full_name"] is None and held["personal_data_redacted"] is True

    # The lead shares personal data: now it travels.
    kz.ok(
        "PATCH",
        f"/cases/{case['id']}",
        json={"share_personal_data": True},
        headers={"If-Match": f'"{home["version"]}"'},
    )
    shared = eventually(
        lambda: (
            d
            if (
                d := ua.ok(
                    "GET", f"/detainees/{detainee['id']}", headers={"X-Purpose": "joint investigation"}
                )
            )["full_name"]
            else None
        )
    )
    assert shared["full_name"] == "Someone Named" and shared["personal_data_redacted"] is False
    # The disclosure is audited where it happened: on the mirror's instance.
    disclosed = ua.ok("GET", "/audit", params={"action": "personal_data.disclosed", "case_id": case["id"]})[
        "items"
    ]
    assert disclosed and {entry["agency_id"] for entry in disclosed} == {ua.agency_id("UA-LE")}


def test_a_mirror_is_withdrawn_when_its_instance_stops_qualifying(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = a_case(kz, handling_code="TLP:AMBER")
    ua_le = kz.agency_id("UA-LE")
    kz.ok("POST", f"/cases/{case['id']}/participants", json={"agency_id": ua_le, "role": "partner"})
    eventually(lambda: status_of(ua, f"/cases/{case['id']}") == 200)

    removed = kz("DELETE", f"/cases/{case['id']}/participants/{ua_le}", headers={"If-Match": '"1"'})
    assert removed.status_code == 204, removed.text
    eventually(lambda: status_of(ua, f"/cases/{case['id']}") == 404)
    peers = kz.ok("GET", "/federation/peers")["items"]
    assert [(p["instance_id"], p["pending"], p["last_error"]) for p in peers] == [("ua.caseapi", 0, None)]
    assert peers[0]["last_success_at"] is not None


@pytest.mark.fresh_instances
def test_an_instance_that_hosts_no_participant_receives_nothing(
    kz_ua: tuple[Instance, Instance], instances: Callable[[str], Instance]
) -> None:
    kz_i, ua_i = kz_ua
    third = instances("third.caseapi")
    third.command("agency", "create", "--code", "XX-POL", "--name", "Another police", "--kind", "police")
    third.serve()
    peered(third, kz_i)
    peered(kz_i, third)
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    xx = Api(third, "XX-POL")
    case = a_case(kz, handling_code="TLP:AMBER")
    kz.ok(
        "POST",
        f"/cases/{case['id']}/participants",
        json={"agency_id": kz.agency_id("UA-LE"), "role": "partner"},
    )
    eventually(lambda: status_of(ua, f"/cases/{case['id']}") == 200)
    assert status_of(xx, f"/cases/{case['id']}") == 404
    # The third instance is up to date, and was sent nothing (its audit log holds no delivery).
    eventually(
        lambda: (
            {p["instance_id"]: p["pending"] for p in kz.ok("GET", "/federation/peers")["items"]}
            == {"third.caseapi": 0, "ua.caseapi": 0}
        )
    )
    assert audited(third, "federation.received") == []
    delivered = audited(kz_i, "federation.delivered")
    assert delivered and {entry["detail"]["peer"] for entry in delivered} == {"ua.caseapi"}
    # Each delivery is audited with the receipt the peer signed.
    receipt = signatures.open_receipt(delivered[-1]["detail"]["receipt"]["token"], ua_i.identity.public_key)
    assert receipt["instance_id"] == "ua.caseapi" and receipt["home_instance"] == "kz.caseapi"


def shared_case(kz: Api, ua: Api, **fields: Any) -> dict[str, Any]:
    """A case led by KZ-MVD with UA-LE as partner, once Ukraine's instance holds it."""
    case = a_case(kz, handling_code="TLP:AMBER", **fields)
    kz.ok(
        "POST",
        f"/cases/{case['id']}/participants",
        json={"agency_id": kz.agency_id("UA-LE"), "role": "partner"},
    )
    eventually(lambda: status_of(ua, f"/cases/{case['id']}") == 200)
    return case


def test_a_write_through_a_mirror_is_made_at_home_with_its_rules(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = shared_case(kz, ua)
    # Ukraine records a search location through its own instance, once (Idempotency-Key).
    location = {"label": "Call centre, Kyiv", "country": "UA"}
    made = ua("POST", f"/cases/{case['id']}/locations", json=location, headers={"Idempotency-Key": "loc-1"})
    assert made.status_code == 201, made.text
    again = ua("POST", f"/cases/{case['id']}/locations", json=location, headers={"Idempotency-Key": "loc-1"})
    assert again.status_code == 201 and again.json()["id"] == made.json()["id"]
    at_home = kz.ok("GET", f"/locations/{made.json()['id']}")
    assert at_home == made.json() and made.headers["location"] == f"{API}/locations/{at_home['id']}"
    assert len(kz.ok("GET", f"/cases/{case['id']}/locations")["items"]) == 1
    eventually(lambda: status_of(ua, f"/locations/{at_home['id']}") == 200)

    # If-Match is compared with the home's version, and the home's refusal is the caller's answer.
    stale = ua("PATCH", f"/locations/{at_home['id']}", json={"label": "x"}, headers={"If-Match": '"9"'})
    assert stale.status_code == 412 and stale.headers["etag"] == f'"{at_home["version"]}"'
    renamed = ua(
        "PATCH",
        f"/locations/{at_home['id']}",
        json={"city": "Kyiv"},
        headers={"If-Match": f'"{at_home["version"]}"'},
    )
    assert renamed.status_code == 200 and renamed.json()["city"] == "Kyiv"
    # Only the lead changes the handling code, through a mirror as at home.
    held = ua.ok("GET", f"/cases/{case['id']}")
    refused = ua(
        "PATCH",
        f"/cases/{case['id']}",
        json={"handling_code": "TLP:RED"},
        headers={"If-Match": f'"{held["version"]}"'},
    )
    assert refused.status_code == 403, refused.text
    # The home acted for Ukraine's agency: its audit log names it.
    entries = kz.ok("GET", "/audit", params={"action": "location.created", "case_id": case["id"]})["items"]
    assert [e["agency_id"] for e in entries] == [kz.agency_id("UA-LE")]


@pytest.mark.fresh_instances
def test_a_write_while_the_home_is_down_is_refused_and_stored_nowhere(
    kz_ua: tuple[Instance, Instance],
) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = shared_case(kz, ua)
    kz_i.stop()
    down = ua("POST", f"/cases/{case['id']}/locations", json={"label": "Second office"})
    assert down.status_code == 503 and down.headers["retry-after"].isdigit(), down.text
    assert ua.ok("GET", f"/cases/{case['id']}/locations")["items"] == []
    kz_i.serve()
    assert kz.ok("GET", f"/cases/{case['id']}/locations")["items"] == []


@pytest.mark.fresh_instances
def test_a_mirror_reaches_a_peer_that_was_down_and_a_home_that_restarted(
    kz_ua: tuple[Instance, Instance],
) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = shared_case(kz, ua)
    ua_i.stop()
    made = [kz.ok("POST", f"/cases/{case['id']}/locations", json={"label": f"Office {n}"}) for n in range(5)]
    peers = eventually(lambda: (p := kz.ok("GET", "/federation/peers")["items"]) and p[0]["last_error"] and p)
    assert peers[0]["pending"] == 5 and "cannot reach" in peers[0]["last_error"]
    kz_i.stop()
    # The home restarts, then the peer comes back: both are started before either is waited for
    # (the home's next attempt is a few seconds after its last failure, its backoff longer after that).
    kz_i.start()
    ua_i.start()
    kz_i.ready()
    ua_i.ready()
    for location in made:
        eventually(lambda location=location: status_of(ua, f"/locations/{location['id']}") == 200, timeout=60)
    assert eventually(lambda: kz.ok("GET", "/federation/peers")["items"][0]["pending"] == 0, timeout=60)
    assert "caseapi_federation_pending" in httpx.get(f"{kz_i.url}/metrics").text


def test_attachments_files_travel_with_the_mirror(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = shared_case(kz, ua)
    content = b"phone-number database export\n" * 5000
    uploaded = kz.ok(
        "POST",
        f"/cases/{case['id']}/attachments",
        params={"filename": "numbers.csv"},
        content=content,
        headers={"Content-Type": "text/csv"},
    )
    eventually(lambda: status_of(ua, f"/attachments/{uploaded['id']}") == 200)
    assert ua.ok("GET", f"/attachments/{uploaded['id']}") == uploaded
    download = ua("GET", f"/attachments/{uploaded['id']}/content")
    assert download.status_code == 200 and download.content == content
    # A file is added where its case lives: through a mirror, the answer says so.
    refused = ua(
        "POST",
        f"/cases/{case['id']}/attachments",
        params={"filename": "more.csv"},
        content=b"x",
        headers={"Content-Type": "text/csv"},
    )
    assert refused.status_code == 409 and "kz.caseapi" in refused.json()["detail"]
    # A peer is served only the files of cases it may hold.
    private = a_case(kz, reference="KZ-FILES", handling_code="TLP:RED")
    hidden = kz.ok(
        "POST",
        f"/cases/{private['id']}/attachments",
        params={"filename": "secret.txt"},
        content=b"secret",
        headers={"Content-Type": "text/plain"},
    )
    url = f"{kz_i.url}{API}/federation/attachments/{hidden['id']}/content"
    assert httpx.get(url, headers=signatures.sign(ua_i.identity, "GET", url, b"")).status_code == 404
    url = f"{kz_i.url}{API}/federation/attachments/{uploaded['id']}/content"
    shared = httpx.get(url, headers=signatures.sign(ua_i.identity, "GET", url, b""))
    assert shared.status_code == 200 and shared.content == content


@pytest.mark.fresh_instances
def test_removing_a_home_peer_deletes_the_mirrors_of_its_cases(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = shared_case(kz, ua)
    lines = ua_i.cli("peer", "remove", "kz.caseapi").stdout.splitlines()
    assert lines[-1] == "mirrors of its cases deleted here: 1"
    assert status_of(ua, f"/cases/{case['id']}") == 404
    assert [e["detail"]["cases"] for e in audited(ua_i, "federation.withdrawn")] == [[case["id"]]]
