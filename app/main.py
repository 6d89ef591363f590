"""create_app(): routers under /api/v1, problem+json errors, local docs assets."""

import logging

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline

import app.journal  # noqa: F401  (installs the audit/event hook on every session)
from app import health
from app.agencies.router import router as agencies
from app.audit.router import router as audit
from app.bundles.router import router as bundles
from app.cases.router import router as cases
from app.config import Settings, get_settings
from app.db import create_db_engine
from app.detainees.router import router as detainees
from app.errors import install_error_handlers
from app.events.router import router as events
from app.evidence.router import router as evidence
from app.limits import BodySizeLimit
from app.locations.router import router as locations
from app.participants.router import router as participants
from app.requests.router import router as information_requests

DESCRIPTION = """
Case-information exchange between law-enforcement agencies: joint
investigations, participating agencies, search locations, seized evidence
with its chain of custody, detainees, and requests for information.

Authenticate with `Authorization: Bearer <key>` (press **Authorize**).
Keys come from `caseapi client create`; `caseapi demo` prints one per agency.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=logging.INFO)
    application = FastAPIOffline(
        title="caseapi",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
    )
    application.state.engine = create_db_engine(
        settings.database_url,
        pool_size=settings.pool_size,
        pool_timeout=settings.pool_timeout_seconds,
    )
    install_error_handlers(application)
    application.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        per_path={"/api/v1/bundles": settings.max_bundle_bytes},
    )

    api = APIRouter(prefix="/api/v1")
    for router in (
        health.router,
        agencies,
        cases,
        participants,
        locations,
        evidence,
        detainees,
        events,
        audit,
        information_requests,
        bundles,
    ):
        api.include_router(router)
    application.include_router(api)
    # Probes of load balancers and orchestrators look at the root.
    application.include_router(health.router, include_in_schema=False)
    return application
