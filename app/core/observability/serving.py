"""What `caseapi serve` gives uvicorn: the logging, the proxy settings, and
a shared directory for the metrics of several worker processes."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.core.config import Settings
from app.core.observability.logs import logging_config

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    trusted = settings.forwarded_allow_ips.strip()
    return {
        "log_config": logging_config(settings.log_format, settings.log_level, settings.access_log),
        "log_level": None,  # the level is in log_config
        # X-Forwarded-For and -Proto only from the peers named: from anyone
        # else they would let a client choose the address it is logged with.
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or None,
    }


@contextmanager
def metrics_directory(workers: int) -> Iterator[None]:
    """For several workers, a fresh directory their metrics files share
    (prometheus-client's multiprocess mode), removed when serving ends.

    An operator's own PROMETHEUS_MULTIPROC_DIR is used as it is.
    """
    if workers <= 1 or os.environ.get(MULTIPROC_ENV):
        yield
        return
    directory = tempfile.mkdtemp(prefix="caseapi-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(directory, ignore_errors=True)
