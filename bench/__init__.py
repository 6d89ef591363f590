"""The caseapi benchmark: a synthetic dataset, a hand-written reference server and a load driver.

Never part of the test suite. See bench/README.md.
"""

import hashlib
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from app.auth.models import Scope
    from app.core.uow import Tx

T = TypeVar("T")

# 32 bytes, hex, as the service requires of an audit key; fixed, so that a dataset
# generated once verifies in every later run.
BENCH_AUDIT_KEY = hashlib.sha256(b"caseapi bench audit key").hexdigest()


def use_bench_audit_key() -> None:
    """Key the audit chain with the operator's CASEAPI_AUDIT_KEY, else a bench one: the
    servers, the generator and the reference must all key it alike (and `caseapi serve` on
    PostgreSQL refuses to start without one)."""
    os.environ.setdefault("CASEAPI_AUDIT_KEY", BENCH_AUDIT_KEY)


def run_unit(url: str, work: "Callable[[Tx], Awaitable[T]]") -> "T":
    """`await work(tx)` in one unit of work on the database at `url`, as a command runs
    one, journalled under the audit key of this environment's settings."""
    from app.core.config import Settings
    from app.core.secrets import audit_key
    from app.core.uow import run_with_database

    return run_with_database(url, lambda db: db.run(work), audit_key=audit_key(Settings()), timeout=10)


def agency_with_key(url: str, code: str, name: str, scopes: "list[Scope]") -> tuple[str, str]:
    """A police agency `code` and an API key of it, made as `caseapi agency create` and
    `caseapi client create` make them: (the agency's id, the key)."""
    from app.agencies.models import AgencyCreate, AgencyKind
    from app.agencies.service import create_agency
    from app.auth.service import create_client

    async def work(tx: "Tx") -> tuple[str, str]:
        data = AgencyCreate(code=code, name=name, country="UA", kind=AgencyKind.police)
        agency = await create_agency(tx, None, data)
        _, key = await create_client(tx, agency_code=code, name="bench", scopes=scopes)
        return str(agency.id), key

    return run_unit(url, work)
