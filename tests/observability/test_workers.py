"""`caseapi serve --workers 2`: whichever worker answers a scrape reports every worker's requests."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(database_url: str, engine: sa.Engine, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "CASEAPI_DATABASE_URL": database_url,
        "PYTHONPATH": str(ROOT),
        # An operator's own directory is used as it is; here it lets the test look inside.
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    argv = ["-c", "import sys; from app.cli import main; main(sys.argv[1:])"]
    process = subprocess.Popen(
        [sys.executable, *argv, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield url, metrics_dir
    finally:
        process.terminate()
        process.wait(30)
    # A worker that ends takes its live gauges out of the sum; its counts stay.
    assert not list(metrics_dir.glob("gauge_livesum_*.db"))
    assert list(metrics_dir.glob("histogram_*.db"))


def _count(text: str, route: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "caseapi_http_requests_total" and sample.labels.get("route") == route
    )


def test_every_scrape_sums_all_workers(served: tuple[str, Path]) -> None:
    url, metrics_dir = served
    for _ in range(40):
        # A new connection each: the kernel hands them to either worker.
        assert httpx.get(f"{url}/api/v1/health", timeout=10).status_code == 200
    for _ in range(6):
        response = httpx.get(f"{url}/metrics", timeout=10)
        assert response.status_code == 200
        assert _count(response.text, "/api/v1/health") == 40
        assert "caseapi_audit_entries" in response.text and "caseapi_db_pool_size" in response.text
    workers = {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("*.db")}
    assert len(workers) == 2, sorted(metrics_dir.iterdir())
