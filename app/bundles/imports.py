"""Bundle imports, each in a process of its own.

A 10 000-item import is seconds of Python: parsing, validating, making rows.
In the worker that serves everyone else it would share one GIL with the event
loop, and other agencies' reads would wait for it (bench/import_stall.py: in
a worker thread, their p99 was 3.5 times the idle one). So a worker hands its
imports to a small pool of processes (`CASEAPI_IMPORT_PROCESSES` per worker)
and awaits the answer without holding a thread or the GIL.

The child runs what the route ran before, in one transaction on a
connection of its own: validation, the rows, the journal, the Idempotency-Key
record and the commit. Errors come back as the exceptions they are (AppError
and SQLAlchemy's pickle), so app.errors answers them as for any route. A child
that dies takes its transaction with it (its connection closes, nothing is
committed, unless it died between its commit and its answer); the import
answers 503, and a retry with the same Idempotency-Key learns which it was.
The next import gets a new pool.

Children are forked from multiprocessing's fork server, a clean process with
these modules loaded, so a new child starts in milliseconds and never
inherits the worker's threads, sockets or pooled connections. Each serves at
most IMPORTS_PER_CHILD imports and is then replaced: the memory a large bundle
took goes back to the system instead of staying with an idle process.
"""

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack

from sqlalchemy.engine import Engine
from starlette.responses import Response

import app.models  # noqa: F401  (every table, for a child's statements)
from app.attachments.storage import LocalStorage
from app.auth.service import Principal
from app.bundles import service
from app.cases.service import created_case, replay_created_case
from app.config import Settings, get_settings
from app.db import create_db_engine, transaction
from app.errors import AppError
from app.idempotency.service import IdempotencyKey, create_once
from app.observability.logs import configure_logging

log = logging.getLogger(__name__)

IMPORTS_PER_CHILD = 8

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload([__name__])


class _Child:
    """What a child process holds between imports."""

    engine: Engine
    storage: LocalStorage


def _start_child(environ: dict[str, str], settings: Settings) -> None:
    # The fork server started with the environment of its day; the services
    # read theirs (get_settings) as the worker does.
    os.environ.clear()
    os.environ.update(environ)
    get_settings.cache_clear()
    # Ctrl-C on `caseapi serve` reaches the whole process group: the worker's
    # shutdown ends this process, after the import it is running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Batch work: when the cores are short, the worker's requests go first.
    os.nice(10)
    # An import makes hundreds of thousands of objects that reference counting
    # frees, and each collection would walk them all (a 10 000-item import took
    # a tenth longer). Nothing else runs here, and what cycles an import leaves
    # are collected after it.
    gc.disable()
    configure_logging(settings.log_format, settings.log_level, access_log=False)
    _Child.engine = create_db_engine(
        settings.database_url, pool_size=1, pool_timeout=settings.pool_timeout_seconds
    )
    _Child.storage = LocalStorage(settings.storage_dir)


def _import(p: Principal, raw: bytes, idem: IdempotencyKey | None) -> Response:
    try:
        return _import_whole(p, raw, idem)
    finally:
        gc.collect()


def _import_whole(p: Principal, raw: bytes, idem: IdempotencyKey | None) -> Response:
    body = service.parse_bundle(raw)
    # The storage lock an import with attachments takes (`hold`) is held
    # through the commit: the transaction ends first.
    with ExitStack() as hold, transaction(_Child.engine, write=True) as session:
        return create_once(
            session,
            p,
            idem,
            lambda: created_case(
                service.import_bundle(
                    session, p, body, digest=service.digest(raw), storage=_Child.storage, hold=hold
                )
            ),
            lambda case_id: replay_created_case(session, p, case_id),
        )


class BundleImports:
    """A worker's pool of import processes, started at its first import."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        # Imports this worker has taken and not answered, counted on its event loop.
        self._taken = 0

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.settings.import_processes,
                    mp_context=_context,
                    initializer=_start_child,
                    initargs=(dict(os.environ), self.settings),
                    max_tasks_per_child=IMPORTS_PER_CHILD,
                )
            return self._pool

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    async def run(self, p: Principal, raw: bytes, idem: IdempotencyKey | None) -> Response:
        """The import's answer, as the route would have given it; 503 at once
        when every process is busy and `import_queue` imports already wait.

        A waiting import holds one of the worker's admitted requests
        (app.admission): without this bound, one client sending import after
        import could take them all, and every other agency would wait."""
        if self._taken >= self.settings.import_processes + self.settings.import_queue:
            raise AppError(
                503,
                "Every import process of this worker is busy and imports already wait; try again shortly.",
                slug="busy",
                headers={"Retry-After": "5"},
            )
        self._taken += 1
        try:
            return await self._run(p, raw, idem)
        finally:
            self._taken -= 1

    async def _run(self, p: Principal, raw: bytes, idem: IdempotencyKey | None) -> Response:
        pool = self._current()
        try:
            # Submitting may start a process, and the first one waits for the
            # fork server to load the code (a second or two): not on the event loop.
            future = await asyncio.to_thread(pool.submit, _import, p, raw, idem)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._replace(pool)
            log.error("a bundle import's process ended before it answered")
            raise AppError(
                503,
                "The import stopped before it answered; retry it with the same Idempotency-Key.",
                slug="import-interrupted",
                headers={"Retry-After": "1"},
            ) from None

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
