"""The documentation stays true: every shell block marked runnable is run, page by page,
against a fresh `caseapi demo`, and the README stays a front door.

A block is runnable when the line before its opening fence is `<!-- runnable -->`.
The blocks of a page run in order in one bash script (`set -e`, `pipefail`), in the
directory of a demo started for that page on a free port, as a reader runs them in the
directory where `caseapi demo` runs: `.venv/bin/caseapi` is this environment's,
`CASEAPI_URL` is the demo's base URL and `DEMO_KEY_<CODE>` the key the demo printed for
each agency (`KZ-MVD` -> `DEMO_KEY_KZ_MVD`). A page may ask for settings of its demo with
a line `<!-- demo-env: NAME=value ... -->`, which it also tells its reader. A page marked
`<!-- demo: federation -->` runs against `caseapi demo --federation` instead: its blocks
get `CASEAPI_URL_KZ` and `CASEAPI_URL_UA`, the base URLs of the two instances.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.core.config import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
RUNNABLE = "<!-- runnable -->"
FENCE = re.compile(r"^```(?:sh|bash)\s*$")
DEMO_ENV = re.compile(r"^<!-- demo-env: (.+) -->$", re.MULTILINE)
DEMO_KEY = re.compile(r"^  (\S+)\s+(cak_\S+)$")
FEDERATION = "<!-- demo: federation -->"
# The line before each instance's keys and explorer, in `caseapi demo --federation`'s output.
INSTANCE = re.compile(r"^([a-z]+)\.caseapi: ")
MAX_README_LINES = 250


def runnable_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of each block marked runnable, in page order."""
    lines = text.splitlines()
    blocks = []
    for number, line in enumerate(lines):
        if line.strip() != RUNNABLE:
            continue
        assert number + 1 < len(lines) and FENCE.match(lines[number + 1]), (
            f"line {number + 1}: {RUNNABLE} must stand right before a ```sh fence"
        )
        end = lines.index("```", number + 2)
        blocks.append((number + 3, "\n".join(lines[number + 2 : end])))
    return blocks


PAGES = sorted(page for page in DOCS.rglob("*.md") if runnable_blocks(page.read_text()))


def test_blocks_are_found_as_marked() -> None:
    page = "text\n<!-- runnable -->\n```sh\necho one\n```\n\n```sh\necho not marked\n```\n"
    assert runnable_blocks(page) == [(4, "echo one")]
    with pytest.raises(AssertionError, match="must stand right before"):
        runnable_blocks("<!-- runnable -->\n\n```sh\necho one\n```\n")
    assert PAGES, "no page of the documentation has a runnable block"


def test_runnable_blocks_find_ids_through_the_api() -> None:
    """A block that names a feed position or an id by number is true of one database only."""
    fixed = re.compile(r"after=[1-9]|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    for page in PAGES:
        for line, code in runnable_blocks(page.read_text()):
            assert not fixed.search(code), f"{page.relative_to(DOCS)}, block at line {line}"


@contextmanager
def demo_in(
    directory: Path, extra_env: dict[str, str], *, federation: bool = False
) -> Iterator[dict[str, str]]:
    """A demo served from `directory` on a free port (a federation: two); the
    environment its blocks run with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEAPI_")} | extra_env
    command = [str(directory / ".venv" / "bin" / "caseapi"), "demo", "--port", "0"]
    with (directory / "demo.log").open("w") as log:
        demo = subprocess.Popen(
            [*command, "--federation"] if federation else command,
            cwd=directory,
            env=env,
            stdout=subprocess.PIPE,
            # A federation's servers log on stderr: to a file, which never fills up as a pipe would.
            stderr=log if federation else subprocess.STDOUT,
            text=True,
        )
        keys: dict[str, str] = {}
        urls: dict[str, str] = {}
        instance = ""
        output = []
        try:
            assert demo.stdout is not None
            for line in demo.stdout:
                output.append(line)
                if key := DEMO_KEY.match(line.rstrip("\n")):
                    keys[f"DEMO_KEY_{re.sub(r'[^A-Z0-9]', '_', key.group(1).upper())}"] = key.group(2)
                elif federation and (named := INSTANCE.match(line)):
                    instance = f"_{named.group(1).upper()}"
                elif line.startswith("explorer: "):
                    urls[f"CASEAPI_URL{instance}"] = line.split()[1].removesuffix("/docs")
                    if not federation:
                        break
                elif federation and line.startswith("serving "):
                    break
            else:
                pytest.fail(f"caseapi demo did not start:\n{''.join(output)}")
            yield env | keys | urls
        finally:
            demo.terminate()
            try:
                demo.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.communicate()


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(DOCS)) for page in PAGES])
def test_runnable_blocks_run(page: Path, tmp_path: Path) -> None:
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            pytest.skip(f"the documentation's blocks need {tool}")
    text = page.read_text()
    # The reader's checkout: `.venv/bin/caseapi` (and python, pip) are this environment's.
    (tmp_path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    extra_env = dict(item.split("=", 1) for match in DEMO_ENV.findall(text) for item in match.split())
    script = ["set -e -o pipefail"]
    for line, code in runnable_blocks(text):
        script += [f"echo '>>> {page.name}, block at line {line}' >&2", code]
    with demo_in(tmp_path, extra_env, federation=FEDERATION in text.splitlines()) as env:
        # A session of its own, so that what a block leaves running (a receiver) ends with it.
        blocks = subprocess.Popen(
            ["bash", "-c", "\n".join(script)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = blocks.communicate(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(blocks.pid, signal.SIGTERM)
            blocks.wait()
        assert blocks.returncode == 0, f"{page.relative_to(DOCS)} failed:\n{out}\n{err}"


def test_the_readme_is_a_front_door() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= MAX_README_LINES
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links, "the README points into docs/"
    for link in links:
        assert (PROJECT_ROOT / link).is_file(), link
