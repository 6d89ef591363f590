"""The caseapi benchmark: a synthetic dataset, a hand-written reference server and a load driver.

Never part of the test suite. See bench/README.md.
"""

import os

BENCH_AUDIT_KEY = "bench-audit-key-" + "0" * 32


def use_bench_audit_key() -> None:
    """Key the audit chain with the operator's CASEAPI_AUDIT_KEY, else a bench one: the
    servers, the generator and the reference must all key it alike (and `caseapi serve` on
    PostgreSQL refuses to start without one)."""
    os.environ.setdefault("CASEAPI_AUDIT_KEY", BENCH_AUDIT_KEY)
