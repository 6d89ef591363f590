"""Load generators: wrk (Debian's package) when present, a bounded Python client otherwise.

Both return the same figures: requests, seconds, req/s, p50/p99/max latency in ms,
timeouts, errors (anything but 2xx, plus socket errors) and a count per status code.
Everything is bounded: a run stops after its duration or its request budget, whichever
comes first, and every connection has a timeout. Only 127.0.0.1 is ever a target.
"""

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HOST = "127.0.0.1"


@dataclass
class Load:
    """What to send: a list of paths taken round-robin, one method, one body."""

    paths: list[str]
    method: str = "GET"
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _lua_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid Lua string literal for our ASCII paths and bodies


_WRK_SCRIPT = """
local paths = {{{paths}}}
wrk.method = {method}
{body}
{headers}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) counter = 0; codes = {{}} end
function request()
  counter = counter + 1
  return wrk.format(nil, paths[(counter % #paths) + 1])
end
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
function done(summary, latency, requests)
  local merged = {{}}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    for k, v in pairs(c) do merged[k] = (merged[k] or 0) + v end
  end
  local parts = {{}}
  for k, v in pairs(merged) do table.insert(parts, string.format('"%d":%d', k, v)) end
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d,"codes":{{%s}}}}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99),
    latency.max, table.concat(parts, ",")))
end
"""


def _summary(
    requests: int,
    seconds: float,
    codes: dict[int, int],
    timeouts: int,
    socket_errors: int,
    p50_ms: float | None,
    p99_ms: float | None,
    max_ms: float | None,
    tool: str,
) -> dict[str, Any]:
    ok = sum(n for c, n in codes.items() if 200 <= c < 300)
    if requests == 0:
        # Nothing completed within the run: no latency to speak of, and the run is a stall.
        p50_ms = p99_ms = max_ms = None
    return {
        "tool": tool,
        "requests": requests,
        "seconds": round(seconds, 3),
        "rps": round(requests / seconds, 1) if seconds > 0 else 0.0,
        "ok": ok,
        "p50_ms": None if p50_ms is None else round(p50_ms, 2),
        "p99_ms": None if p99_ms is None else round(p99_ms, 2),
        "max_ms": None if max_ms is None else round(max_ms, 2),
        "timeouts": timeouts,
        "errors": socket_errors + sum(n for c, n in codes.items() if not 200 <= c < 300),
        "codes": {str(k): v for k, v in sorted(codes.items())},
        "stalled": requests == 0,
    }


def run_wrk(
    base_url: str, load: Load, *, connections: int, seconds: float, timeout: float = 10.0
) -> dict[str, Any]:
    assert urlsplit(base_url).hostname == HOST, "load goes to 127.0.0.1 only"
    headers = "\n".join(f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}" for k, v in load.headers.items())
    body = f"wrk.body = {_lua_str(load.body.decode())}" if load.body is not None else ""
    script = _WRK_SCRIPT.format(
        paths=", ".join(_lua_str(p) for p in load.paths),
        method=_lua_str(load.method),
        body=body,
        headers=headers,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        threads = 1 if connections <= 64 else 2
        proc = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                f"--timeout={timeout:g}s",
                "-s",
                path,
                base_url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + timeout + 30,
        )
    finally:
        Path(path).unlink(missing_ok=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    r = json.loads(line.removeprefix("BENCHJSON "))
    codes = {int(k): v for k, v in r["codes"].items()}
    return _summary(
        r["requests"],
        r["duration_us"] / 1e6,
        codes,
        r["timeout"],
        r["connect"] + r["read"] + r["write"],
        r["p50_us"] / 1000,
        r["p99_us"] / 1000,
        r["max_us"] / 1000,
        "wrk",
    )


# ---- the Python fallback: raw HTTP/1.1 keep-alive over asyncio -----------------------------------------


class _Conn:
    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.port), self.timeout
            )
        assert self.reader is not None
        self.writer.write(raw)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), self.timeout)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        for h in lines[1:]:
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            body = b""
            while True:
                size = int((await asyncio.wait_for(self.reader.readuntil(b"\r\n"), self.timeout)).strip(), 16)
                chunk = await asyncio.wait_for(self.reader.readexactly(size + 2), self.timeout)
                body += chunk[:-2]
                if size == 0:
                    break
        else:
            body = await asyncio.wait_for(self.reader.readexactly(length), self.timeout)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _raw(load: Load, path: str, port: int) -> bytes:
    lines = [f"{load.method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{k}: {v}" for k, v in load.headers.items()]
    body = load.body or b""
    if load.body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _drive(
    port: int, load: Load, connections: int, seconds: float, max_requests: int, timeout: float
) -> tuple[list[float], dict[int, int], int, int, float]:
    raws = [_raw(load, p, port) for p in load.paths]
    latencies: list[float] = []
    codes: dict[int, int] = {}
    counters = {"sent": 0, "timeouts": 0, "socket": 0}
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        conn = _Conn(port, timeout)
        try:
            while time.monotonic() < deadline and counters["sent"] < max_requests:
                raw = raws[counters["sent"] % len(raws)]
                counters["sent"] += 1
                t0 = time.perf_counter()
                try:
                    status, _ = await conn.request(raw)
                except TimeoutError:
                    counters["timeouts"] += 1
                    conn.close()
                    continue
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    counters["socket"] += 1
                    conn.close()
                    await asyncio.sleep(0.01)
                    continue
                latencies.append(time.perf_counter() - t0)
                codes[status] = codes.get(status, 0) + 1
        finally:
            conn.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies, codes, counters["timeouts"], counters["socket"], time.monotonic() - started


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q / 100 * len(sorted_values)))] * 1000


def run_python(
    base_url: str,
    load: Load,
    *,
    connections: int,
    seconds: float,
    max_requests: int = 10**7,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Bounded in time (seconds) and count (max_requests)."""
    u = urlsplit(base_url)
    assert u.hostname == HOST, "load goes to 127.0.0.1 only"
    assert u.port is not None
    lat, codes, timeouts, socket_errors, elapsed = asyncio.run(
        _drive(u.port, load, connections, seconds, max_requests, timeout)
    )
    lat.sort()
    return _summary(
        len(lat) + timeouts + socket_errors,
        elapsed,
        codes,
        timeouts,
        socket_errors,
        _pct(lat, 50),
        _pct(lat, 99),
        lat[-1] * 1000 if lat else None,
        "python",
    )


def run(
    base_url: str, load: Load, *, connections: int, seconds: float, use_wrk: bool, timeout: float = 10.0
) -> dict[str, Any]:
    if use_wrk:
        return run_wrk(base_url, load, connections=connections, seconds=seconds, timeout=timeout)
    return run_python(base_url, load, connections=connections, seconds=seconds, timeout=timeout)
