"""A large attachment through a running `caseapi serve`: throughput, and how far
the worker's resident set grows while the file goes up and comes back down.

    python -m bench.attachments --url http://127.0.0.1:8000 --key KEY --pid PID [--mb 100]

KEY: a key with `read` and `write` (the script opens a case of its own to attach to).
PID: the serving process (`caseapi serve --workers 1` is one process). The file is
generated and hashed chunk by chunk on both ends, so the client holds none of it either.
"""

import argparse
import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

CHUNK = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class PeakRss:
    """Samples the process's RSS every few milliseconds while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.005)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def file_chunks(size: int, digest: "hashlib._Hash") -> Iterator[bytes]:
    """Deterministic, incompressible-looking bytes, hashed as they are sent."""
    block = hashlib.sha256(b"caseapi").digest() * (CHUNK // 32)
    sent = 0
    counter = 0
    while sent < size:
        chunk = (counter.to_bytes(8, "big") + block)[: min(CHUNK, size - sent)]
        digest.update(chunk)
        sent += len(chunk)
        counter += 1
        yield chunk


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--pid", type=int, required=True, help="the serving process")
    parser.add_argument("--mb", type=int, default=100, help="file size in MB (10^6 bytes)")
    args = parser.parse_args()
    size = args.mb * 1_000_000
    api = f"{args.url}/api/v1"
    headers = {"Authorization": f"Bearer {args.key}"}

    with httpx.Client(timeout=600, headers=headers) as client:
        case = client.post(
            f"{api}/cases", json={"reference": f"BENCH-{uuid.uuid4().hex[:8]}", "title": "bench"}
        )
        case.raise_for_status()
        sent = hashlib.sha256()
        baseline = rss_bytes(args.pid)
        with PeakRss(args.pid) as up:
            started = time.perf_counter()
            response = client.post(
                f"{api}/cases/{case.json()['id']}/attachments",
                params={"filename": "extraction.bin"},
                content=file_chunks(size, sent),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            upload_s = time.perf_counter() - started
        response.raise_for_status()
        meta = response.json()
        assert meta["sha256"] == sent.hexdigest(), "the server hashed another file"

        received = hashlib.sha256()
        got = 0
        with PeakRss(args.pid) as down:
            started = time.perf_counter()
            with client.stream("GET", f"{api}/attachments/{meta['id']}/content") as stream:
                stream.raise_for_status()
                for chunk in stream.iter_bytes():
                    received.update(chunk)
                    got += len(chunk)
            download_s = time.perf_counter() - started
        assert got == size and received.hexdigest() == meta["sha256"], "the download differs"

    mib = 1024 * 1024
    print(f"file: {size / 1e6:.0f} MB, sha256 {meta['sha256'][:16]}... (checked both ways)")
    print(f"worker RSS before: {baseline / mib:.1f} MiB")
    for name, seconds, peak in (("upload", upload_s, up.peak), ("download", download_s, down.peak)):
        print(
            f"{name + ':':<9} {seconds:6.2f} s, {size / 1e6 / seconds:7.1f} MB/s, "
            f"RSS +{(peak - baseline) / mib:.1f} MiB peak"
        )


if __name__ == "__main__":
    main()
