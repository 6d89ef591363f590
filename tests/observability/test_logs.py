"""Log lines (contract §6): ts, level, logger, event, request_id, fields as fields;
uvicorn's loggers in the same format; what `caseapi serve` hands uvicorn."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from app import cli
from app.core import migrate
from app.core.config import Settings
from app.core.db import create_db_engine
from app.core.observability.serving import MULTIPROC_ENV

ROOT = Path(__file__).resolve().parents[2]

# Logs as a served worker does, in a process of its own (pytest has its own logging setup).
PROGRAM = textwrap.dedent(
    """
    import logging, sys
    from app.core.observability.logs import configure_logging, request_id_var
    configure_logging(sys.argv[1], sys.argv[2], False)
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("caseapi").debug("below the level")
    token = request_id_var.set("req-42")
    logging.getLogger("caseapi.security").warning(
        "access_denied", extra={"status": 403, "path": "/api/v1/cases", "client_id": None}
    )
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("caseapi").exception("unhandled error")
    request_id_var.reset(token)
    logging.getLogger("caseapi").info("after the request")
    logging.getLogger("httpx").info("HTTP Request: POST http://peer/api/v1/federation/deliveries")
    logging.getLogger("httpx").warning("client trouble")
    """
)


def _log(log_format: str, level: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, log_format, level],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=True,
    )
    return result.stderr.splitlines()


def test_json_lines_carry_the_contract_fields() -> None:
    lines = [json.loads(line) for line in _log("json", "INFO") if line.startswith("{")]
    by_event = {line["event"]: line for line in lines}
    assert set(by_event) == {
        "Started server process",
        "access_denied",
        "unhandled error",
        "after the request",
        # The HTTP client's line per request is left out; its warnings are not.
        "client trouble",
    }
    for line in lines:
        assert {"ts", "level", "logger", "event"} <= set(line)
        stamp = datetime.fromisoformat(line["ts"])
        assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    started = by_event["Started server process"]
    assert (started["logger"], started["level"]) == ("uvicorn.error", "info")
    assert "color_message" not in started
    denied = by_event["access_denied"]
    # Fields as fields, not a JSON string inside the message.
    assert denied["logger"] == "caseapi.security" and denied["level"] == "warning"
    assert (denied["status"], denied["path"], denied["client_id"]) == (403, "/api/v1/cases", None)
    assert denied["request_id"] == "req-42"
    error = by_event["unhandled error"]
    assert error["request_id"] == "req-42" and "ValueError: boom" in error["exception"]
    assert "request_id" not in by_event["after the request"]


def test_the_level_filters_and_text_is_one_readable_line_per_event() -> None:
    lines = _log("text", "WARNING")
    assert not any("Started server process" in line or "after the request" in line for line in lines)
    [denied] = [line for line in lines if "access_denied" in line]
    assert denied.split(" ", 1)[0].endswith("Z")  # the ts first
    assert "[warning" in denied and "[caseapi.security]" in denied
    assert "status=403" in denied and "request_id=req-42" in denied
    assert any("ValueError: boom" in line for line in lines)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CASEAPI_LOG_FORMAT", "xml"),
        ("CASEAPI_LOG_LEVEL", "loud"),
        ("CASEAPI_RATE_LIMIT", "20/fortnight"),
        ("CASEAPI_REDIS_URL", "127.0.0.1:6379"),
        ("CASEAPI_REDIS_URL", "redis://127.0.0.1:port/0"),
    ],
)
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("CASEAPI_").lower()):
        Settings()


def test_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEAPI_LOG_LEVEL", "debug")
    monkeypatch.setenv("CASEAPI_LOG_FORMAT", "json")
    monkeypatch.setenv("CASEAPI_RATE_LIMIT", "")
    monkeypatch.setenv("CASEAPI_REDIS_URL", "rediss://:secret@redis.internal:6380/2")
    settings = Settings()
    assert (settings.log_level, settings.log_format, settings.rate_limit) == ("DEBUG", "json", None)
    assert settings.redis_url == "rediss://:secret@redis.internal:6380/2"


def _served(monkeypatch: pytest.MonkeyPatch, workers: int, **env: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def run(app: str, **options: Any) -> None:
        seen.update(options, multiproc_dir=os.environ.get(MULTIPROC_ENV))
        if seen["multiproc_dir"]:
            assert Path(seen["multiproc_dir"]).is_dir()

    monkeypatch.setattr(uvicorn, "run", run)
    # What serve hands uvicorn is the point here, not the database (tests/test_cli covers that check).
    monkeypatch.setattr(cli.migrate, "require_head", lambda _conn: None)
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cli.main(["serve", "--workers", str(workers)])
    return seen


def test_serve_trusts_forwarded_headers_only_from_the_local_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    options = _served(monkeypatch, 1, CASEAPI_LOG_FORMAT="json")
    assert options["proxy_headers"] is True
    assert options["forwarded_allow_ips"] == "127.0.0.1,::1"
    formatter = options["log_config"]["formatters"]["caseapi"]
    assert formatter["log_format"] == "json"
    assert options["multiproc_dir"] is None  # one worker: its own registry
    assert _served(monkeypatch, 1, CASEAPI_FORWARDED_ALLOW_IPS="")["proxy_headers"] is False
    trusted = _served(monkeypatch, 1, CASEAPI_FORWARDED_ALLOW_IPS="10.0.0.0/8")
    assert (trusted["proxy_headers"], trusted["forwarded_allow_ips"]) == (True, "10.0.0.0/8")


def test_serve_gives_several_workers_a_shared_metrics_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    options = _served(monkeypatch, 3)
    directory = options["multiproc_dir"]
    assert directory is not None
    assert not Path(directory).exists() and MULTIPROC_ENV not in os.environ  # cleaned up


def _serve_and_search(tmp_path: Path, **env: str) -> str:
    """What a served worker writes to its log for one request with a search term in it."""
    tmp_path.mkdir()
    database = f"sqlite:///{tmp_path / 'log.sqlite'}"
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CASEAPI_DATABASE_URL": database,
        "CASEAPI_KEY_FILE": str(tmp_path / "keys"),
        **env,
    }
    engine = create_db_engine(database)  # migrated here: the served worker's log is what is read
    with engine.begin() as conn:
        migrate.upgrade(conn)
    engine.dispose()
    run = [sys.executable, "-c", "import sys; from app.cli import main; main(sys.argv[1:])"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [*run, "serve", "--port", str(port)],
        env=full_env,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/v1/cases?q=secret-search-term", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.1)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    return stderr


def test_the_access_log_is_off_unless_asked_for(tmp_path: Path) -> None:
    """Search terms must not reach plain-text logs (CASEAPI_ACCESS_LOG defaults to false)."""
    quiet = _serve_and_search(tmp_path / "quiet")
    assert "access_denied" in quiet  # the request was served and logged as a refusal
    assert "secret-search-term" not in quiet and "uvicorn.access" not in quiet
    # The service's own short line instead, without the query string.
    [line] = [line for line in quiet.splitlines() if "[caseapi.request]" in line]
    assert "path=/api/v1/cases " in line and "status=401" in line
    assert "secret-search-term" in _serve_and_search(tmp_path / "loud", CASEAPI_ACCESS_LOG="true")


def test_a_served_worker_writes_one_json_request_line_without_the_query(tmp_path: Path) -> None:
    stderr = _serve_and_search(tmp_path / "json", CASEAPI_LOG_FORMAT="json")
    assert "secret-search-term" not in stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    [request] = [line for line in lines if line["event"] == "request"]
    assert request["logger"] == "caseapi.request"
    assert (request["method"], request["path"], request["route"]) == ("GET", "/api/v1/cases", "/api/v1/cases")
    assert (request["status"], request["client_id"]) == (401, None)
    assert isinstance(request["duration_ms"], float) and len(request["request_id"]) == 32


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize(
    "value",
    [None, "plain", 'quote"d and spaced', "a=b", "tab\there", "new\nline", "é", "", 3, 2.5, True, [1]],
)
def test_the_short_way_of_a_record_writes_what_structlog_writes(log_format: str, value: Any) -> None:
    """The formatter's short way for plain records (one per request) writes the
    line the processor chain and renderer write, whatever a field holds."""
    import logging
    import re

    import structlog

    from app.core.observability.logs import formatter, request_id_var

    lines = []
    shape = formatter(log_format)  # type: ignore[arg-type]
    token = request_id_var.set("req-7")
    try:
        for fast in (True, False):
            record = logging.LogRecord("caseapi.request", logging.INFO, __file__, 1, "request", None, None)
            record.__dict__.update(
                method="GET", path="/api/v1/cases", status=200, duration_ms=1.5, field=value
            )
            write = shape.format if fast else lambda r: structlog.stdlib.ProcessorFormatter.format(shape, r)
            lines.append(re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<ts>", write(record)))
    finally:
        request_id_var.reset(token)
    assert lines[0] == lines[1]
    assert "req-7" in lines[0]
