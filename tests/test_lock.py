"""The lock files pin every dependency pyproject.toml declares, within its range:
a dependency added or re-ranged without updating them fails here, not in an image."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.core.config import PROJECT_ROOT

PROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", re.MULTILINE)
HASHED_PIN = re.compile(r"^[A-Za-z0-9._-]+==[^\n]*\\\n\s+--hash=sha256:[0-9a-f]{64}", re.MULTILINE)


def _pins(lock: Path) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in PIN.findall(lock.read_text())}


@pytest.mark.parametrize(
    ("lock", "declared"),
    [
        ("requirements.lock", PROJECT["dependencies"]),
        ("requirements-test.lock", PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]),
    ],
)
def test_the_lock_pins_every_declared_dependency(lock: str, declared: list[str]) -> None:
    pins = _pins(PROJECT_ROOT / lock)
    for line in declared:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock} does not pin {name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (lock, line, pins[name])
    # every pin is hashed, so that pip install --require-hashes accepts the file
    text = (PROJECT_ROOT / lock).read_text()
    assert len(HASHED_PIN.findall(text)) == len(PIN.findall(text)) == len(pins)


def test_runtime_pins_agree_between_the_two_locks() -> None:
    runtime = _pins(PROJECT_ROOT / "requirements.lock")
    test = _pins(PROJECT_ROOT / "requirements-test.lock")
    assert {name: test.get(name) for name in runtime} == runtime
