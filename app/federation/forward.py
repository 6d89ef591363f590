"""Writes through a mirror go home (§9).

On the mirror, a write that reaches a mirrored case is stopped by the access
rules (HeldElsewhere), its transaction rolled back, and the request sent to
the case's home, signed, naming the calling agency, its client and scopes:
method, path, query, body and the headers the home's rules read (If-Match,
Idempotency-Key, X-Purpose). The home checks that the sender hosts that
agency and that the agency takes part in the case, and that the request is
a write a mirror forwards (in a case, never with `admin`), then answers it
as if the agency had called it there, with its own rules, and its answer is
the caller's. The change reaches the mirror by delivery. A home that cannot
be reached: 503 with Retry-After, and nothing is stored on either side.
"""

import base64
import re
import uuid
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from fastapi import Request, Response
from starlette.types import Message

from app.agencies.models import Agency
from app.auth.deps import FORWARDED_PRINCIPAL
from app.auth.models import Scope
from app.auth.service import Principal
from app.core.db import table_of
from app.core.errors import AppError, HeldElsewhere
from app.core.uow import Row, Statements
from app.federation import answers, mirror, signatures
from app.federation.identity import identity
from app.federation.models import Peer
from app.participants.models import Participant

FORWARD_PATH = "/api/v1/federation/forward"
# The request headers the home's rules read; nothing else travels.
FORWARDED_HEADERS = ("content-type", "if-match", "idempotency-key", "x-purpose")
# The response headers the caller gets back from the home's answer.
ANSWERED_HEADERS = ("content-type", "etag", "location", "retry-after")
WRITES = ("POST", "PATCH", "PUT", "DELETE")
FORWARD_TIMEOUT = httpx.Timeout(30.0)
RETRY_AFTER = "5"
# The scopes a peer's agency acts with here: `admin` manages an instance's own
# agencies and webhooks, which a peer's agency never does at another's home.
REMOTE_SCOPES = frozenset({Scope.read.value, Scope.write.value, Scope.personal_data.value})
# The writes a mirror forwards: on a case or a record that lies under one (the
# home's rules find which, and whether the agency may write there), or a new
# information request whose body names its case. Nothing else reaches a mirror.
_IN_A_CASE = re.compile(
    r"/api/v1/(?:cases|seized-items|locations|detainees|identifiers|attachments|requests)/[^/]+(?:/.*)?"
)
_NEW_REQUEST = ("POST", "/api/v1/requests")
# The namespace of the client ids a home gives a peer's clients: derived, so
# that a peer can never act as a client of the home, nor use its idempotency keys.
_REMOTE_CLIENTS = uuid.UUID("6d1f0c1e-8f1e-4d4f-9a56-6a4f2b1e7c10")

PEERS = table_of(Peer)
AGENCIES = table_of(Agency)
PARTICIPANTS = table_of(Participant)
_PEER = sa.select(PEERS).where(PEERS.c.instance_id == sa.bindparam("peer_id"))


def _unreachable(home: str, why: str) -> AppError:
    return AppError(
        503,
        f"This case lives on {home}, which could not take the change ({why}); nothing was stored. "
        "Try again later.",
        slug="home-unreachable",
        title="Service Unavailable",
        headers={"Retry-After": RETRY_AFTER},
    )


async def forward_write(request: Request, held: HeldElsewhere) -> Response:
    """The mirror's side: send the request home; the home's answer."""
    state = request.app.state
    caller: Principal = held.caller
    peer = await state.database.first(_PEER, {"peer_id": held.home})
    if peer is None:
        raise _unreachable(held.home, "it is not a peer of this instance any more")
    envelope = {
        "case_id": str(held.case_id),
        "agency_id": str(caller.agency_id),
        "client_id": str(caller.client_id),
        "scopes": sorted(caller.scopes),
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "headers": {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers},
        "body": base64.b64encode(held.body or b"").decode(),
    }
    body = orjson.dumps(envelope)
    url = peer.url + FORWARD_PATH
    me = identity(state.settings)
    headers = signatures.sign(me, "POST", url, body) | {"Content-Type": "application/json"}
    try:
        async with httpx.AsyncClient(timeout=FORWARD_TIMEOUT, follow_redirects=False) as http:
            answer = await answers.request(
                http, "POST", url, limit=state.settings.max_delivery_bytes, content=body, headers=headers
            )
    except httpx.HTTPError as exc:
        raise _unreachable(held.home, type(exc).__name__) from None
    if answer.status_code == 401 or (answer.status_code >= 500 and "caseapi-answered" not in answer.headers):
        raise _unreachable(held.home, f"it answered {answer.status_code}")
    return Response(
        answer.content,
        status_code=answer.status_code,
        headers={name: answer.headers[name] for name in ANSWERED_HEADERS if name in answer.headers},
    )


# ---- the home's side ----------------------------------------------------------------------------

_AGENCY = sa.select(AGENCIES).where(AGENCIES.c.id == sa.bindparam("agency_id"))
_TAKES_PART = sa.select(PARTICIPANTS.c.role).where(
    PARTICIPANTS.c.case_id == sa.bindparam("case_id"), PARTICIPANTS.c.agency_id == sa.bindparam("agency_id")
)


def field(envelope: dict[str, Any], name: str, kind: type) -> Any:
    value = envelope.get(name)
    if not isinstance(value, kind):
        raise mirror.MalformedDelivery(f"the forwarded request has no valid {name}")
    return value


def _uuid(envelope: dict[str, Any], name: str) -> uuid.UUID:
    try:
        return uuid.UUID(field(envelope, name, str))
    except ValueError:
        raise mirror.MalformedDelivery(f"the forwarded request has no valid {name}") from None


async def remote_principal(db: Statements, sender: Row, envelope: dict[str, Any]) -> Principal:
    """Whom a peer's request acts for: the agency it names, which the sender must
    host (403 otherwise), as the client it names, under an id derived for it here."""
    agency = await db.first(_AGENCY, {"agency_id": _uuid(envelope, "agency_id")})
    if agency is None or agency.home_instance != sender.instance_id:
        raise mirror.beyond_authority(f"{sender.instance_id} does not host this agency")
    scopes = field(envelope, "scopes", list)
    if not all(isinstance(scope, str) for scope in scopes):
        raise mirror.MalformedDelivery("the forwarded request's scopes are not names")
    client = uuid.uuid5(_REMOTE_CLIENTS, f"{sender.instance_id}/{_uuid(envelope, 'client_id')}")
    return Principal(
        client_id=client,
        agency_id=agency.id,
        parent_agency_id=agency.parent_id,
        scopes=frozenset(scope for scope in scopes if scope in REMOTE_SCOPES),
        remote=True,
    )


async def principal_of(db: Statements, sender: Row, envelope: dict[str, Any]) -> Principal:
    """Whom a forwarded write acts for: remote_principal(), taking part in the
    case the mirror named (403 otherwise)."""
    principal = await remote_principal(db, sender, envelope)
    case_id = _uuid(envelope, "case_id")
    if await db.first(_TAKES_PART, {"case_id": case_id, "agency_id": principal.agency_id}) is None:
        raise mirror.beyond_authority(f"this agency does not take part in case {case_id}")
    return principal


def _require_in_a_case(method: str, path: str, body: bytes, case_id: uuid.UUID) -> None:
    """403 unless the request is a write a mirror forwards (_IN_A_CASE): a new
    case, a bundle, an agency, a subscription or a request outside a case would
    be a record of this instance's own, made by a peer. A new request must be in
    the case the agency was found to take part in (`case_id`): the home's own
    rules would let a sub-agency that reads another case under AMBER make one."""
    if _IN_A_CASE.fullmatch(path) is not None:
        return
    if (method, path) == _NEW_REQUEST:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            request = None
        named = request.get("case_id") if isinstance(request, dict) else None
        if named is not None:
            if _as_uuid(named) not in (case_id, None):  # None: not an id, which the home's rules refuse
                raise mirror.beyond_authority(f"this agency does not take part in case {named}")
            return
    raise mirror.beyond_authority(f"{method} {path} is not a write in a case")


def _as_uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


async def answer(request: Request, principal: Principal, envelope: dict[str, Any]) -> Response:
    """Answer the forwarded request as this instance's app answers its own
    callers, as `principal`: the same routes, rules, transaction and journal."""
    method = field(envelope, "method", str)
    path = field(envelope, "path", str)
    if method not in WRITES or not path.startswith("/api/v1/") or path.startswith("/api/v1/federation/"):
        raise mirror.beyond_authority(f"{method} {path} is not a write a mirror forwards")
    forwarded = field(envelope, "headers", dict)
    try:
        body = base64.b64decode(field(envelope, "body", str), validate=True)
    except ValueError:
        raise mirror.MalformedDelivery("the forwarded body is not base64") from None
    _require_in_a_case(method, path, body, _uuid(envelope, "case_id"))
    headers = [
        (name.encode(), str(value).encode("latin-1", "replace"))
        for name, value in forwarded.items()
        if name in FORWARDED_HEADERS and isinstance(value, str)
    ] + [(b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": request.url.scheme,
        "server": request.scope.get("server"),
        "client": request.scope.get("client"),
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": field(envelope, "query", str).encode(),
        "headers": headers,
        FORWARDED_PRINCIPAL: principal,
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status, response_headers, chunks = 500, [], []

    async def send(message: Message) -> None:
        nonlocal status, response_headers
        if message["type"] == "http.response.start":
            status, response_headers = message["status"], message.get("headers", [])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await request.app(scope, receive, send)
    kept = [(k, v) for k, v in response_headers if k.decode("latin-1").lower() in ANSWERED_HEADERS]
    response = Response(b"".join(chunks), status_code=status)
    response.raw_headers = [*kept, (b"content-length", str(sum(map(len, chunks))).encode())]
    # Tells the mirror this 5xx is the home's answer, not a failure to reach it.
    response.raw_headers.append((b"caseapi-answered", b"1"))
    return response
