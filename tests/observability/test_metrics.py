"""GET /metrics (contract §6): Prometheus text, route templates as labels, pool and journal
gauges; only for clients on this host unless a token is set."""

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from app.auth.models import Scope
from app.core.config import Settings
from app.main import BACKGROUND_CONNECTIONS, create_app
from app.webhooks.models import DeliveryError
from tests.conftest import Caller, make_caller, new_case

API = "/api/v1"
TOKEN = "scrape-secret-0123456789"

Peer = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def app_at(settings: Settings, engine: sa.Engine) -> Peer:
    """As app_with, with the requests coming from the address `peer` (the ASGI scope's client)."""

    @contextmanager
    def build(peer: str = "127.0.0.1", **changes: Any) -> Iterator[TestClient]:
        application = create_app(settings.model_copy(update=changes))
        with TestClient(application, raise_server_exceptions=False, client=(peer, 50000)) as client:
            yield client

    return build


def _samples(client: TestClient, headers: dict[str, str] | None = None) -> dict[str, list]:  # type: ignore[type-arg]
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[str, list] = {}  # type: ignore[type-arg]
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def _count(samples: dict[str, list], **labels: str) -> float:  # type: ignore[type-arg]
    return sum(
        s.value
        for s in samples.get("caseapi_http_requests_total", [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_requests_are_counted_by_route_template_never_by_raw_path(app_at: Peer, lead: Caller) -> None:
    missing = uuid.uuid4()
    with app_at() as client:
        case = new_case(client, lead)
        for _ in range(3):
            assert client.get(f"{API}/cases/{case['id']}", headers=lead.headers).status_code == 200
        assert client.get(f"{API}/cases/{missing}", headers=lead.headers).status_code == 404
        assert client.get(f"/no/such/{missing}").status_code == 404
        assert client.request("BREW", f"{API}/cases").status_code in (400, 405)
        text = client.get("/metrics").text
        samples = _samples(client)
    template = "/api/v1/cases/{case_id}"
    assert _count(samples, method="GET", route=template, status="200") == 3
    assert _count(samples, method="GET", route=template, status="404") == 1
    assert _count(samples, method="POST", route="/api/v1/cases", status="201") == 1
    assert _count(samples, method="GET", route="unmatched", status="404") == 1
    # A method a client made up is one label value, not a new one per request.
    assert _count(samples, method="other") == 1 and _count(samples, method="BREW") == 0
    metrics = client.app.state.metrics
    for n in range(50):
        metrics.observe(f"M{n}", "unmatched", 405, 0.001)
    assert len(metrics._children) < 10  # nor do they grow the worker's memory
    # No id and no raw path reaches a label.
    assert case["id"] not in text and str(missing) not in text and "/no/such" not in text
    histogram = [
        s
        for s in samples["caseapi_http_request_duration_seconds_count"]
        if s.labels == {"method": "GET", "route": template, "status": "200"}
    ]
    assert [s.value for s in histogram] == [3]
    buckets = [
        s
        for s in samples["caseapi_http_request_duration_seconds_bucket"]
        if s.labels.get("route") == template and s.labels.get("status") == "200"
    ]
    assert buckets and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 3


def test_the_health_routes_at_the_root_and_under_the_api_are_told_apart(app_at: Peer) -> None:
    with app_at() as client:
        client.get("/health")
        client.get(f"{API}/health")
        client.get(f"{API}/health")
        samples = _samples(client)
    assert _count(samples, route="/health") == 1
    assert _count(samples, route="/api/v1/health") == 2


def test_gauges_read_the_pool_and_the_journal_when_scraped(
    app_at: Peer, engine: sa.Engine, lead: Caller
) -> None:
    with app_at(pool_size=7) as client:
        new_case(client, lead)
        new_case(client, lead)
        samples = _samples(client)
    with engine.connect() as conn:
        audit_head = conn.execute(sa.text("SELECT max(seq) FROM audit_entry")).scalar_one()
        feed_head = conn.execute(sa.text("SELECT max(seq) FROM event")).scalar_one()
    assert audit_head >= 2 and feed_head >= 2
    assert samples["caseapi_audit_entries"][0].value == audit_head
    assert samples["caseapi_feed_seq"][0].value == feed_head
    assert samples["caseapi_db_up"][0].value == 1
    # The admitted requests' connections, and the background tasks'.
    assert samples["caseapi_db_pool_size"][0].value == 7 + BACKGROUND_CONNECTIONS
    assert samples["caseapi_db_pool_checked_out"][0].value == 0  # nothing in flight while scraping
    assert samples["caseapi_requests_waiting"][0].value == 0


def test_metrics_are_outside_the_api_and_its_schema(client: TestClient) -> None:
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]
    assert client.get(f"{API}/metrics").status_code == 404


def test_a_metrics_token_guards_the_scrape_even_from_this_host(app_at: Peer) -> None:
    with app_at(metrics_token=SecretStr(TOKEN)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert refused.headers["content-type"] == "application/problem+json"
            assert "caseapi_" not in refused.text
        assert _samples(client, {"Authorization": f"Bearer {TOKEN}"})


@pytest.mark.parametrize("peer", ["203.0.113.7", "10.0.0.5", "::ffff:203.0.113.7", "testclient"])
def test_without_a_token_only_this_host_is_answered(app_at: Peer, peer: str) -> None:
    with app_at(peer) as client:
        # The forwarded-for header is the client's word: the server's peer address decides.
        refused = client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert "CASEAPI_METRICS_TOKEN" in refused.json()["detail"]
        assert "caseapi_" not in refused.text
    with app_at(peer, metrics_token=SecretStr(TOKEN)) as client:
        assert _samples(client, {"Authorization": f"Bearer {TOKEN}"})  # a remote scraper with the token


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_without_a_token_a_client_on_this_host_is_answered(app_at: Peer, peer: str) -> None:
    with app_at(peer) as client:
        assert _samples(client)["caseapi_db_up"][0].value == 1


def test_process_metrics_and_the_counters_other_rooms_report(app_at: Peer) -> None:
    with app_at() as client:
        metrics = client.app.state.metrics
        before = _samples(client)
        metrics.bundle_imported("imported")
        metrics.bundle_imported("imported")
        metrics.bundle_imported("rejected")
        metrics.webhook_attempted(None)
        metrics.webhook_attempted(DeliveryError.timeout)
        after = _samples(client)
    for name in ("process_resident_memory_bytes", "process_open_fds", "python_gc_objects_collected_total"):
        assert after[name], name
    assert after["python_info"][0].labels["major"] == "3"

    def outcomes(samples: dict[str, list], name: str) -> dict[str, float]:  # type: ignore[type-arg]
        return {s.labels["outcome"]: s.value for s in samples[name]}

    # Every outcome is there from the start, at 0.
    assert set(outcomes(before, "caseapi_bundle_imports_total").values()) == {0}
    assert outcomes(after, "caseapi_bundle_imports_total") == {
        "imported": 2,
        "replayed": 0,
        "rejected": 1,
        "busy": 0,
        "interrupted": 0,
        "failed": 0,
    }
    assert outcomes(after, "caseapi_webhook_deliveries_total") == {
        "delivered": 1,
        "timeout": 1,
        **{error.value: 0 for error in DeliveryError if error != DeliveryError.timeout},
    }


def test_bundle_imports_are_counted_by_outcome(app_at: Peer, engine: sa.Engine) -> None:
    """POST /bundles counts each import in caseapi_bundle_imports_total: a new
    case, a replay of the same key and bytes, and a bundle refused."""
    kz = make_caller(engine, "KZ-MVD", Scope.read, Scope.write)
    ua = make_caller(engine, "UA-LE", Scope.read, Scope.write)
    with app_at() as client:
        case = client.post(
            "/api/v1/cases", json={"reference": "KZ-UA-2025", "title": "Call centre"}, headers=kz.headers
        )
        bundle = client.get(f"/api/v1/cases/{case.json()['id']}/bundle", headers=kz.headers).content
        once = {**ua.headers, "Content-Type": "application/json", "Idempotency-Key": "kyiv-1"}
        assert client.post("/api/v1/bundles", content=bundle, headers=once).status_code == 201
        assert client.post("/api/v1/bundles", content=bundle, headers=once).status_code == 201
        refused = client.post(
            "/api/v1/bundles", content=b"{}", headers={**ua.headers, "Content-Type": "application/json"}
        )
        assert refused.status_code == 422
        counted = {s.labels["outcome"]: s.value for s in _samples(client)["caseapi_bundle_imports_total"]}
    assert counted == {"imported": 1, "replayed": 1, "rejected": 1, "busy": 0, "interrupted": 0, "failed": 0}
