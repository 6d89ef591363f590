"""One version (contract §6b): `caseapi --version`, the package metadata and the
OpenAPI document's `info.version` say the same."""

import tomllib
from importlib import metadata

import pytest
from fastapi.testclient import TestClient

from app import cli
from app.core.config import PROJECT_ROOT
from app.version import version

PROJECT_VERSION = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_the_version_is_the_packages() -> None:
    assert version() == PROJECT_VERSION
    try:
        installed = metadata.version("caseapi")
    except metadata.PackageNotFoundError:  # a checkout run without installing
        return
    assert installed == PROJECT_VERSION


def test_the_openapi_document_and_the_cli_say_the_same_version(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    info = client.get("/openapi.json").json()["info"]
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"caseapi {info['version']}\n"
    assert info["version"] == PROJECT_VERSION
