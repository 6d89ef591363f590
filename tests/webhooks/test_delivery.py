"""Delivery: signed, scoped by what the agency sees when delivering, in order, retried, disabled."""

import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from standardwebhooks import Webhook

from app import cli
from app.auth.models import Scope
from app.core.config import Settings
from app.core.observability.metrics import Metrics
from app.core.records import AuditEntry
from app.core.uow import Database
from app.events.models import EventPublic
from app.main import create_app
from app.webhooks import service
from app.webhooks.delivery import LEASE, RETRY_DELAYS, Deliverer
from app.webhooks.models import WebhookSubscription
from tests.conftest import Caller, join, make_caller, new_case, walk
from tests.webhooks.conftest import API, Clock, claim, complete, deliver, events_of, run, subscribe
from tests.webhooks.receiver import receiving


def _location(client: TestClient, caller: Caller, case_id: str, label: str = "Search location") -> None:
    response = client.post(f"{API}/cases/{case_id}/locations", json={"label": label}, headers=caller.headers)
    assert response.status_code == 201, response.text


def _deliveries(client: TestClient, admin: Caller, sub_id: str) -> list[dict[str, Any]]:
    return walk(client, f"{API}/subscriptions/{sub_id}/deliveries", admin.headers)


def test_signed_in_the_feeds_shape(
    hooks: TestClient, kz_admin: Caller, lead: Caller, deliverer: Deliverer
) -> None:
    with receiving() as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        case = new_case(hooks, lead)
        _location(hooks, lead, case["id"])
        assert deliver(deliverer) == 4
        got = receiver.received
    feed = walk(hooks, f"{API}/events", lead.headers)
    signer = Webhook(sub["secret"])
    payloads = [signer.verify(r.body, r.headers) for r in got]
    assert payloads == feed[-4:]
    assert [p["type"] for p in payloads] == [
        "subscription.created",
        "case.created",
        "participant.created",  # the lead
        "location.created",
    ]
    assert set(payloads[0]) == set(EventPublic.model_fields)
    for r, p in zip(got, payloads, strict=True):
        assert r.headers["webhook-id"] == f"evt_{p['seq']}"
        assert r.headers["content-type"] == "application/json"
    # A forged or altered message does not verify.
    forged = got[1].body.replace(case["id"].encode(), b"00000000-0000-0000-0000-000000000000")
    try:
        signer.verify(forged, got[1].headers)
    except Exception as exc:
        assert "signature" in str(exc).lower()
    else:
        raise AssertionError("an altered body verified")
    deliveries = _deliveries(hooks, kz_admin, sub["id"])
    assert [(d["event_seq"], d["attempt"], d["status_code"], d["error"]) for d in deliveries] == [
        (p["seq"], 1, 204, None) for p in payloads
    ]
    assert all("body" not in d and "response" not in d for d in deliveries)
    state = hooks.get(f"{API}/subscriptions/{sub['id']}", headers=kz_admin.headers).json()
    assert state["last_delivered_seq"] == payloads[-1]["seq"]
    assert state["consecutive_failures"] == 0
    # Nothing new: nothing sent again.
    with receiving() as receiver:
        assert deliver(deliverer) == 0


def test_scoped_to_what_the_agency_sees_when_delivering(
    hooks: TestClient, engine: sa.Engine, kz_admin: Caller, partner: Caller, deliverer: Deliverer
) -> None:
    ua_admin = make_caller(engine, partner.agency_code, Scope.admin)
    with receiving() as receiver:
        mine = subscribe(hooks, kz_admin, receiver.url("/kz"))
        subscribe(hooks, ua_admin, receiver.url("/ua"))
        red = new_case(hooks, partner, handling_code="TLP:RED")
        amber = new_case(hooks, partner)
        green = new_case(hooks, partner, handling_code="TLP:GREEN")
        _location(hooks, partner, green["id"])
        # KZ takes part in a case, and has left it again by the time of delivery.
        left = new_case(hooks, partner)
        join(hooks, partner, left["id"], kz_admin)
        _location(hooks, partner, left["id"])
        leave = hooks.delete(
            f"{API}/cases/{left['id']}/participants/{kz_admin.agency_id}", headers=partner.h(if_match='"1"')
        )
        assert leave.status_code == 204, leave.text
        _location(hooks, partner, left["id"])
        # ... and a case it takes part in when delivering.
        kept = new_case(hooks, partner, handling_code="TLP:RED")
        join(hooks, partner, kept["id"], kz_admin)
        _location(hooks, partner, kept["id"], "kept")
        deliver(deliverer)
        kz = events_of(receiver.bodies("/kz"))
        ua = events_of(receiver.bodies("/ua"))
    kz_cases = {e["case_id"] for e in kz}
    assert red["id"] not in kz_cases
    assert amber["id"] not in kz_cases
    assert left["id"] not in kz_cases
    # A GREEN case's own events reach everyone; what is under it does not.
    assert [(e["type"], e["case_id"]) for e in kz if e["case_id"] == green["id"]] == [
        ("case.created", green["id"])
    ]
    assert [e["type"] for e in kz if e["case_id"] == kept["id"]] == [
        "case.created",
        "participant.created",  # the lead
        "participant.created",  # KZ
        "location.created",
    ]
    # Never another agency's subscription events.
    assert [e["resource_id"] for e in kz if e["resource_type"] == "subscription"] == [mine["id"]]
    # What KZ receives is exactly its feed after subscribing, as GET /events shows it now.
    feed = [e for e in walk(hooks, f"{API}/events", kz_admin.headers) if e["seq"] >= kz[0]["seq"]]
    assert kz == feed
    assert {red["id"], amber["id"], green["id"], left["id"], kept["id"]} <= {e["case_id"] for e in ua}


def test_event_types_filter(hooks: TestClient, kz_admin: Caller, lead: Caller, deliverer: Deliverer) -> None:
    with receiving() as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url(), event_types=["location.*", "case.updated"])
        case = new_case(hooks, lead)
        _location(hooks, lead, case["id"])
        patched = hooks.patch(
            f"{API}/cases/{case['id']}", json={"title": "renamed"}, headers=lead.h(if_match='"1"')
        )
        assert patched.status_code == 200
        deliver(deliverer)
        got = events_of(receiver.bodies())
    assert [e["type"] for e in got] == ["location.created", "case.updated"]
    state = hooks.get(f"{API}/subscriptions/{sub['id']}", headers=kz_admin.headers).json()
    assert state["last_delivered_seq"] == got[-1]["seq"]


def test_in_feed_order_across_batches(
    hooks: TestClient, kz_admin: Caller, lead: Caller, deliverer: Deliverer, monkeypatch: Any
) -> None:
    monkeypatch.setattr("app.webhooks.delivery.BATCH", 7)
    with receiving() as receiver:
        subscribe(hooks, kz_admin, receiver.url())
        for _ in range(4):
            case = new_case(hooks, lead)
            for i in range(5):
                _location(hooks, lead, case["id"], f"L{i}")
        deliver(deliverer)
        got = events_of(receiver.bodies())
    seqs = [e["seq"] for e in got]
    assert len(seqs) == 1 + 4 * (2 + 5)  # case.created and the lead's participant.created
    assert seqs == sorted(set(seqs))
    feed = [e["seq"] for e in walk(hooks, f"{API}/events", lead.headers)]
    assert seqs == feed[feed.index(seqs[0]) :]


def _delays(deliveries: list[dict[str, Any]]) -> list[float]:
    at = datetime.fromisoformat
    return [
        (at(d["next_attempt_at"]) - at(d["attempted_at"])).total_seconds()
        for d in deliveries
        if d["next_attempt_at"]
    ]


def test_retried_after_500_with_growing_delays(
    hooks: TestClient, kz_admin: Caller, lead: Caller, deliverer: Deliverer, clock: Clock
) -> None:
    def two_failures(_path: str, n: int) -> tuple[int, float]:
        return (500, 0.0) if n < 2 else (200, 0.0)

    with receiving(two_failures) as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        new_case(hooks, lead)
        assert deliver(deliverer) == 1
        clock.advance(RETRY_DELAYS[0].total_seconds() * 0.8)  # not yet due (jitter is 10%)
        assert deliver(deliverer) == 0
        clock.advance(RETRY_DELAYS[0].total_seconds() * 0.5)
        assert deliver(deliverer) == 1
        state = hooks.get(f"{API}/subscriptions/{sub['id']}", headers=kz_admin.headers).json()
        assert state["consecutive_failures"] == 2
        assert datetime.fromisoformat(state["next_attempt_at"]) > clock.now
        first_failure = _deliveries(hooks, kz_admin, sub["id"])[0]["attempted_at"]
        assert state["failing_since"] == first_failure
        clock.advance(RETRY_DELAYS[1].total_seconds() * 1.2)
        assert deliver(deliverer) == 3  # the failed event, then the case's two
        got = events_of(receiver.bodies())
    assert [e["type"] for e in got] == [
        "subscription.created",
        "subscription.created",
        "subscription.created",
        "case.created",
        "participant.created",
    ]
    deliveries = _deliveries(hooks, kz_admin, sub["id"])
    assert [(d["attempt"], d["status_code"], d["error"]) for d in deliveries] == [
        (1, 500, "http_status"),
        (2, 500, "http_status"),
        (3, 200, None),
        (1, 200, None),
        (1, 200, None),
    ]
    first, second = _delays(deliveries)
    assert RETRY_DELAYS[0].total_seconds() * 0.9 <= first <= RETRY_DELAYS[0].total_seconds() * 1.1
    assert RETRY_DELAYS[1].total_seconds() * 0.9 <= second <= RETRY_DELAYS[1].total_seconds() * 1.1
    state = hooks.get(f"{API}/subscriptions/{sub['id']}", headers=kz_admin.headers).json()
    assert state["consecutive_failures"] == 0
    assert state["failing_since"] is None
    assert state["last_delivered_seq"] == got[-1]["seq"]


def test_retried_after_a_time_out(
    hooks: TestClient, kz_admin: Caller, deliverer: Deliverer, clock: Clock, private_settings: Settings
) -> None:
    slow = private_settings.webhook_timeout_seconds * 10

    def slow_first(_path: str, n: int) -> tuple[int, float]:
        return (200, slow) if n == 0 else (200, 0.0)

    with receiving(slow_first) as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        started = time.monotonic()
        assert deliver(deliverer) == 1
        assert time.monotonic() - started < slow
        clock.advance(RETRY_DELAYS[0].total_seconds() * 1.2)
        assert deliver(deliverer) == 1
    deliveries = _deliveries(hooks, kz_admin, sub["id"])
    assert [(d["attempt"], d["status_code"], d["error"]) for d in deliveries] == [
        (1, None, "timeout"),
        (2, 200, None),
    ]


def test_redirects_are_not_followed(hooks: TestClient, kz_admin: Caller, deliverer: Deliverer) -> None:
    with receiving(lambda path, _n: (302, 0.0) if path == "/hook" else (200, 0.0)) as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        deliver(deliverer)
        assert [r.path for r in receiver.received] == ["/hook"]
    deliveries = _deliveries(hooks, kz_admin, sub["id"])
    assert [(d["status_code"], d["error"]) for d in deliveries] == [(302, "http_status")]


def test_disabled_after_the_failure_run(
    hooks: TestClient,
    engine: sa.Engine,
    kz_admin: Caller,
    lead: Caller,
    deliverer: Deliverer,
    clock: Clock,
    private_settings: Settings,
) -> None:
    with receiving(lambda _p, _n: (503, 0.0)) as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        for _ in range(private_settings.webhook_max_attempts):
            assert deliver(deliverer) == 1
            clock.advance(RETRY_DELAYS[-1].total_seconds() * 2)
        new_case(hooks, lead)
        assert deliver(deliverer) == 0
        assert len(receiver.received) == private_settings.webhook_max_attempts
    state = hooks.get(f"{API}/subscriptions/{sub['id']}", headers=kz_admin.headers)
    assert state.json()["status"] == "disabled"
    assert state.json()["disabled_at"] is not None
    assert state.json()["next_attempt_at"] is None
    assert state.headers["ETag"] == '"2"'
    deliveries = _deliveries(hooks, kz_admin, sub["id"])
    assert [d["attempt"] for d in deliveries] == list(range(1, private_settings.webhook_max_attempts + 1))
    assert deliveries[-1]["next_attempt_at"] is None
    feed = walk(hooks, f"{API}/events", kz_admin.headers)
    assert ("subscription.disabled", sub["id"]) in [(e["type"], e["resource_id"]) for e in feed]
    with engine.connect() as conn:
        audited = conn.execute(
            sa.select(AuditEntry.action)
            .where(AuditEntry.resource_type == "subscription")
            .order_by(AuditEntry.seq)
        )
        assert list(audited.scalars()) == ["subscription.created", "subscription.disabled"]
    # Re-enabling is subscribing again.
    with receiving() as receiver:
        subscribe(hooks, kz_admin, receiver.url())
        assert deliver(deliverer) == 1


def test_address_checked_again_when_delivering(
    hooks: TestClient, database: Database, kz_admin: Caller, private_settings: Settings, clock: Clock
) -> None:
    """A subscription whose host now points inside the network gets nothing."""
    strict_settings = private_settings.model_copy(update={"webhook_allow_private": False})
    strict = Deliverer(database, strict_settings, clock=clock)
    with receiving() as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        assert deliver(strict) == 1
        assert receiver.received == []
    deliveries = _deliveries(hooks, kz_admin, sub["id"])
    assert [(d["status_code"], d["error"]) for d in deliveries] == [(None, "address_refused")]


def test_a_deleted_subscription_gets_nothing_more(
    hooks: TestClient, kz_admin: Caller, lead: Caller, deliverer: Deliverer
) -> None:
    with receiving() as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        deleted = hooks.delete(f"{API}/subscriptions/{sub['id']}", headers=kz_admin.h(if_match='"1"'))
        assert deleted.status_code == 204
        new_case(hooks, lead)
        assert deliver(deliverer) == 0
        assert receiver.received == []


def test_two_deliverers_never_send_one_event_twice_at_once(
    hooks: TestClient, database: Database, kz_admin: Caller, lead: Caller, private_settings: Settings
) -> None:
    subscriptions = 4
    with receiving(lambda _p, _n: (200, 0.002)) as receiver:
        for n in range(subscriptions):
            subscribe(hooks, kz_admin, receiver.url(f"/hook/{n}"))
        for _ in range(6):
            case = new_case(hooks, lead)
            for i in range(4):
                _location(hooks, lead, case["id"], f"L{i}")
        settings = private_settings.model_copy(update={"webhook_concurrency": 2})
        barrier = threading.Barrier(2)

        def deliver_alone() -> None:
            barrier.wait()
            run(database, Deliverer(database, settings).run_once())

        threads = [threading.Thread(target=deliver_alone) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        expected = [e["seq"] for e in walk(hooks, f"{API}/events", kz_admin.headers)]
        for n in range(subscriptions):
            path = f"/hook/{n}"
            seqs = [e["seq"] for e in events_of(receiver.bodies(path))]
            assert receiver.max_in_flight[path] == 1
            # None twice, none lost, in order.
            assert seqs == expected[expected.index(seqs[0]) :], path


def test_serve_delivers(settings: Settings, engine: sa.Engine, kz_admin: Caller, lead: Caller) -> None:
    served = settings.model_copy(
        update={"webhook_delivery": True, "webhook_allow_private": True, "webhook_poll_seconds": 0.05}
    )
    application = create_app(served)
    with receiving() as receiver, TestClient(application) as client:
        subscribe(client, kz_admin, receiver.url())
        new_case(client, lead)
        deadline = time.monotonic() + 20
        while len(receiver.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = [e["type"] for e in events_of(receiver.bodies())]
        assert got == ["subscription.created", "case.created", "participant.created"]


def test_a_leased_subscription_is_not_claimed_again(
    hooks: TestClient, database: Database, kz_admin: Caller, private_settings: Settings, clock: Clock
) -> None:
    """What keeps two deliverers from sending to one subscription at once."""
    sub = subscribe(hooks, kz_admin, "http://127.0.0.1:9/hook")
    lease = LEASE.total_seconds()
    first = claim(database, private_settings, clock.now)
    assert [str(c.id) for c in first] == [sub["id"]]
    assert claim(database, private_settings, clock.now) == []
    clock.advance(lease * 0.9)
    assert claim(database, private_settings, clock.now) == []
    # A deliverer that died keeps it only until the lease expires.
    clock.advance(lease * 0.2)
    again = claim(database, private_settings, clock.now)
    assert [str(c.id) for c in again] == [sub["id"]]
    # The first holder's results are refused: its lease is gone.
    outcome = service.Outcome(10**6, [], 0, None, clock.now, False)
    assert not complete(database, first[0], outcome, clock.now)
    assert complete(database, again[0], outcome, clock.now)


def test_the_delivery_log_keeps_thirty_days(
    hooks: TestClient, engine: sa.Engine, kz_admin: Caller, lead: Caller, deliverer: Deliverer, clock: Clock
) -> None:
    with receiving() as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        deliver(deliverer)
        clock.advance(timedelta(days=service.DELIVERY_LOG_DAYS, hours=1).total_seconds())
        new_case(hooks, lead)
        deliver(deliverer)
    kept = _deliveries(hooks, kz_admin, sub["id"])
    assert [d["event_type"] for d in kept] == ["case.created", "participant.created"]


def test_caseapi_deliver_once(
    hooks: TestClient, database_url: str, kz_admin: Caller, lead: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASEAPI_DATABASE_URL", database_url)
    monkeypatch.setenv("CASEAPI_WEBHOOK_ALLOW_PRIVATE", "true")
    with receiving() as receiver:
        subscribe(hooks, kz_admin, receiver.url())
        new_case(hooks, lead)
        cli.main(["deliver", "--once"])
        got = [e["type"] for e in events_of(receiver.bodies())]
    assert got == ["subscription.created", "case.created", "participant.created"]


def test_a_secret_sealed_under_another_audit_key_is_not_used(
    hooks: TestClient,
    database: Database,
    kz_admin: Caller,
    private_settings: Settings,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = private_settings.model_copy(
        update={
            "audit_key": SecretStr("68094911865df736c77434bf037b7be7" + "1f97d02f8614facd3073cff5df9a7c31")
        }
    )
    with receiving() as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        assert deliver(Deliverer(database, other, clock=clock)) == 0
        assert receiver.received == []
    assert f"webhook subscription {sub['id']}: its secret does not open" in caplog.text


def test_each_failed_attempt_is_one_warning_line(
    hooks: TestClient,
    database: Database,
    kz_admin: Caller,
    deliverer: Deliverer,
    private_settings: Settings,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Subscription, agency, attempt and reason; never the secret, the event
    or the URL's query (a receiver's token often travels there)."""
    query = "token=receiver-token-in-the-query"
    with receiving(lambda _p, _n: (500, 0.0)) as receiver:
        answering = subscribe(hooks, kz_admin, receiver.url(f"/hook?{query}"))
        # Nothing listens on the discard port.
        closed = subscribe(hooks, kz_admin, f"http://127.0.0.1:9/hook?{query}")
        assert deliver(deliverer) == 2
        clock.advance(RETRY_DELAYS[0].total_seconds() * 2)
        strict = private_settings.model_copy(update={"webhook_allow_private": False})
        assert deliver(Deliverer(database, strict, clock=clock)) == 2
    lines = [r for r in caplog.records if r.getMessage() == "webhook_attempt_failed"]
    assert {r.name for r in lines} == {"caseapi.webhooks"}
    assert {r.levelname for r in lines} == {"WARNING"}
    seen = {(r.subscription_id, r.agency_id, r.attempt, r.reason, r.status_code) for r in lines}  # type: ignore[attr-defined]
    agency = str(kz_admin.agency_id)
    assert seen == {
        (answering["id"], agency, 1, "http_status", 500),
        (closed["id"], agency, 1, "connection", None),
        (answering["id"], agency, 2, "address_refused", None),
        (closed["id"], agency, 2, "address_refused", None),
    }
    for line in lines:
        everything = str(vars(line))
        for secret in (answering["secret"], closed["secret"], query, '"resource_type"', "127.0.0.1"):
            assert secret not in everything


def test_a_name_that_resolves_slowly_takes_one_bound(
    hooks: TestClient,
    kz_admin: Caller,
    deliverer: Deliverer,
    private_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name server that does not answer holds the batch no longer than an attempt may take."""
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kw: real("127.0.0.1", *args, **kw))
    sub = subscribe(hooks, kz_admin, "http://hooks.slow-dns.test:9/hook")
    bound = private_settings.webhook_timeout_seconds

    def silent(*_: Any, **__: Any) -> Any:
        time.sleep(bound * 4)
        raise socket.gaierror("no answer")

    monkeypatch.setattr(socket, "getaddrinfo", silent)
    started = time.monotonic()
    assert deliver(deliverer) == 1
    assert time.monotonic() - started < bound * 3
    deliveries = _deliveries(hooks, kz_admin, sub["id"])
    assert [(d["status_code"], d["error"]) for d in deliveries] == [(None, "unresolvable")]


def test_a_stored_url_with_a_space_is_delivered_to_encoded(
    hooks: TestClient, engine: sa.Engine, kz_admin: Caller, deliverer: Deliverer
) -> None:
    """Spaces are refused when subscribing; one stored before still delivers."""
    with receiving() as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        with engine.begin() as conn:
            conn.execute(
                sa.update(WebhookSubscription)
                .where(WebhookSubscription.id == uuid.UUID(sub["id"]))
                .values(url=receiver.url("/old hook"))
            )
        assert deliver(deliverer) == 1
        assert [r.path for r in receiver.received] == ["/old%20hook"]


def test_each_attempt_is_counted_by_outcome(
    hooks: TestClient, database: Database, kz_admin: Caller, private_settings: Settings, clock: Clock
) -> None:
    """The serving worker's deliverer counts every attempt in
    caseapi_webhook_deliveries_total, by how it ended."""
    metrics = Metrics()
    try:
        with receiving(lambda _p, n: (500, 0.0) if n == 0 else (200, 0.0)) as receiver:
            subscribe(hooks, kz_admin, receiver.url("/hook"))
            counting = Deliverer(database, private_settings, clock=clock, metrics=metrics)
            assert deliver(counting) == 1
            clock.advance(RETRY_DELAYS[0].total_seconds() * 2)
            assert deliver(counting) >= 1
        counted = {
            sample.labels["outcome"]: sample.value
            for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
            for sample in family.samples
            if sample.name == "caseapi_webhook_deliveries_total"
        }
        assert counted["http_status"] == 1 and counted["delivered"] >= 1 and counted["timeout"] == 0
    finally:
        metrics.close()
