"""A small world for the trust tests: a case with something of every kind under it."""

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi.testclient import TestClient

from tests.conftest import Caller, join, new_case


@dataclass
class World:
    case: dict[str, Any]
    ids: dict[str, str]  # path parameter name -> id of a real row under the case

    @property
    def case_id(self) -> str:
        return self.case["id"]


def post(
    client: TestClient, caller: Caller, url: str, body: dict[str, Any], **headers: str
) -> dict[str, Any]:
    response = client.post(url, json=body, headers=caller.h(**headers))
    assert response.status_code == 201, (url, response.text)
    return response.json()


def build_world(client: TestClient, lead: Caller, partner: Caller, **case_fields: Any) -> World:
    """A case led by `lead` with `partner` in it, and one of every child resource."""
    case = new_case(client, lead, **case_fields)
    cid = case["id"]
    join(client, lead, cid, partner)
    location = post(client, lead, f"/api/v1/cases/{cid}/locations", {"label": "Office", "country": "UA"})
    item = post(
        client,
        lead,
        f"/api/v1/cases/{cid}/seized-items",
        {"category": "computer", "description": "Laptop", "quantity": 1, "location_id": location["id"]},
    )
    custody = client.get(f"/api/v1/seized-items/{item['id']}/custody", headers=lead.headers).json()
    detainee = post(
        client,
        lead,
        f"/api/v1/cases/{cid}/detainees",
        {"label": "D-1", "full_name": "Ivan Petrenko", "date_of_birth": "1990-01-02", "id_document": "P-1"},
    )
    request = post(
        client,
        lead,
        "/api/v1/requests",
        {"to_agency_id": str(partner.agency_id), "case_id": cid, "subject": "S", "body": "B"},
    )
    message = post(client, lead, f"/api/v1/requests/{request['id']}/messages", {"body": "More"})
    identifier = post(
        client, lead, f"/api/v1/cases/{cid}/identifiers", {"kind": "phone", "value": "+7 701 000 00 01"}
    )
    attachment = client.post(
        f"/api/v1/cases/{cid}/attachments",
        params={"filename": "report.pdf"},
        content=b"%PDF-1.7 extraction report",
        headers=lead.h(content_type="application/pdf"),
    )
    assert attachment.status_code == 201, attachment.text
    return World(
        case=case,
        ids={
            "case_id": cid,
            "agency_id": str(partner.agency_id),
            "location_id": location["id"],
            "item_id": item["id"],
            "event_id": custody["items"][0]["id"],
            "detainee_id": detainee["id"],
            "request_id": request["id"],
            "message_id": message["id"],
            "identifier_id": identifier["id"],
            "attachment_id": attachment.json()["id"],
        },
    )


# --- minimal valid request bodies, generated from the OpenAPI schema ------

_PATTERN_EXAMPLES = {r"^[A-Z]{2}$": "UA", r"^[0-9a-f]{64}$": "0" * 64}


def _resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def minimal_value(schema: dict[str, Any], doc: dict[str, Any]) -> Any:
    """The smallest value that satisfies `schema`: required properties only."""
    schema = _resolve(schema, doc)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(s, doc).get("type") != "null"]
            return minimal_value(options[0], doc)
    if "allOf" in schema:
        return minimal_value(schema["allOf"][0], doc)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: minimal_value(props[name], doc) for name in schema.get("required", [])}
    if kind == "array":
        return [minimal_value(schema["items"], doc) for _ in range(schema.get("minItems", 0))]
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "number":
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    fmt = schema.get("format")
    if fmt == "uuid":
        return str(uuid.uuid4())
    if fmt == "date-time":
        return "2025-09-23T08:00:00Z"
    if fmt == "date":
        return "2025-09-23"
    pattern = schema.get("pattern")
    if pattern:
        example = _PATTERN_EXAMPLES[pattern]
        assert re.fullmatch(pattern, example)
        return example
    return "x" * max(schema.get("minLength", 1), 1)


def minimal_body(operation: dict[str, Any], doc: dict[str, Any]) -> Any:
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    return minimal_value(content["application/json"]["schema"], doc)


def minimal_query(operation: dict[str, Any], doc: dict[str, Any]) -> str:
    """The operation's required query parameters with minimal values, as `?a=..`, or ''."""
    required = {
        param["name"]: minimal_value(param["schema"], doc)
        for param in operation.get("parameters", [])
        if param.get("in") == "query" and param.get("required")
    }
    return "?" + urlencode(required) if required else ""
