"""The package as an operator installs it: a wheel (not an editable install)
that carries its migrations and seed data, and commands that work from any
directory. The wheel is built and installed without network access."""

import os
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from app.core.config import PROJECT_ROOT

# What a build needs; the same as the Dockerfile copies.
SOURCES = ("pyproject.toml", "setup.py", "README.md", "app", "migrations", "seed")


def _run(*args: str | Path, **options: object) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **options)  # type: ignore[call-overload]
    assert done.returncode == 0, (args, done.stderr)
    return str(done.stdout)


def _files(root: Path, folder: str) -> set[str]:
    return {
        path.relative_to(root / folder).as_posix()
        for path in (root / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: a build writes build/ and *.egg-info next to its sources.
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (PROJECT_ROOT / name).is_dir():
            shutil.copytree(PROJECT_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(PROJECT_ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    pip = (sys.executable, "-m", "pip")
    _run(*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, source)
    [built] = dist.glob("caseapi-*.whl")
    return built


def test_the_wheel_carries_the_code_its_migrations_and_its_seed(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    code = {f"app/{name}" for name in _files(PROJECT_ROOT, "app") if name.endswith(".py")}
    assert code <= names
    shipped = {name for name in names if name.startswith(("app/_migrations/", "app/_seed/"))}
    assert shipped == {f"app/_migrations/{name}" for name in _files(PROJECT_ROOT, "migrations")} | {
        f"app/_seed/{name}" for name in _files(PROJECT_ROOT, "seed")
    }
    assert "app/_migrations/versions/20261128_0001_initial_schema.py" in shipped


def test_the_installed_package_works_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    # The dependencies come from the environment running the tests, behind
    # the new venv's own site-packages: caseapi itself only from the wheel.
    # (Added after the install: pip would take a caseapi installed in the
    # running environment for this one.)
    (Path(purelib) / "test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A fresh operator's shell: no checkout on the path, default settings.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("CASEAPI_")}

    def caseapi(*args: str) -> str:
        return _run(venv / "bin" / "caseapi", *args, cwd=elsewhere, env=env)

    where = _run(python, "-c", "import app; print(app.__file__)", cwd=elsewhere, env=env)
    assert Path(where.strip()).is_relative_to(venv)
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert caseapi("--version") == f"caseapi {project['version']}\n"
    assert "newest revision" in caseapi("migrate")
    agency_id = caseapi("agency", "create", "--code", "KZ-MVD", "--name", "Ministry", "--kind", "ministry")
    assert caseapi("agency", "list").split("\t")[:2] == [agency_id.splitlines()[-1], "KZ-MVD"]
    assert "rows added" in caseapi("seed")
    assert "intact" in caseapi("audit", "verify")
    assert (elsewhere / "caseapi.db").is_file()  # the default database, in the working directory
