"""Bundle imports, each in a process of its own.

A 10 000-item import is seconds of Python: parsing, validating, making rows.
In the worker that serves everyone else it would share one GIL with the event
loop, and other agencies' reads would wait for it (bench/import_stall.py: in
a worker thread, their p99 was 3.5 times the idle one). So a worker hands its
imports to a few processes of its own (`CASEAPI_IMPORT_PROCESSES`) and awaits
the answer on the event loop. The worker does no work on the document at all:
it reads the body, and the child parses it and computes the digest and the
Idempotency-Key fingerprint.

The child runs what the route ran before, in one transaction on a
connection of its own: validation, the rows, the journal, the Idempotency-Key
record and the commit. Errors come back as the exceptions they are (AppError
and SQLAlchemy's pickle), so app.core.errors answers them as for any route. A child
that dies takes its transaction with it (its connection closes, nothing is
committed, unless it died between its commit and its answer); the import
answers 503, and a retry with the same Idempotency-Key learns which it was.

Children are forked from multiprocessing's fork server, a clean process with
these modules loaded, so a new child starts in milliseconds and never
inherits the worker's threads, sockets or pooled connections. The worker
talks to each child over a pipe of its own, one import at a time, from a
thread of its own per child: an import is only ever handed to a child that
is there and idle, so none can wait for a child that is gone (as with
concurrent.futures' max_tasks_per_child before Python 3.13, where a submitted
import could wait until the next one arrived). A child serves at most
IMPORTS_PER_CHILD imports and is then replaced: the memory a large bundle
took goes back to the system instead of staying with an idle process.

A child lives no longer than its worker. It watches a second pipe whose
other end only the worker holds, and ends when that closes: when the worker
retires it, and when the worker is killed, mid-import or idle. The fork
server, which multiprocessing ends once neither the worker nor any child
holds it, goes with them.
"""

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import threading
import traceback
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection

from starlette.responses import Response

import app.models  # noqa: F401  (every table, for a child's statements)
from app.attachments.storage import LocalStorage
from app.auth.service import Principal
from app.bundles import service
from app.cases.router import created_case, replay_created_case
from app.core.config import Settings
from app.core.errors import AppError
from app.core.observability.logs import configure_logging
from app.core.secrets import audit_key
from app.core.types import clock_skew
from app.core.uow import Database, create_database
from app.idempotency.http import create_once
from app.idempotency.service import Idempotency, IdempotencyKey, fingerprint, ttl

log = logging.getLogger(__name__)

IMPORTS_PER_CHILD = 8

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload([__name__])


@dataclass(frozen=True)
class Idempotent:
    """An Idempotency-Key and what its fingerprint binds, but the body: the child has that."""

    key: str
    path: str
    purpose: str


@dataclass(frozen=True)
class _Task:
    principal: Principal
    idempotent: Idempotent | None


@dataclass(frozen=True)
class _Failed:
    """An import's error, with the child's traceback of it for the worker's log."""

    error: Exception
    traceback: str


class _InChild(Exception):
    """Where in the child an import's error was raised."""


# --- the child ------------------------------------------------------------------------------------------


class _Child:
    """What a child process holds between imports: one event loop for its
    life (its database connection belongs to it), the database and storage,
    and the worker's settings."""

    loop: asyncio.AbstractEventLoop
    database: Database
    storage: LocalStorage
    settings: Settings


def _end_with_worker(lifeline: Connection) -> None:
    # The worker never writes here: the read returns when its end closes,
    # by a retirement or by the worker's death.
    with suppress(EOFError, OSError):
        lifeline.recv_bytes()
    os._exit(0)


def _start_child(environ: dict[str, str], settings: Settings) -> None:
    # The fork server started with the environment of its day; a child runs in
    # the worker's (its database driver reads PG* variables, for one). Its
    # settings are the worker's own, passed in.
    os.environ.clear()
    os.environ.update(environ)
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
    _Child.settings = settings
    _Child.loop = asyncio.new_event_loop()
    _Child.database = create_database(
        settings.database_url, size=1, timeout=settings.pool_timeout_seconds, audit_key=audit_key(settings)
    )
    _Child.storage = LocalStorage(settings.storage_dir)


def _serve(tasks: Connection, lifeline: Connection, environ: dict[str, str], settings: Settings) -> None:
    """A child's life: imports one after the other until the worker closes the pipe."""
    threading.Thread(target=_end_with_worker, args=(lifeline,), daemon=True).start()
    _start_child(environ, settings)
    while True:
        try:
            task: _Task = tasks.recv()
            raw = tasks.recv_bytes()
        except EOFError:
            return
        answer: Response | _Failed
        try:
            answer = _import(task, raw)
        except Exception as exc:  # the worker raises it, as the route would have
            answer = _Failed(exc, "".join(traceback.format_exception(exc)))
        try:
            tasks.send(answer)
        except Exception as exc:  # an error that does not pickle (send pickles before it writes)
            tasks.send(_Failed(RuntimeError(f"a bundle import's answer: {exc!r}"), traceback.format_exc()))


def _import(task: _Task, raw: bytes) -> Response:
    try:
        # Set before the task is made: the task runs in a copy of this context.
        with clock_skew(_Child.settings.clock_skew_seconds):
            return _Child.loop.run_until_complete(_import_whole(task, raw))
    finally:
        gc.collect()


async def _import_whole(task: _Task, raw: bytes) -> Response:
    p, same = task.principal, task.idempotent
    # Raw bytes, hashed here rather than on the worker's event loop: the same
    # document re-serialised (other spacing or key order) is another body.
    key = None if same is None else IdempotencyKey(same.key, fingerprint(same.path, same.purpose, raw))
    idem = Idempotency(key, ttl(_Child.settings))
    body = service.parse_bundle(raw)
    # The storage lock an import with attachments takes (`hold`) is held
    # through the commit: the transaction ends first.
    with ExitStack() as hold:
        async with _Child.database.transaction() as tx:

            async def create() -> Response:
                case = await service.import_bundle(
                    tx, p, body, digest=service.digest(raw), storage=_Child.storage, hold=hold
                )
                return created_case(case)

            async def replay(case_id: uuid.UUID) -> Response:
                return await replay_created_case(tx, p, case_id)

            return await create_once(tx, p, idem, create, replay)


# --- the worker's side ----------------------------------------------------------------------------------


class _Interrupted(Exception):
    """The child ended before it answered."""


class _ImportProcess:
    """A child and the worker's ends of its two pipes; used by one thread at a time."""

    def __init__(self, settings: Settings) -> None:
        self.tasks, child_tasks = _context.Pipe()
        child_lifeline, self.lifeline = _context.Pipe(duplex=False)
        self.process = _context.Process(
            target=_serve,
            args=(child_tasks, child_lifeline, dict(os.environ), settings),
            name="caseapi-import",
            daemon=True,
        )
        self.process.start()
        # The child's ends stay with the child alone, so that it sees the worker's close.
        child_tasks.close()
        child_lifeline.close()
        self.served = 0

    def call(self, task: _Task, raw: bytes) -> Response | _Failed:
        try:
            self.tasks.send(task)
            self.tasks.send_bytes(raw)
            answer: Response | _Failed = self.tasks.recv()
        except (EOFError, OSError) as exc:
            raise _Interrupted from exc
        self.served += 1
        return answer

    def end(self) -> None:
        """Close the pipes: the child ends (at once if it is between imports)."""
        self.tasks.close()
        self.lifeline.close()
        self.process.join(timeout=10)


class BundleImports:
    """A worker's import processes, started as imports need them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        # One thread per child: at most `import_processes` imports run, the
        # others wait in the executor's queue, first come first served.
        self._threads: ThreadPoolExecutor | None = None
        self._idle: list[_ImportProcess] = []
        # Imports this worker has taken and not answered.
        self._taken = 0

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(
                    max_workers=self.settings.import_processes, thread_name_prefix="bundle-import"
                )
            return self._threads

    def _admit(self) -> None:
        with self._lock:
            if self._taken >= self.settings.import_processes + self.settings.import_queue:
                raise AppError(
                    503,
                    "Every import process of this worker is busy and imports already wait; "
                    "try again shortly.",
                    slug="busy",
                    headers={"Retry-After": "5"},
                )
            self._taken += 1

    def _release(self, _: object = None) -> None:
        with self._lock:
            self._taken -= 1

    async def run(
        self, p: Principal, body: Callable[[], Awaitable[bytes]], idempotent: Idempotent | None
    ) -> Response:
        """The import's answer, as the route would have given it; 503 at once
        when every process is busy and `import_queue` imports already wait.

        The body is read only once the import is admitted: a refused one costs
        no memory. A waiting import holds one of the worker's admitted requests
        (app.core.admission): without this bound, one client sending import after
        import could take them all, and every other agency would wait."""
        self._admit()
        try:
            raw = await body()
            future: Future[Response] = self._executor().submit(self._call, _Task(p, idempotent), raw)
        except BaseException:
            self._release()
            raise
        # Released when the child has answered, even if the client went away first.
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _call(self, task: _Task, raw: bytes) -> Response:
        with self._lock:
            idle = self._idle.pop() if self._idle else None
        # Starting a child waits for the fork server, and the first start
        # for the fork server to load the code: in this thread, never on the loop.
        process = idle or _ImportProcess(self.settings)
        try:
            answer = process.call(task, raw)
        except _Interrupted:
            process.end()
            log.error("a bundle import's process ended before it answered")
            raise AppError(
                503,
                "The import stopped before it answered; retry it with the same Idempotency-Key.",
                slug="import-interrupted",
                headers={"Retry-After": "1"},
            ) from None
        if process.served >= IMPORTS_PER_CHILD:
            process.end()
        else:
            with self._lock:
                self._idle.append(process)
        if isinstance(answer, _Failed):
            raise answer.error from _InChild(answer.traceback)
        return answer

    def close(self) -> None:
        """Wait for the imports running, drop those waiting, end every child."""
        with self._lock:
            threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            idle, self._idle = self._idle, []
        for process in idle:
            process.end()
