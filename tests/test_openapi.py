"""The OpenAPI document is complete enough for generated clients (contract §7),
and says only what the service really does."""

import json
import re
import socket
import uuid
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.core import openapi
from app.core.types import RequestModel
from tests.conftest import Caller, make_caller
from tests.trust.world import build_world, minimal_body

API = "/api/v1"
PARAM = re.compile(r"{(\w+)}")

# Changing one of these breaks every generated client: they are part of the contract.
OPERATION_IDS = {
    ("GET", "/cases"): "cases.list",
    ("POST", "/cases"): "cases.create",
    ("GET", "/cases/{case_id}"): "cases.get",
    ("PATCH", "/cases/{case_id}"): "cases.update",
    ("DELETE", "/cases/{case_id}"): "cases.delete",
    ("GET", "/cases/{case_id}/summary"): "cases.summary",
    ("GET", "/cases/{case_id}/bundle"): "cases.bundle",
    ("GET", "/cases/{case_id}/participants"): "participants.list",
    ("POST", "/cases/{case_id}/participants"): "participants.create",
    ("GET", "/cases/{case_id}/participants/{agency_id}"): "participants.get",
    ("PATCH", "/cases/{case_id}/participants/{agency_id}"): "participants.update",
    ("DELETE", "/cases/{case_id}/participants/{agency_id}"): "participants.delete",
    ("GET", "/cases/{case_id}/locations"): "locations.list",
    ("POST", "/cases/{case_id}/locations"): "locations.create",
    ("GET", "/locations/{location_id}"): "locations.get",
    ("PATCH", "/locations/{location_id}"): "locations.update",
    ("DELETE", "/locations/{location_id}"): "locations.delete",
    ("GET", "/cases/{case_id}/seized-items"): "seized_items.list",
    ("POST", "/cases/{case_id}/seized-items"): "seized_items.create",
    ("GET", "/seized-items/{item_id}"): "seized_items.get",
    ("PATCH", "/seized-items/{item_id}"): "seized_items.update",
    ("DELETE", "/seized-items/{item_id}"): "seized_items.delete",
    ("GET", "/seized-items/{item_id}/custody"): "custody.list",
    ("POST", "/seized-items/{item_id}/custody"): "custody.create",
    ("GET", "/seized-items/{item_id}/custody/{event_id}"): "custody.get",
    ("GET", "/cases/{case_id}/detainees"): "detainees.list",
    ("POST", "/cases/{case_id}/detainees"): "detainees.create",
    ("GET", "/detainees/{detainee_id}"): "detainees.get",
    ("PATCH", "/detainees/{detainee_id}"): "detainees.update",
    ("DELETE", "/detainees/{detainee_id}"): "detainees.delete",
    ("GET", "/requests"): "requests.list",
    ("POST", "/requests"): "requests.create",
    ("GET", "/requests/{request_id}"): "requests.get",
    ("PATCH", "/requests/{request_id}"): "requests.update",
    ("GET", "/requests/{request_id}/messages"): "messages.list",
    ("POST", "/requests/{request_id}/messages"): "messages.create",
    ("GET", "/requests/{request_id}/messages/{message_id}"): "messages.get",
    ("GET", "/agencies"): "agencies.list",
    ("POST", "/agencies"): "agencies.create",
    ("GET", "/agencies/{agency_id}"): "agencies.get",
    ("PATCH", "/agencies/{agency_id}"): "agencies.update",
    ("GET", "/events"): "events.list",
    ("GET", "/audit"): "audit.list",
    ("GET", "/audit/verify"): "audit.verify",
    ("POST", "/bundles"): "bundles.import",
    ("GET", "/cases/{case_id}/identifiers"): "identifiers.list",
    ("POST", "/cases/{case_id}/identifiers"): "identifiers.create",
    ("GET", "/identifiers/{identifier_id}"): "identifiers.get",
    ("DELETE", "/identifiers/{identifier_id}"): "identifiers.delete",
    ("POST", "/hits"): "hits.search",
    ("GET", "/cases/{case_id}/stix"): "cases.stix",
    ("GET", "/subscriptions"): "subscriptions.list",
    ("POST", "/subscriptions"): "subscriptions.create",
    ("GET", "/subscriptions/{subscription_id}"): "subscriptions.get",
    ("DELETE", "/subscriptions/{subscription_id}"): "subscriptions.delete",
    ("GET", "/subscriptions/{subscription_id}/deliveries"): "deliveries.list",
    ("GET", "/cases/{case_id}/attachments"): "attachments.list",
    ("POST", "/cases/{case_id}/attachments"): "attachments.create",
    ("GET", "/attachments/{attachment_id}"): "attachments.get",
    ("DELETE", "/attachments/{attachment_id}"): "attachments.delete",
    ("GET", "/attachments/{attachment_id}/content"): "attachments.content",
    ("GET", "/requests/{request_id}/messages/{message_id}/attachments"): "message_attachments.list",
    ("POST", "/requests/{request_id}/messages/{message_id}/attachments"): "message_attachments.create",
    ("GET", "/health"): "health.live",
    ("GET", "/health/ready"): "health.ready",
    ("GET", "/federation/instance"): "federation.instance",
    ("GET", "/federation/peers"): "federation.peers",
}


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


@pytest.fixture(scope="module")
def doc(application: FastAPI) -> dict[str, Any]:
    return application.openapi()


def by_id(doc: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {op["operationId"]: (method, path, op) for method, path, op in operations(doc)}


def test_the_served_document_is_the_completed_one(client: TestClient, doc: dict[str, Any]) -> None:
    assert client.get("/openapi.json").json() == json.loads(json.dumps(doc))


def test_operation_ids_are_short_unique_and_stable(doc: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))
    for operation_id in ids:
        assert openapi.OPERATION_ID.fullmatch(operation_id), operation_id
    served = {(m, p.removeprefix(API)): op["operationId"] for m, p, op in operations(doc)}
    assert served == OPERATION_IDS


def test_patch_and_delete_declare_a_required_if_match(doc: dict[str, Any]) -> None:
    changing = [(m, p, op) for m, p, op in operations(doc) if m in ("PATCH", "DELETE")]
    assert len(changing) == sum(method in ("PATCH", "DELETE") for method, _ in OPERATION_IDS)
    for method, path, op in changing:
        [if_match] = [p for p in op["parameters"] if p["name"] == "If-Match"]
        assert if_match["in"] == "header" and if_match["required"] is True, (method, path)
        assert {"412", "428"} <= set(op["responses"]), (method, path)
    for method, path, op in operations(doc):
        if method not in ("PATCH", "DELETE"):
            assert "If-Match" not in [p["name"] for p in op.get("parameters", [])], (method, path)


def test_a_missing_if_match_still_answers_428_not_422(
    client: TestClient, lead: Caller, partner: Caller
) -> None:
    world = build_world(client, lead, partner)
    for method, url, body in (
        ("PATCH", f"{API}/cases/{world.case_id}", {"status": "active"}),
        ("DELETE", f"{API}/locations/{world.ids['location_id']}", None),
        ("PATCH", f"{API}/requests/{world.ids['request_id']}", {"status": "withdrawn"}),
    ):
        response = client.request(method, url, json=body, headers=lead.headers)
        assert response.status_code == 428, (method, url, response.text)
        assert response.headers["content-type"] == "application/problem+json"


def test_every_operation_has_a_summary_and_says_who_may_call_it(doc: dict[str, Any]) -> None:
    for method, path, op in operations(doc):
        where = (method, path)
        summary, description = op.get("summary", ""), op.get("description", "")
        assert summary and summary[0].isupper() and " " in summary and "_" not in summary, where
        assert len(summary) <= 60, where
        if op.get("security"):
            assert re.search(r"Scope `(read|write|admin)`", description), where
        else:
            assert description.startswith("No API key needed"), where
        if "{" in path:
            assert "404" in description, where


def world_with_subscription(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], Caller]:
    """The ids of a world (tests.trust.world) and of a webhook subscription of the lead's
    agency, and a key of that agency with every scope, which reads them all."""
    world = build_world(client, lead, partner)
    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *_args, **_kwargs: public)
    every = make_caller(engine, lead.agency_code, *Scope)
    response = client.post(
        f"{API}/subscriptions", json={"url": "https://hooks.example"}, headers=every.headers
    )
    assert response.status_code == 201, response.text
    return {**world.ids, "subscription_id": response.json()["id"]}, every


def named_scopes(description: str) -> set[str]:
    return set(re.findall(r"[Ss]cope `(\w+)`", description))


def test_the_scope_each_description_names_is_the_one_enforced(
    client: TestClient,
    doc: dict[str, Any],
    engine: sa.Engine,
    lead: Caller,
    partner: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key without the scopes a description names is refused for lack of
    scope; a key with only them is not (it may still meet a role rule)."""
    ids, _ = world_with_subscription(client, engine, lead, partner, monkeypatch)
    for method, path, op in operations(doc):
        if not op.get("security"):
            continue
        scopes = named_scopes(op["description"])
        url = PARAM.sub(lambda m: ids[m.group(1)], path)
        body = minimal_body(op, doc)
        headers = {"If-Match": '"1"', "X-Purpose": "test"}
        without = make_caller(engine, lead.agency_code, *[s for s in Scope if s.value not in scopes])
        refused = client.request(method, url, json=body, headers={**without.headers, **headers})
        assert refused.status_code == 403, (method, path, refused.text)
        assert "scope" in refused.json()["detail"], (method, path)
        only = make_caller(engine, lead.agency_code, *[Scope(s) for s in scopes])
        answered = client.request(method, url, json=body, headers={**only.headers, **headers})
        assert answered.status_code != 401, (method, path)
        if answered.status_code == 403:
            assert "scope" not in answered.json()["detail"], (method, path, answered.text)


def test_problem_responses_are_listed_only_where_they_can_happen(doc: dict[str, Any]) -> None:
    ops = by_id(doc)
    for operation_id in ("health.live", "health.ready"):
        assert set(ops[operation_id][2]["responses"]) == {"200", "503"}
    for method, path, op in operations(doc):
        codes = set(op["responses"])
        where = (method, path)
        assert op["responses"]["503"]["content"].keys() == {"application/problem+json"}
        assert ("401" in codes) == ("403" in codes) == ("429" in codes) == bool(op.get("security")), where
        assert ("413" in codes) == ("requestBody" in op), where
        assert ("404" in codes) == ("{" in path or op["operationId"] in openapi.ABSENT), where
        if method == "POST":
            assert not {"412", "428"} & codes, where
        if method in ("PATCH", "DELETE"):
            assert {"400", "412", "428"} <= codes, where
        if method == "GET":
            assert "409" not in codes, where
        if "409" in codes:
            assert op["operationId"] in openapi.CONFLICTS or "201" in codes, where
    assert "422" not in ops["audit.verify"][2]["responses"]
    assert "400" not in ops["cases.get"][2]["responses"]
    assert "409" not in ops["detainees.update"][2]["responses"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "request_id" in doc["components"]["schemas"]["Problem"]["properties"]


def test_response_headers_are_declared(doc: dict[str, Any]) -> None:
    for method, path, op in operations(doc):
        responses = op["responses"]
        for code, response in responses.items():
            assert "X-Request-ID" in response.get("headers", {}), (method, path, code)
        if "201" in responses:
            assert {"Location", "Idempotent-Replayed"} <= set(responses["201"]["headers"]), (method, path)
        if "429" in responses:
            assert responses["429"]["headers"]["Retry-After"]["required"] is True
        assert "Retry-After" in responses["503"]["headers"], (method, path)
        if "401" in responses:
            assert "WWW-Authenticate" in responses["401"]["headers"]
        if method == "PATCH":
            assert "ETag" in responses["200"]["headers"], path
            assert "ETag" in responses["412"]["headers"], path


def test_etag_is_declared_exactly_where_a_read_sends_it(
    client: TestClient,
    doc: dict[str, Any],
    engine: sa.Engine,
    lead: Caller,
    partner: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids, every = world_with_subscription(client, engine, lead, partner, monkeypatch)
    declared = 0
    for method, path, op in operations(doc):
        if method != "GET" or "{" not in path:
            continue
        response = client.get(PARAM.sub(lambda m: ids[m.group(1)], path), headers=every.h(x_purpose="test"))
        assert response.status_code == 200, (path, response.text)
        says = "ETag" in op["responses"]["200"]["headers"]
        assert says == ("etag" in response.headers), path
        declared += says
    # cases, participants, locations, seized items, detainees, requests, agencies, identifiers,
    # subscriptions, attachments (metadata, and content by its sha256)
    assert declared == 11


# --- examples ----------------------------------------------------------------


def request_models() -> dict[str, type[RequestModel]]:
    found: dict[str, type[RequestModel]] = {}
    todo: list[type[RequestModel]] = [RequestModel]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def test_every_request_body_has_an_example_that_fits_its_schema(doc: dict[str, Any]) -> None:
    models = request_models()
    with_body = [(m, p, op) for m, p, op in operations(doc) if "requestBody" in op]
    # Uploads take the file itself, any type, with an example of their own (app/attachments).
    uploads = [op for _, _, op in with_body if "application/octet-stream" in op["requestBody"]["content"]]
    assert [op["operationId"] for op in uploads] == ["attachments.create", "message_attachments.create"]
    for op in uploads:
        media = op["requestBody"]["content"]["application/octet-stream"]
        assert media["schema"] == {"type": "string", "format": "binary"} and media["example"]
    with_body = [(m, p, op) for m, p, op in with_body if op not in uploads]
    assert len(with_body) == len(openapi.EXAMPLES)
    for method, path, op in with_body:
        media = op["requestBody"]["content"]["application/json"]
        example = media["example"]
        # The document's JSON Schema accepts it ...
        validator = jsonschema_rs.validator_for({**media["schema"], "components": doc["components"]})
        errors = [e.message for e in validator.iter_errors(example)]
        assert not errors, (method, path, errors)
        # ... and so does the model that parses the body.
        name = media["schema"]["$ref"].rsplit("/", 1)[-1]
        models[name].model_validate(example)


def test_examples_tell_the_seed_story() -> None:
    seed_dir = Path(__file__).parents[1] / "seed"
    seed = "".join(json.dumps(json.loads(p.read_text())) for p in sorted(seed_dir.glob("*.json")))
    examples = json.dumps(openapi.EXAMPLES)
    for fact in ("KZ-UA-2025-KYIV-CALL-CENTRE", "Computers", "Mobile phones", "2025-09-23", "KZ-MVD-CYBER"):
        assert fact in examples and fact in seed
    assert '"quantity": 41' in examples and '"quantity": 24' in examples


def substitute(value: Any, ids: dict[str, str]) -> Any:
    text = json.dumps(value)
    for placeholder, real in ids.items():
        text = text.replace(placeholder, real)
    return json.loads(text)


def test_the_examples_are_accepted_by_the_api(
    client: TestClient, doc: dict[str, Any], engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every example, sent as the seed story goes, with the instance's real ids;
    creates answer the headers the document declares."""
    # The webhook example's host, resolved as a public address would be (no DNS here).
    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *_args, **_kwargs: public)
    kz = make_caller(engine, "KZ-MVD", *Scope)
    ua = make_caller(engine, "UA-LE", Scope.read, Scope.write)
    ids = {openapi.EXAMPLE_KZ_MVD: str(kz.agency_id), openapi.EXAMPLE_UA_LE: str(ua.agency_id)}
    ops = by_id(doc)
    examples = openapi.EXAMPLES
    made: dict[str, dict[str, Any]] = {}

    def send(operation_id: str, caller: Caller, path_ids: dict[str, str], **headers: str) -> dict[str, Any]:
        method, path, op = ops[operation_id]
        url = PARAM.sub(lambda m: path_ids[m.group(1)], path)
        body = substitute(examples[operation_id], ids)
        response = client.request(method, url, json=body, headers=caller.h(**headers))
        assert response.status_code in (200, 201), (operation_id, response.text)
        declared = op["responses"][str(response.status_code)]["headers"]
        for header in ("Location", "ETag"):
            assert (header in declared) == (header.lower() in response.headers), (operation_id, header)
        made[operation_id] = response.json()
        return response.json()

    send("agencies.create", kz, {})
    agency = made["agencies.create"]
    send("agencies.update", kz, {"agency_id": agency["id"]}, if_match='"1"')
    case = send("cases.create", kz, {})
    ids[openapi.EXAMPLE_CASE] = case["id"]
    send("cases.update", kz, {"case_id": case["id"]}, if_match='"1"')
    send("participants.create", kz, {"case_id": case["id"]})
    send("participants.update", kz, {"case_id": case["id"], "agency_id": str(ua.agency_id)}, if_match='"1"')
    location = send("locations.create", kz, {"case_id": case["id"]})
    ids[openapi.EXAMPLE_LOCATION] = location["id"]
    send("locations.update", kz, {"location_id": location["id"]}, if_match='"1"')
    item = send("seized_items.create", kz, {"case_id": case["id"]})
    send("seized_items.update", kz, {"item_id": item["id"]}, if_match='"1"')
    send("custody.create", kz, {"item_id": item["id"]})
    detainee = send("detainees.create", kz, {"case_id": case["id"]})
    send("detainees.update", kz, {"detainee_id": detainee["id"]}, if_match='"1"')
    request = send("requests.create", kz, {})
    send("requests.update", ua, {"request_id": request["id"]}, if_match='"1"')
    send("messages.create", ua, {"request_id": request["id"]})
    send("identifiers.create", kz, {"case_id": case["id"]})
    send("hits.search", kz, {})
    send("subscriptions.create", kz, {})
    imported = send("bundles.import", ua, {})
    assert imported["reference"] == "UA-2025-KYIV-CALL-CENTRE"
    assert set(made) == set(examples), "an example was not sent"
    assert uuid.UUID(imported["id"])
