"""/subscriptions: admin of the agency only, SSRF refusals, the secret shown once, 404 for others."""

import socket
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.auth.models import Scope
from app.core.config import Settings
from app.core.records import AuditEntry, Event
from app.webhooks import service
from app.webhooks.models import WebhookSubscription
from tests.conftest import Caller, make_caller, walk
from tests.webhooks.conftest import API, random_id, subscribe

PUBLIC = "https://93.184.215.14/caseapi"  # a public address: no DNS needed


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hook",  # not https
        "https://127.0.0.1/hook",
        "https://127.1.2.3:8443/hook",
        "https://10.1.2.3/hook",
        "https://172.16.0.1/hook",
        "https://192.168.1.1/hook",
        "https://100.64.0.1/hook",  # carrier-grade NAT
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data/",  # cloud metadata
        "https://[fe80::1]/hook",
        "https://224.0.0.1/hook",
        "https://0.0.0.0/hook",
        "https://240.0.0.1/hook",  # reserved
        "https://[::ffff:10.0.0.1]/hook",  # IPv4-mapped
        "https://[::ffff:127.0.0.1]/hook",
        "https://[2002:a00:1::]/hook",  # 6to4 of 10.0.0.1
        "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
        "https://localhost/hook",  # a name resolving to loopback
        "https://[fec0::1]/hook",  # IPv6 site-local
        "https://[fec1:2::3]:8443/hook",
        "https://xn--localhost-/",  # a malformed IDNA label
        "https://xn--/hook",
        "https://93.184.215.14/a hook",
        "https://93.184.215.14/hook ",
        "https://93.184.215.14/hook\u00a0",  # no-break space
        "https://93.184.215.14/ho\u200bok",  # zero-width space
        "https://93.184.215.14/hook\u202e",  # right-to-left override
        "https://93.184.215.14/hook\u0085",  # next line
        "https://93.184.215.14/hook\x7f",
        "https://user:password@93.184.215.14/hook",
        "https://no-such-host.invalid/hook",
        "ftp://93.184.215.14/hook",
        "not a url",
    ],
)
def test_refused_urls(client: TestClient, admin: Caller, url: str) -> None:
    response = client.post(f"{API}/subscriptions", json={"url": url}, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "url"]
    assert client.get(f"{API}/subscriptions", headers=admin.headers).json()["items"] == []


@pytest.mark.parametrize(
    "event_types", [["case"], ["case.*.x"], ["*"], ["Case.created"], ["case.created "], ["x" * 80 + ".y"]]
)
def test_event_types_are_validated(client: TestClient, admin: Caller, event_types: list[str]) -> None:
    response = client.post(
        f"{API}/subscriptions", json={"url": PUBLIC, "event_types": event_types}, headers=admin.headers
    )
    assert response.status_code == 422, response.text


def test_unknown_and_read_only_fields_are_refused(client: TestClient, admin: Caller) -> None:
    for extra in ({"secret": "whsec_AAAA"}, {"agency_id": random_id()}, {"last_delivered_seq": 0}):
        response = client.post(f"{API}/subscriptions", json={"url": PUBLIC, **extra}, headers=admin.headers)
        assert response.status_code == 422, response.text


def test_secret_shown_once(client: TestClient, admin: Caller) -> None:
    response = client.post(
        f"{API}/subscriptions",
        json={"url": PUBLIC, "event_types": ["request.*", "case.created"], "description": "duty desk"},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["secret"].startswith("whsec_")
    assert response.headers["Location"] == f"{API}/subscriptions/{created['id']}"
    assert response.headers["ETag"] == '"1"'
    assert created["status"] == "active"
    assert created["agency_id"] == str(admin.agency_id)

    got = client.get(response.headers["Location"], headers=admin.headers)
    assert got.status_code == 200
    assert got.headers["ETag"] == '"1"'
    assert "secret" not in got.json()
    assert got.json() == {k: v for k, v in created.items() if k != "secret"}
    listed = client.get(f"{API}/subscriptions", headers=admin.headers).json()["items"]
    assert [s["id"] for s in listed] == [created["id"]]
    assert "secret" not in listed[0]


def test_secret_is_sealed_at_rest(
    client: TestClient, admin: Caller, engine: sa.Engine, settings: Settings
) -> None:
    first = subscribe(client, admin, PUBLIC)
    second = subscribe(client, admin, PUBLIC + "/2")
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.select(WebhookSubscription.id, WebhookSubscription.secret_sealed)).all())
        everything = conn.execute(sa.text("SELECT * FROM webhook_subscription")).all()
    dumped = b"".join(str(r).encode() for r in everything)
    for sub in (first, second):
        secret = sub["secret"]
        assert secret.encode() not in dumped
        assert secret.removeprefix("whsec_").encode() not in dumped
    first_id, second_id = uuid.UUID(first["id"]), uuid.UUID(second["id"])
    assert service.unseal(settings, first_id, rows[first_id]) == first["secret"]
    # Someone who writes to the database moves a sealed secret to another row: it does not open.
    with pytest.raises(InvalidTag):
        service.unseal(settings, second_id, rows[first_id])
    # Nor under another audit key.
    other = settings.model_copy(
        update={
            "audit_key": SecretStr("49d85cf074b3158d31ede906377c7d60" + "39e7ff2bf997dbd61edba86f6767eb0d")
        }
    )
    with pytest.raises(InvalidTag):
        service.unseal(other, first_id, rows[first_id])


def test_admin_scope_required(client: TestClient, engine: sa.Engine, admin: Caller) -> None:
    sub = subscribe(client, admin, PUBLIC)
    same_agency = make_caller(engine, admin.agency_code, Scope.read, Scope.write, Scope.personal_data)
    for method, path in (
        ("GET", "/subscriptions"),
        ("POST", "/subscriptions"),
        ("GET", f"/subscriptions/{sub['id']}"),
        ("DELETE", f"/subscriptions/{sub['id']}"),
        ("GET", f"/subscriptions/{sub['id']}/deliveries"),
    ):
        response = client.request(
            method,
            API + path,
            json={"url": PUBLIC} if method == "POST" else None,
            headers=same_agency.h(if_match='"1"'),
        )
        assert response.status_code == 403, (method, path, response.text)
    assert client.get(f"{API}/subscriptions", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_another_agencys_subscription_is_not_found(
    client: TestClient, engine: sa.Engine, admin: Caller
) -> None:
    sub = subscribe(client, admin, PUBLIC)
    other = make_caller(engine, "UA-ADMIN", Scope.read, Scope.admin)
    assert client.get(f"{API}/subscriptions", headers=other.headers).json()["items"] == []
    for path in ("/subscriptions/{}", "/subscriptions/{}/deliveries"):
        hidden = client.get(API + path.format(sub["id"]), headers=other.headers)
        missing = client.get(API + path.format(random_id()), headers=other.headers)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["detail"] == missing.json()["detail"]
        assert hidden.json()["type"] == missing.json()["type"]
    for if_match in ('"1"', '"7"', None):
        headers = other.h(if_match=if_match) if if_match else other.headers
        deleted = client.delete(f"{API}/subscriptions/{sub['id']}", headers=headers)
        missing = client.delete(f"{API}/subscriptions/{random_id()}", headers=headers)
        assert deleted.status_code == missing.status_code == 404
        assert deleted.json()["detail"] == missing.json()["detail"]
    assert client.get(f"{API}/subscriptions/{sub['id']}", headers=admin.headers).status_code == 200


def test_delete_needs_if_match_and_is_audited(client: TestClient, admin: Caller, engine: sa.Engine) -> None:
    sub = subscribe(client, admin, PUBLIC)
    path = f"{API}/subscriptions/{sub['id']}"
    assert client.delete(path, headers=admin.headers).status_code == 428
    assert client.delete(path, headers=admin.h(if_match='"2"')).status_code == 412
    assert client.delete(path, headers=admin.h(if_match='"1"')).status_code == 204
    assert client.get(path, headers=admin.headers).status_code == 404
    with engine.connect() as conn:
        actions = conn.execute(
            sa.select(AuditEntry.action, AuditEntry.agency_id)
            .where(AuditEntry.resource_type == "subscription")
            .order_by(AuditEntry.seq)
        ).all()
        types = conn.execute(
            sa.select(Event.type).where(Event.resource_type == "subscription").order_by(Event.seq)
        ).scalars()
        types = list(types)
    assert [a for a, _ in actions] == ["subscription.created", "subscription.deleted"]
    assert {agency for _, agency in actions} == {admin.agency_id}
    assert types == ["subscription.created", "subscription.deleted"]


def test_subscription_events_reach_only_the_owner(
    client: TestClient, engine: sa.Engine, admin: Caller, outsider: Caller
) -> None:
    sub = subscribe(client, admin, PUBLIC)
    same_agency = make_caller(engine, admin.agency_code, Scope.read)
    feed = walk(client, f"{API}/events", same_agency.headers)
    mine = [e for e in feed if e["resource_type"] == "subscription"]
    assert [(e["type"], e["resource_id"]) for e in mine] == [("subscription.created", sub["id"])]
    theirs = walk(client, f"{API}/events", outsider.headers)
    assert [e for e in theirs if e["resource_type"] == "subscription"] == []


def test_idempotent_create(client: TestClient, admin: Caller) -> None:
    headers = admin.h(idempotency_key="hook-1")
    first = client.post(f"{API}/subscriptions", json={"url": PUBLIC}, headers=headers)
    again = client.post(f"{API}/subscriptions", json={"url": PUBLIC}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert len(client.get(f"{API}/subscriptions", headers=admin.headers).json()["items"]) == 1
    other = client.post(f"{API}/subscriptions", json={"url": PUBLIC + "/x"}, headers=headers)
    assert other.status_code == 422


def test_list_pages(client: TestClient, admin: Caller) -> None:
    ids = [subscribe(client, admin, f"{PUBLIC}/{i}")["id"] for i in range(5)]
    assert [s["id"] for s in walk(client, f"{API}/subscriptions", admin.headers, limit=2)] == ids
    assert client.get(f"{API}/subscriptions?limit=0", headers=admin.headers).status_code == 422
    assert client.get(f"{API}/subscriptions?cursor=garbage", headers=admin.headers).status_code == 400


def _resolving_to(*addresses: str) -> Callable[..., list[tuple[Any, ...]]]:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    return getaddrinfo


def test_the_url_is_stored_as_it_is_sent(
    client: TestClient, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Non-ASCII path and query characters are percent-encoded, an IDN host is
    looked up and stored in its IDNA form (2008, which differs from the
    standard library's for `ß`): what the agency reads is what is delivered to."""
    sub = subscribe(client, admin, f"{PUBLIC}/d\u00e9p\u00f4t?v=\u00fc&x=%41")
    assert sub["url"] == f"{PUBLIC}/d%C3%A9p%C3%B4t?v=%C3%BC&x=%41"
    assert client.get(f"{API}/subscriptions/{sub['id']}", headers=admin.headers).json()["url"] == sub["url"]
    looked_up: list[str] = []
    resolving = _resolving_to("93.184.215.14")

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        looked_up.append(host)
        return resolving(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    sub = subscribe(client, admin, "https://Stra\u00dfe.example/hook")
    assert sub["url"] == "https://xn--strae-oqa.example/hook"
    assert looked_up == ["xn--strae-oqa.example"]


def test_every_address_of_a_name_must_be_public(
    client: TestClient, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name whose DNS answer mixes a public and a private address is refused:
    its owner, not the server, would choose which one is reached."""
    url = "https://hooks.example.org/caseapi"
    monkeypatch.setattr(socket, "getaddrinfo", _resolving_to("93.184.215.14", "10.0.0.5"))
    refused = client.post(f"{API}/subscriptions", json={"url": url}, headers=admin.headers)
    assert refused.status_code == 422, refused.text
    assert "10.0.0.5" in refused.json()["detail"]
    monkeypatch.setattr(socket, "getaddrinfo", _resolving_to("fe80::1%eth0"))
    assert client.post(f"{API}/subscriptions", json={"url": url}, headers=admin.headers).status_code == 422
    monkeypatch.setattr(
        socket, "getaddrinfo", _resolving_to("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    )
    assert subscribe(client, admin, url)["url"] == url


def test_subscriptions_per_agency_are_bounded(client: TestClient, admin: Caller, engine: sa.Engine) -> None:
    for n in range(service.MAX_SUBSCRIPTIONS_PER_AGENCY):
        subscribe(client, admin, f"{PUBLIC}/{n}")
    over = client.post(f"{API}/subscriptions", json={"url": PUBLIC}, headers=admin.headers)
    assert over.status_code == 409, over.text
    # Another agency has its own allowance.
    other = make_caller(engine, "UA-ADMIN", Scope.admin)
    assert client.post(f"{API}/subscriptions", json={"url": PUBLIC}, headers=other.headers).status_code == 201
