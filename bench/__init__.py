"""The caseapi benchmark: a synthetic dataset, a hand-written reference server and a load driver.

Never part of the test suite. See bench/README.md.
"""

import hashlib
import os

# 32 bytes, hex, as the service requires of an audit key; fixed, so that a dataset
# generated once verifies in every later run.
BENCH_AUDIT_KEY = hashlib.sha256(b"caseapi bench audit key").hexdigest()


def use_bench_audit_key() -> None:
    """Key the audit chain with the operator's CASEAPI_AUDIT_KEY, else a bench one: the
    servers, the generator and the reference must all key it alike (and `caseapi serve` on
    PostgreSQL refuses to start without one)."""
    os.environ.setdefault("CASEAPI_AUDIT_KEY", BENCH_AUDIT_KEY)
