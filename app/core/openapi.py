"""The OpenAPI document (/openapi.json), complete enough for generated clients.

FastAPI documents what it sees in the route signatures. What it cannot see
is added here, in one pass over the built document, from the routes' own
declarations: the `If-Match` every PATCH and DELETE needs (the handlers
answer 428 themselves, so FastAPI must not turn a missing header into a
422), the headers the responses carry, the problem+json responses each
operation can really give, and an example of every request body.
"""

import re
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.core.errors import MAX_ERRORS, PROBLEM_JSON

OPERATION_ID = re.compile(r"^[a-z_]+\.[a-z_]+$")
_API_PREFIX = "/api/v1"
_METHODS = ("get", "head", "post", "put", "patch", "delete")
_ONE_RECORD_VERBS = {"GET": "get", "PATCH": "update", "PUT": "replace", "DELETE": "delete"}
_COLLECTION_VERBS = {"GET": "list", "POST": "create"}


def operation_id(route: APIRoute) -> str:
    """`<resource>.<verb>`, derived from the path so that it is stable: the
    resource is the path's last literal segment (`seized-items` ->
    `seized_items`), the verb follows from the method and from whether the
    path ends in one record's id. Routes that are neither a collection nor
    a record (`cases.summary`, `audit.verify`, ...) name theirs explicitly.
    """
    path = route.path_format.removeprefix(_API_PREFIX)
    segments = [s for s in path.split("/") if s]
    literals = [s for s in segments if not s.startswith("{")]
    resource = literals[-1].replace("-", "_")
    [method] = sorted(route.methods or ())  # one per route (FastAPI makes one route per method here)
    verbs = _ONE_RECORD_VERBS if segments[-1].startswith("{") else _COLLECTION_VERBS
    return f"{resource}.{verbs[method]}"


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {
            "type": "string",
            "description": "The response's X-Request-ID, to quote to the operator",
        },
        "errors": {
            "type": "array",
            "description": "On a 422: what is wrong, and where",
            "items": {
                "type": "object",
                "required": ["loc", "msg"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": ["string", "null"]},
                },
            },
        },
        "error_count": {
            "type": "integer",
            "description": "On a 422 of a request that does not match its schema: how many errors it has "
            f"(`errors` shows the first {MAX_ERRORS})",
        },
    },
}

_PROBLEM_DESCRIPTIONS = {
    400: "Malformed JSON, a garbled cursor, or an If-Match that is not a list of strong entity tags",
    401: "Missing, unknown or revoked API key",
    403: "The key lacks the scope, or its agency the role, this action needs",
    404: "No such record, or one the caller may not see: the answer is the same",
    409: "The change conflicts with the current state",
    412: "If-Match does not name the current version; the current ETag is sent",
    408: "The request body stalled: no part of it arrived in time",
    413: "The request body is too large",
    422: "The request does not match the schema or a rule",
    416: "No byte of the range lies within the file",
    428: "If-Match is missing (or `*`)",
    429: "Too many requests from this API key; wait Retry-After seconds",
    503: "The service is busy or the database unavailable; wait Retry-After seconds",
    507: "No room to store the file: the server's disk, or the agency's storage quota",
}

# Where a 409 can happen, and why. Besides these, every creating POST can
# meet a twin: two requests with the same Idempotency-Key at once.
CONFLICTS = {
    "cases.create": "a case with this reference exists",
    "cases.update": "another case of the agency has this reference",
    "cases.delete": "the case still holds locations, seized items or detainees (close it instead)",
    "agencies.create": "an agency with this code exists",
    "agencies.update": "an agency with this code exists",
    "participants.create": "the agency already takes part in the case",
    "participants.update": "the lead's role cannot change",
    "participants.delete": "the lead cannot be removed",
    "locations.delete": "seized items or detainees refer to the location",
    "seized_items.delete": "the chain of custody has events after the seizure (record returned or destroyed)",
    "custody.create": "the event does not continue the chain (order, custodian, closed chain)",
    "requests.update": "the status cannot move this way",
    "messages.create": "the sender withdrew the request",
    "bundles.import": "a case with this reference exists",
}
_TWIN = "the same Idempotency-Key is in flight in another request"

# Routes without an id that still answer 404, and why.
ABSENT = {"federation.instance": "This instance does not federate (`CASEAPI_INSTANCE_ID` is unset)"}

_HEADER = {"schema": {"type": "string"}}
REQUEST_ID_HEADER = {
    **_HEADER,
    "description": "Identifies the request in the server's logs: the caller's own when it sent a sane one",
}
ETAG_HEADER = {**_HEADER, "required": True, "description": 'The version to send back in If-Match, e.g. `"3"`'}
LOCATION_HEADER = {**_HEADER, "required": True, "description": "Where the created record is read"}
REPLAYED_HEADER = {
    "schema": {"type": "string", "enum": ["true"]},
    "description": "Sent when this is the stored answer to an earlier request with the same Idempotency-Key",
}
RETRY_AFTER_HEADER = {
    "schema": {"type": "integer", "minimum": 0},
    "description": "Seconds to wait before trying again",
}
IF_MATCH_PARAMETER = {
    "name": "If-Match",
    "in": "header",
    "required": True,
    "description": "The ETag of the version you read. Missing (or `*`) -> 428; another version -> 412.",
    "schema": {"type": "string", "minLength": 1},
    "example": '"1"',
}

# Stand-ins for ids that differ on every instance (tests swap in real ones).
EXAMPLE_KZ_MVD = "3f6e1c0a-9b2d-4c7e-8a1f-5d4b3c2a1e0f"
EXAMPLE_UA_LE = "7a2b9c4d-1e3f-4a5b-8c6d-0e1f2a3b4c5d"
EXAMPLE_CASE = "c0ffee00-2025-4923-8000-000000000001"
EXAMPLE_LOCATION = "0b1c2d3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e"
_KYIV = "2025-09-23T00:00:00Z"

# Drawn from seed/ (the Kyiv call-centre case of 23 September 2025), as a
# caller would send them; nothing here beyond what the seed says.
EXAMPLES: dict[str, dict[str, Any]] = {
    "agencies.create": {
        "code": "KZ-MVD-CYBER",
        "name": "Cyber-police unit, Ministry of Interior of Kazakhstan",
        "country": "KZ",
        "kind": "police",
        "parent_id": EXAMPLE_KZ_MVD,
    },
    "agencies.update": {"name": "Ministry of Interior of the Republic of Kazakhstan"},
    "cases.create": {
        "reference": "KZ-UA-2025-KYIV-CALL-CENTRE",
        "title": "Transnational fraudulent call centre in Kyiv",
        "summary": "On 23 September 2025 a joint operation by the Ministry of Interior of Kazakhstan and "
        "Ukrainian law enforcement authorities dismantled a transnational fraudulent call centre in Kyiv.",
        "handling_code": "TLP:AMBER",
        "offence_types": ["fraud"],
        "modus_operandi": [
            'fictitious "chargeback" schemes promising to recover investments',
            "forged documents",
            "deepfake technology",
            "social engineering",
        ],
        "victim_regions": ["KZ", "EU", "CIS"],
    },
    "cases.update": {"status": "active"},
    "participants.create": {"agency_id": EXAMPLE_UA_LE, "role": "partner"},
    "participants.update": {"role": "partner"},
    "locations.create": {"label": "Search location 1", "city": "Kyiv", "country": "UA", "searched_at": _KYIV},
    "locations.update": {"searched_at": _KYIV},
    "seized_items.create": {
        "category": "computer",
        "description": "Computers",
        "quantity": 41,
        "location_id": EXAMPLE_LOCATION,
        "seized_at": _KYIV,
    },
    "seized_items.update": {"description": "Mobile phones", "category": "mobile_phone", "quantity": 24},
    "custody.create": {
        "action": "transferred",
        "to_agency_id": EXAMPLE_UA_LE,
        "note": "for examination",
    },
    "detainees.create": {
        "label": "Detainee 1",
        "nationality": "UA",
        "detained_at": _KYIV,
        "custody_status": "in_custody",
    },
    "detainees.update": {"custody_status": "in_custody"},
    "requests.create": {
        "to_agency_id": EXAMPLE_UA_LE,
        "case_id": EXAMPLE_CASE,
        "priority": "urgent",
        "subject": "Subscribers of the seized SIM cards",
        "body": "Please identify the subscribers of the SIM cards seized in Kyiv on 23 September 2025.",
    },
    "requests.update": {"status": "acknowledged"},
    "messages.create": {
        "body": "Subscriber data follows through our secure channel.",
        "source_evaluation": "B",
        "information_evaluation": "2",
    },
    # The article names the seized databases of Kazakhstan numbers but no number: this one is fictitious.
    "identifiers.create": {
        "kind": "phone",
        "value": "+7 701 000 00 01",
        "note": "Fictitious: a number of the kind the seized databases held (Kazakhstan's operators)",
    },
    "hits.search": {"items": [{"kind": "phone", "value": "+7 701 000 00 01"}]},
    "subscriptions.create": {
        "url": "https://hooks.cyberpolice.kz/caseapi",
        "event_types": ["request.*", "seized_item.created"],
        "description": "KZ-MVD duty desk: urgent requests about the Kyiv call centre",
    },
    "bundles.import": {
        "bundle_version": 1,
        "case": {
            "reference": "UA-2025-KYIV-CALL-CENTRE",
            "title": "Transnational fraudulent call centre in Kyiv",
            "status": "active",
            "offence_types": ["fraud"],
            "victim_regions": ["KZ", "EU", "CIS"],
        },
        "locations": [{"id": EXAMPLE_LOCATION, "label": "Search location 1", "searched_at": _KYIV}],
        "seized_items": [
            {
                "id": "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
                "category": "mobile_phone",
                "description": "Mobile phones",
                "quantity": 24,
                "location_id": EXAMPLE_LOCATION,
                "seized_at": _KYIV,
                "custody": [{"action": "seized", "at": _KYIV}],
            }
        ],
        "detainees": [
            {
                "id": "9d8c7b6a-5f4e-4d3c-b2a1-0f9e8d7c6b5a",
                "label": "Detainee 1",
                "nationality": "UA",
                "detained_at": _KYIV,
                "custody_status": "in_custody",
            }
        ],
    },
}


def _component(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    return doc["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {}) if ref else schema


def _success(operation: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    for code, response in operation["responses"].items():
        if code.startswith("2"):
            return code, response
    return None


def _is_versioned(doc: dict[str, Any], response: dict[str, Any]) -> bool:
    """A success whose body has a `version` carries it as the ETag."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return "version" in _component(doc, schema).get("properties", {})


def problem_codes(method: str, operation: dict[str, Any]) -> set[int]:
    """The problem statuses an operation can answer, and no others."""
    params = operation.get("parameters", [])
    has_body = "requestBody" in operation
    secured = bool(operation.get("security"))
    codes = {503}  # admission control and the database, on every route
    # A PATCH or DELETE checks the form of its If-Match (app.core.http.check_if_match).
    if has_body or any(p["name"] == "cursor" for p in params) or method in ("patch", "delete"):
        codes.add(400)
    if secured:
        codes |= {401, 403, 429}
    if any(p["in"] == "path" for p in params) or operation["operationId"] in ABSENT:
        codes.add(404)
    if operation["operationId"] in CONFLICTS or (method == "post" and "201" in operation["responses"]):
        codes.add(409)
    if method in ("patch", "delete"):
        codes |= {412, 428}
    if has_body:
        codes.add(413)
        if "application/octet-stream" in operation["requestBody"]["content"]:  # an upload, streamed
            codes |= {408, 507}
    if any(p["name"] == "Range" for p in params):
        codes.add(416)
    if params or has_body:
        codes.add(422)
    return codes


def _problem(code: int, operation: dict[str, Any], kept: str | None) -> dict[str, Any]:
    description = kept or _PROBLEM_DESCRIPTIONS[code]
    if code == 404 and operation["operationId"] in ABSENT:
        description = ABSENT[operation["operationId"]]
    if code == 409:
        reasons = [CONFLICTS[operation["operationId"]]] if operation["operationId"] in CONFLICTS else []
        if "201" in operation["responses"]:
            reasons.append(_TWIN)
        description = "Conflict: " + "; or ".join(reasons)
    headers: dict[str, Any] = {"X-Request-ID": REQUEST_ID_HEADER}
    if code == 401:
        headers["WWW-Authenticate"] = {**_HEADER, "description": "`Bearer`"}
    if code == 412:
        headers["ETag"] = ETAG_HEADER
    if code == 429:
        headers["Retry-After"] = {**RETRY_AFTER_HEADER, "required": True}
    if code == 503:
        headers["Retry-After"] = RETRY_AFTER_HEADER
    if code == 416:
        headers["Content-Range"] = {**_HEADER, "required": True, "description": "`bytes */SIZE`"}
    return {
        "description": description,
        "headers": headers,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _complete_operation(doc: dict[str, Any], method: str, operation: dict[str, Any]) -> None:
    if method in ("patch", "delete"):
        params = operation.setdefault("parameters", [])
        if not any(p["name"] == "If-Match" for p in params):
            params.append(IF_MATCH_PARAMETER)
    example = EXAMPLES.get(operation["operationId"])
    if example is not None:
        operation["requestBody"]["content"]["application/json"]["example"] = example
    responses = operation["responses"]
    success = _success(operation)
    if success is not None:
        code, response = success
        headers = response.setdefault("headers", {})
        headers["X-Request-ID"] = REQUEST_ID_HEADER
        if code != "204" and _is_versioned(doc, response):
            headers["ETag"] = ETAG_HEADER
        if code == "201":
            headers["Location"] = LOCATION_HEADER
            headers["Idempotent-Replayed"] = REPLAYED_HEADER
    wanted = problem_codes(method, operation)
    for code in list(responses):
        if code[0] in "45" and int(code) not in wanted:
            del responses[code]  # FastAPI's own 422, where nothing can be invalid
    for status in sorted(wanted):
        # A route's own description of a status (the readiness probe's 503) is kept.
        kept = responses.get(str(status), {}).get("description")
        responses[str(status)] = _problem(status, operation, kept if status != 422 else None)


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """Add to FastAPI's document what it cannot see in the route signatures."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path_item in doc.get("paths", {}).values():
        for method, operation in path_item.items():
            if method in _METHODS:
                _complete_operation(doc, method, operation)
    # FastAPI's validation-error shapes: every error leaves as a Problem instead.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return doc


def install(app: FastAPI) -> None:
    """Serve the completed document. FastAPI builds it lazily on the first
    request, so routers included after this call are covered too."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
