"""The one version of caseapi: what `caseapi --version` prints and the OpenAPI document's `info.version`."""

import tomllib
from importlib import metadata

from app.core.config import PROJECT_ROOT


def version() -> str:
    """The installed distribution's version; in a checkout run without installing, pyproject's."""
    try:
        return metadata.version("caseapi")
    except metadata.PackageNotFoundError:
        return str(tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"])
