"""docker-compose.yml, the Dockerfile and .dockerignore (contract §6b), read as data: no
Docker daemon is needed to check that files survive a container, images are pinned
and no secret is written into them."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# name:1.2 or name:1.2.3, with an optional variant (-bookworm, -slim-bookworm), or a digest.
PINNED = re.compile(r"[\w./-]+(:\d+\.\d+(\.\d+)?(-[\w.-]+)?|@sha256:[0-9a-f]{64})")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> named volume (bind mounts and anonymous volumes left out)."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
        else:
            if volume.get("type", "volume") != "volume":
                continue
            source, target = volume.get("source", ""), volume["target"]
        if source in (COMPOSE.get("volumes") or {}):
            mounts[target] = source
    return mounts


def _serves_the_api(service: dict[str, Any]) -> bool:
    command = service.get("command") or []
    return "build" in service and any(word in command for word in ("serve", "demo"))


API_SERVICES = sorted(name for name, service in SERVICES.items() if _serves_the_api(service))


def test_the_services_that_serve_the_api_are_found() -> None:
    assert API_SERVICES == ["api", "demo"]


@pytest.mark.parametrize("name", API_SERVICES)
def test_files_live_on_a_named_volume_at_the_storage_dir(name: str) -> None:
    service = SERVICES[name]
    storage_dir = _environment(service).get("CASEAPI_STORAGE_DIR")
    assert storage_dir and storage_dir.startswith("/"), "an explicit, absolute CASEAPI_STORAGE_DIR"
    assert storage_dir in _named_volumes(service), f"{name}: no named volume at {storage_dir}"
    # The directory exists in the image, owned by the service's user: a new
    # volume mounted there takes over that owner (else root's, and unwritable).
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"mkdir -p {storage_dir}" in dockerfile


def test_two_instances_never_share_a_storage_volume() -> None:
    """A storage directory belongs to one database."""
    volumes = [
        _named_volumes(SERVICES[name])[_environment(SERVICES[name])["CASEAPI_STORAGE_DIR"]]
        for name in API_SERVICES
    ]
    assert len(set(volumes)) == len(volumes)


def test_every_image_is_pinned_to_an_exact_version() -> None:
    for name, service in SERVICES.items():
        if "build" in service:
            continue  # built here from the pinned Dockerfile
        assert PINNED.fullmatch(service["image"]), f"{name}: {service['image']}"
    bases = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert bases and all(PINNED.fullmatch(base) for base in bases), bases


def test_the_audit_key_comes_from_a_secret_file_never_from_the_compose_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"CASEAPI_AUDIT_KEY\s*[:=]", text), "the key itself must not be set here"
    secrets = COMPOSE["secrets"]
    users = []
    for name, service in SERVICES.items():
        path = _environment(service).get("CASEAPI_AUDIT_KEY_FILE")
        if path is None:
            continue
        users.append(name)
        match = re.fullmatch(r"/run/secrets/([\w.-]+)", path)
        assert match, path
        assert match[1] in service.get("secrets", []), f"{name} does not get the secret {match[1]}"
        assert "file" in secrets[match[1]]
    # Every service on PostgreSQL (whose key is not generated) gets it.
    on_postgres = [
        name
        for name, service in SERVICES.items()
        if _environment(service).get("CASEAPI_DATABASE_URL", "").startswith("postgresql")
    ]
    assert on_postgres and sorted(users) == sorted(on_postgres)


def test_the_build_context_leaves_out_repositories_environments_data_and_secrets() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".git", ".venv", "**/__pycache__", ".pytest_cache", ".ruff_cache", "*.db"):
        assert entry in ignored, entry
    for entry in ("caseapi-files", "caseapi.key", "secrets", "bench/data", "site"):
        assert entry in ignored, entry
    # A federating instance's private key, and the federation demo's two instances.
    for entry in ("caseapi-instance.key", "caseapi-demo"):
        assert entry in ignored, entry
    # The folder the compose file reads the audit key from.
    assert Path(COMPOSE["secrets"]["audit_key"]["file"]).parts[0] in ignored
