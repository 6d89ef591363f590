"""Prometheus metrics: what the middleware counts, what other rooms report
(bundle imports, webhook deliveries), and gauges read when scraped.

Each app has its own registry (tests build many apps in one process), with
prometheus-client's process, platform and garbage-collector metrics. With
several worker processes (`caseapi serve --workers N`), `caseapi serve`
sets PROMETHEUS_MULTIPROC_DIR: every worker writes its counters and
histograms to files there, and a scrape, whichever worker answers it, sums
them all (prometheus-client's multiprocess mode). The process metrics are
then left out: they would describe only the worker that answered.
"""

import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args

import sqlalchemy as sa
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from app.core.records import AuditEntry, Event
from app.core.uow import PoolStats, Statements

UNMATCHED = "unmatched"  # the route label of a request no route answered
# Any other method is one label value, so that clients cannot mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LABELS = ("method", "route", "status")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# How a bundle import ended: a case created; the first import's answer
# replayed for its Idempotency-Key; refused (4xx: invalid, not allowed);
# 503 as every import process was busy; 503 as its process died; anything else.
BundleImportOutcome = Literal["imported", "replayed", "rejected", "busy", "interrupted", "failed"]
# How one webhook delivery attempt ended: a 2xx, else the reason it failed
# (app.webhooks.models.DeliveryError's values).
WebhookOutcome = Literal[
    "delivered", "http_status", "timeout", "connection", "unresolvable", "address_refused"
]

_AUDIT_HEAD = sa.select(sa.func.max(AuditEntry.seq).label("seq"))
_FEED_HEAD = sa.select(sa.func.max(Event.seq).label("seq"))
ScrapeReader = Callable[[Statements], Awaitable[list[Metric]]]


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@dataclass(frozen=True)
class JournalHeads:
    audit_seq: int
    event_seq: int


async def _head(reads: Statements, stmt: sa.Select[Any]) -> int:
    row = await reads.first(stmt)
    return (row.seq if row else None) or 0  # max() of an empty table is NULL


async def read_journal_heads(reads: Statements) -> JournalHeads:
    """Two index lookups (the highest primary key of each table)."""
    return JournalHeads(await _head(reads, _AUDIT_HEAD), await _head(reads, _FEED_HEAD))


class _StateCollector(Collector):
    """Gauges of one scrape: this worker's connection pool and the journal heads."""

    def __init__(self, pool: PoolStats, heads: JournalHeads | None, read: list[Metric]) -> None:
        self.pool = pool
        self.heads = heads
        self.read = read

    def collect(self) -> Iterator[Metric]:
        heads_known = int(self.heads is not None)
        for name, doc, value in (
            ("caseapi_db_pool_size", "Connections the pool opens at most", self.pool.size),
            ("caseapi_db_pool_checked_out", "Connections in use", self.pool.in_use),
            ("caseapi_db_pool_idle", "Open connections waiting in the pool", self.pool.idle),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        # 0 when the database did not answer the scrape: the rest is still worth reporting.
        yield GaugeMetricFamily("caseapi_db_up", "The database answered this scrape", value=heads_known)
        if self.heads is None:
            return
        yield GaugeMetricFamily(
            "caseapi_audit_entries", "Audit entries written (seq of the newest)", value=self.heads.audit_seq
        )
        yield GaugeMetricFamily(
            "caseapi_feed_seq", "Seq of the newest event of the feed", value=self.heads.event_seq
        )
        yield from self.read


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "caseapi_http_requests", "HTTP requests answered", _LABELS, registry=self.registry
        )
        self.latency = Histogram(
            "caseapi_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response",
            _LABELS,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "caseapi_rate_limited", "Requests refused with 429 by the rate limit", registry=self.registry
        )
        self.waiting = Gauge(
            "caseapi_requests_waiting",
            "Requests waiting for a database connection slot (admission control)",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        bundle_imports = Counter(
            "caseapi_bundle_imports", "Bundle imports by outcome", ["outcome"], registry=self.registry
        )
        webhook_deliveries = Counter(
            "caseapi_webhook_deliveries",
            "Webhook delivery attempts by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.federation_deliveries = Counter(
            "caseapi_federation_deliveries",
            "Deliveries to a peer by outcome (acknowledged with a valid receipt, or failed)",
            ["peer", "outcome"],
            registry=self.registry,
        )
        # Every outcome from the start, at 0: a rate over a series that appears
        # only with its first failure misses that failure.
        self._bundle_imports = {o: bundle_imports.labels(o) for o in get_args(BundleImportOutcome)}
        self._webhook_deliveries = {o: webhook_deliveries.labels(o) for o in get_args(WebhookOutcome)}
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        # The labelled children, looked up once per label combination: a
        # lookup through .labels() costs more than the observation itself.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # Gauges read from the database at each scrape, added by the domains that own them.
        self.scrape_readers: list[ScrapeReader] = []

    async def read_at_scrape(self, db: Statements) -> list[Metric]:
        return [metric for reader in self.scrape_readers for metric in await reader(db)]

    def bundle_imported(self, outcome: BundleImportOutcome) -> None:
        """Count one bundle import that ended."""
        self._bundle_imports[outcome].inc()

    def webhook_attempted(self, error: str | None) -> None:
        """Count one webhook delivery attempt: `error` None when the receiver
        answered 2xx, else the attempt's DeliveryError."""
        self._webhook_deliveries[error or "delivered"].inc()

    def federation_delivered(self, peer: str, *, ok: bool) -> None:
        """Count one delivery to `peer` that ended."""
        self.federation_deliveries.labels(peer, "delivered" if ok else "failed").inc()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "other"  # before the cache too: made-up methods must not grow it
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = self._children[key] = (self.requests.labels(*labels), self.latency.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    def close(self) -> None:
        """At a worker's end: its live gauges leave the sum (its counts stay)."""
        directory = multiprocess_dir()
        if directory:
            mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]

    def exposition(
        self, pool: PoolStats, heads: JournalHeads | None, read: list[Metric] | None = None
    ) -> bytes:
        scrape = CollectorRegistry(auto_describe=False)
        directory = multiprocess_dir()
        if directory:
            MultiProcessCollector(scrape, path=directory)  # type: ignore[no-untyped-call]
        else:
            scrape.register(self.registry)
        scrape.register(_StateCollector(pool, heads, read or []))
        return generate_latest(scrape)
