"""create_app(): routers under /api/v1, problem+json errors, local docs assets."""

import asyncio
import ctypes
import functools
import gc
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import health
from app.agencies.router import router as agencies
from app.attachments.router import ATTACHMENT_TRANSFERS, ATTACHMENT_UPLOADS
from app.attachments.router import router as attachments
from app.attachments.service import check_storage
from app.attachments.storage import LocalStorage
from app.audit.router import router as audit
from app.auth.service import PrincipalCache
from app.bundles.imports import BundleImports
from app.bundles.router import router as bundles
from app.cases.router import router as cases
from app.core import migrate, openapi
from app.core.admission import Admission
from app.core.config import Settings
from app.core.errors import install_error_handlers
from app.core.gate import Gate
from app.core.limits import BodyLimits
from app.core.observability import router as observability
from app.core.observability.logs import configure_logging
from app.core.observability.metrics import Metrics
from app.core.probes import ProbeCounter
from app.core.ratelimit.rate import Rate
from app.core.ratelimit.service import create_limiter
from app.core.secrets import audit_key, cursor_key
from app.core.uow import create_database
from app.detainees.router import router as detainees
from app.events.router import router as events
from app.evidence.router import router as evidence
from app.federation import directory as federation_directory
from app.federation.delivery import DELIVERIES_PATH, Deliverer, pending_gauge
from app.federation.forward import FORWARD_PATH, forward_write
from app.federation.hits import PeerSearcher
from app.federation.identity import identity
from app.federation.router import router as federation
from app.identifiers import notices
from app.identifiers.limits import HitLimits
from app.identifiers.router import router as identifiers
from app.locations.router import router as locations
from app.participants.router import router as participants
from app.requests.router import router as information_requests
from app.stix.router import router as stix
from app.version import version
from app.webhooks.delivery import deliver
from app.webhooks.router import router as webhooks

DESCRIPTION = """
Case-information exchange between law-enforcement agencies: joint
investigations, participating agencies, search locations, seized evidence
with its chain of custody, detainees, and requests for information.

Authenticate with `Authorization: Bearer <key>` (press **Authorize**).
Keys come from `caseapi client create`; `caseapi demo` prints one per agency.
"""


API_PREFIX = "/api/v1"
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _limit_malloc_arenas() -> None:
    """glibc gives threads that allocate at once arenas of their own, up to
    eight per core; with a pool of worker threads that fragments memory and
    the resident set grows with the thread count. Two arenas bound it."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


# A thread waiting for the GIL gets it after at most this long (Python's default is 5 ms).
_GIL_SWITCH_SECONDS = 0.0005


def _shorten_gil_switch_interval() -> None:
    """The event loop serves requests while worker threads run SQLite's
    statements, file transfers and the bundle imports' pipes; after each wait
    for I/O a thread asks for the GIL back, and gets it only when the holder
    lets go. At Python's default 5 ms, a request could wait that long for
    each of its steps behind a busy thread (measured when bundle imports
    still ran in threads: reads of other cases had a p99 11 times their idle
    one at 5 ms, 6 times at 0.5 ms)."""
    sys.setswitchinterval(_GIL_SWITCH_SECONDS)


@functools.cache  # once per process, however many apps it starts (tests start hundreds)
def _tune_garbage_collector() -> None:
    """Keep the collector's pauses out of the latency tail.

    Everything built at startup (modules, the app, its schemas) lives until
    the process ends, yet each full collection walked all of it again: at
    32 connections that showed as a p99 five times the median. Frozen, it
    is left out; the young generation is collected less often, as requests
    allocate many short-lived objects that reference counting frees anyway.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


# Connections of a worker's pool beyond its admitted requests' (CASEAPI_POOL_SIZE),
# one for each of its background tasks (webhook delivery, hit notices, federation
# delivery): under a full load of requests they would otherwise wait for a
# connection with every request, and time out with the slowest. The refresh of
# peers' agencies, once a period, takes one for a moment from the same reserve.
BACKGROUND_CONNECTIONS = 3


def create_app(settings: Settings | None = None) -> FastAPI:
    """An app on `settings`, the one source of its settings: whatever needs one
    gets it from here (app.state.settings and what is made from them), never
    from a global. None (uvicorn's factory, in a served worker) reads them
    from the environment."""
    settings = settings or Settings()
    # A worker that could not record a change must not start (ConfigError).
    chain_key = audit_key(settings)
    hit_limits = HitLimits(settings)  # ConfigError for a limit below one search
    configure_logging(settings.log_format, settings.log_level, settings.access_log)
    in_flight = settings.pool_size

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        _limit_malloc_arenas()
        # More threads than admitted requests: an admitted request never waits for one.
        threads = anyio.to_thread.current_default_thread_limiter()
        threads.total_tokens = max(threads.total_tokens, in_flight + 8)
        _tune_garbage_collector()
        _shorten_gil_switch_interval()
        stop = asyncio.Event()
        # Every worker delivers webhooks; leases keep them off each other's subscriptions.
        delivering = (
            asyncio.create_task(deliver(application.state.database, settings, stop=stop, metrics=metrics))
            if settings.webhook_delivery
            else None
        )
        noticing = (
            asyncio.create_task(notices.run(application.state.database, settings, stop))
            if settings.hit_notices
            else None
        )
        # A federating instance delivers its cases to the peers that mirror them.
        mirroring = (
            asyncio.create_task(
                Deliverer(application.state.database, identity(settings), settings, metrics).run(stop)
            )
            if settings.instance_id is not None and settings.federation_delivery
            else None
        )
        # ... and holds its peers' agencies as they change at their homes.
        directory = (
            asyncio.create_task(
                federation_directory.run(application.state.database, identity(settings), settings, stop)
            )
            if settings.instance_id is not None
            else None
        )
        yield
        stop.set()
        for task in (delivering, noticing, mirroring, directory):
            if task is not None:
                await task
        await application.state.database.close()
        await asyncio.to_thread(application.state.bundle_imports.close)
        metrics.close()
        if limiter is not None:
            await limiter.close()
        await application.state.hit_limits.close()
        if settings.instance_id is not None:
            await application.state.ask_peers.close()

    application = FastAPIOffline(
        title="caseapi",
        version=version(),
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    application.state.settings = settings
    # What signs this app's list cursors (app.core.pagination), derived once.
    application.state.cursor_key = cursor_key(settings)
    # What /health/ready compares the database with; read once, not per probe.
    application.state.schema_head = migrate.head()
    # The one way to the database for every route and background task.
    application.state.database = create_database(
        settings.database_url,
        size=settings.pool_size + BACKGROUND_CONNECTIONS,
        timeout=settings.pool_timeout_seconds,
        audit_key=chain_key,
    )
    application.state.principals = PrincipalCache(settings.auth_cache_seconds)
    application.state.probes = ProbeCounter(settings.probe_log_threshold, settings.probe_log_window_seconds)
    application.state.storage = LocalStorage(settings.storage_dir)
    # Never serve (nor delete) the files of another database (StorageOfAnotherDatabase).
    check_storage(settings.database_url, application.state.storage)
    application.state.bundle_imports = BundleImports(settings)
    application.state.max_attachment_bytes = settings.max_attachment_bytes
    application.state.hit_limits = hit_limits
    if settings.instance_id is not None:
        # Writes into mirrored cases go to their home (app.core.http.StrictJSONRoute).
        application.state.forward_write = forward_write
        # `"federated": true` searches ask the peers too (app.identifiers.router).
        application.state.ask_peers = PeerSearcher(application.state)
    install_error_handlers(application)
    openapi.install(application)
    metrics = application.state.metrics = Metrics()
    if settings.instance_id is not None:
        metrics.scrape_readers.append(pending_gauge)
    limiter = (
        create_limiter(Rate.parse(settings.rate_limit), settings.redis_url, settings.redis_prefix)
        if settings.rate_limit
        else None
    )

    # Each router straight on the app: FastAPI matches a request level by
    # level, and a router of routers adds a level to every request.
    # The routers agency tools poll most come first: a request is matched
    # against the routes in order (no two of them match the same path).
    api_routers = (
        cases,
        evidence,
        events,
        health.router,
        agencies,
        participants,
        locations,
        detainees,
        audit,
        information_requests,
        bundles,
        identifiers,
        stix,
        webhooks,
        attachments,
        federation,
    )
    for router in api_routers:
        application.include_router(router, prefix=API_PREFIX)
    # Probes of load balancers and orchestrators look at the root.
    application.include_router(health.router, include_in_schema=False)
    application.include_router(observability.router)

    # One middleware (app.core.gate): every answer, refusals included,
    # carries a request id and is counted; a refused request costs nothing further.
    application.add_middleware(
        Gate,
        metrics=metrics,
        api_prefix=API_PREFIX,
        api_routes=[route for router in api_routers for route in router.routes],
        admission=Admission(
            limit=in_flight,
            wait_seconds=settings.pool_timeout_seconds,
            waiting=metrics.waiting,
            # A forwarded write is admitted as the request it carries, not twice.
            exempt=(*ATTACHMENT_TRANSFERS, ("POST", re.compile(re.escape(FORWARD_PATH)))),
        ),
        body_limits=BodyLimits(
            max_bytes=settings.max_body_bytes,
            per_path={
                "/api/v1/bundles": settings.max_bundle_bytes,
                DELIVERIES_PATH: settings.max_delivery_bytes,
            },
            per_pattern=[(pattern, settings.max_attachment_bytes) for pattern in ATTACHMENT_UPLOADS],
        ),
        router=application.router,
        limiter=limiter,
        log_requests=settings.request_log,
    )
    return application
