import gc
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.bundles import service
from app.bundles.models import Bundle
from app.cases.models import CasePublic
from app.cases.service import created_case, replay_created_case
from app.db import SessionDep
from app.http import Purpose, StrictJSONRoute
from app.idempotency.service import IdempotencyDep, create_once

router = APIRouter(tags=["case bundles"], route_class=StrictJSONRoute)


@router.get(
    "/cases/{case_id}/bundle",
    response_model=Bundle,
    summary="Export a case as one document",
    operation_id="cases.bundle",
)
def export_bundle(session: SessionDep, p: Reader, case_id: uuid.UUID, purpose: Purpose) -> Bundle:
    """Scope `read`; full access to the case. The case and everything under it, with `bundle_version: 1`.
    `full_name`, `date_of_birth` and `id_document` are returned only to a key with `personal_data` that
    sends `X-Purpose` (the disclosure is audited); otherwise they are null and `personal_data_redacted` is
    true. Attachments are listed by their metadata, without their bytes. A case the caller may not see
    answers 404, exactly as one that does not exist.
    """
    case = access.readable_case(session, p, case_id)
    return service.export_case(session, p, case, purpose=purpose)


class _CollectorPause:
    """The garbage collector off while validated bundles are written.

    An import makes hundreds of thousands of objects that reference counting
    frees; each full collection meanwhile walks them all, and stops every
    thread of the worker, the event loop serving other agencies' reads
    included (bench/import_stall.py: their p99 during imports fell from 16 ms
    to 9). Counted, so that one of several imports at once does not turn it
    back on under the others. Validation (parse_bundle), where hostile input
    makes its garbage, runs with the collector on; and imports kept going back
    to back cannot keep it off for good: while it stays off, a full collection
    still runs every MAX_OFF_SECONDS.
    """

    MAX_OFF_SECONDS = 30.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._writing = 0
        self._was_enabled = True
        self._off_since = 0.0

    def _collect_if_off_too_long(self) -> None:
        if self._writing and self.clock() - self._off_since >= self.MAX_OFF_SECONDS:
            gc.collect()
            self._off_since = self.clock()

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            self._writing += 1
            if self._writing == 1:
                self._was_enabled = gc.isenabled()
                self._off_since = self.clock()
                gc.disable()
            self._collect_if_off_too_long()
        try:
            yield
        finally:
            with self._lock:
                self._collect_if_off_too_long()
                self._writing -= 1
                if self._writing == 0 and self._was_enabled:
                    gc.enable()


_collector_paused = _CollectorPause()


async def _raw_body(request: Request) -> bytes:
    return await request.body()


@router.post(
    "/bundles",
    status_code=201,
    response_model=CasePublic,
    summary="Import a case bundle",
    operation_id="bundles.import",
    # The body is read raw and validated by service.parse_bundle, a bounded
    # amount of work whatever it holds; documented as the Bundle it must be.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Bundle"}}},
        }
    },
)
def import_bundle(
    request: Request,
    session: SessionDep,
    p: Writer,
    raw: Annotated[bytes, Depends(_raw_body)],
    idem: IdempotencyDep,
) -> Response:
    """Scope `write` (and `personal_data` to import personal data). A new case led by the caller's agency
    with new ids for every row: all of it, or on any error 422 and nothing. Participants are not carried
    over; the case keeps the bundle's handling code or a stricter one, and its `origin`. An attachment is
    attached only when this instance stores its file and the caller can already download it; the audit
    entry counts the others as `attachments_missing`. Honours `Idempotency-Key`.
    """
    body = service.parse_bundle(raw)
    # The storage lock an import with attachments takes is held through the
    # commit, so the commit happens here rather than after the route returns.
    with _collector_paused(), ExitStack() as hold:
        response = create_once(
            session,
            p,
            idem,
            lambda: created_case(
                service.import_bundle(
                    session, p, body, digest=service.digest(raw), storage=request.app.state.storage, hold=hold
                )
            ),
            lambda case_id: replay_created_case(session, p, case_id),
        )
        session.commit()
    return response
