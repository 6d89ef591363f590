"""Several servers from one command (`caseapi demo --federation`): each a
`caseapi serve` child process with an environment of its own, serving on a
socket this process listens on first, its output prefixed with its name, and
all stopped together.

Each child runs in a session of its own, so that a Ctrl-C on the terminal
reaches only this process, which then stops every child once, in order: a
child that stopped of itself stops the others too.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

# How long a child may take to answer /health/ready, and to stop once asked.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class ChildFailed(Exception):
    """A child that did not start or stopped of itself, in one line."""


@dataclass
class Child:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    pump: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        assert self.process.stdout is not None
        self.pump = threading.Thread(target=_prefixed, args=(self.name, self.process.stdout), daemon=True)
        self.pump.start()

    def check(self) -> None:
        """ChildFailed if the child has stopped."""
        if self.process.poll() is not None:
            raise ChildFailed(f"{self.name} stopped (exit status {self.process.returncode}): see its output")

    def wait_ready(self, deadline: float) -> None:
        """Until the child answers /health/ready with 200; ChildFailed if it stops or takes too long."""
        while True:
            self.check()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise ChildFailed(f"{self.name} did not get ready in {START_TIMEOUT:.0f} s: see its output")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGINT, as a Ctrl-C would send it (uvicorn finishes what it serves); SIGKILL after a while."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.pump.join(5)


def _prefixed(name: str, stream: IO[bytes]) -> None:
    """Copy a child's output to this process's stderr, each line after the child's name."""
    with stream:
        for line in stream:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"{name} | {line.decode(errors='replace')}")
                sys.stderr.flush()


def spawn(
    name: str, url: str, argv: list[str], env: Mapping[str, str], cwd: str, sock: socket.socket
) -> Child:
    """Run `argv` (a `caseapi serve --fd N` command) with the listening socket `sock` as fd N."""
    process = subprocess.Popen(
        argv,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        pass_fds=(sock.fileno(),),
        start_new_session=True,
    )
    return Child(name, url, process)


def serve_until_stopped(children: list[Child]) -> None:
    """Wait until a child stops of itself (ChildFailed) or this process is told
    to stop (Ctrl-C, SIGTERM, SIGHUP: return normally)."""
    try:
        while True:
            for child in children:
                child.check()
            time.sleep(0.2)
    except KeyboardInterrupt:
        return


@contextlib.contextmanager
def stopping(children: list[Child]) -> Iterator[None]:
    """Stop every child on the way out, however it is left; SIGTERM and SIGHUP
    end this process as a Ctrl-C does, so that the children stop with it."""
    handlers = {
        sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        # A second Ctrl-C while the children stop must not leave one running.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for child in children:
                child.stop()
        finally:
            signal.signal(signal.SIGINT, previous)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with `overrides`; the directory this `app`
    package is imported from comes first on the import path, since a child runs
    in another working directory (a checkout run in place, not installed)."""
    packages = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (packages, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **overrides}
