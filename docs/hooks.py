"""MkDocs hooks: the pages that describe the code are filled in from the code at build time.

A page asks for a generated part with a marker line, `<!-- generated: NAME -->`:
`settings` (the configuration reference, from app.core.config.Settings), `cli` (every
command's help, from app.cli's parser) and `api` (the operations of the OpenAPI
document that create_app() serves). A setting without a description
(`Field(description=...)` in app/core/config.py) fails the build, so the reference
cannot fall behind the class.
"""

import argparse
import logging
import re
import secrets
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parent.parent
# The checkout's code is the code the site describes, installed or not.
sys.path.insert(0, str(ROOT))

log = logging.getLogger("mkdocs.plugins.caseapi")
MARKER = re.compile(r"^<!-- generated: (\w+) -->$", re.MULTILINE)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            log.warning("%s: unknown generated part %r", page.file.src_uri, name)
            return match.group(0)
        return GENERATORS[name]()

    return MARKER.sub(fill, markdown)


def settings_table() -> str:
    from app.core.config import Settings

    rows = ["| variable | default | value | what it does |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        description = field.description
        if not description:
            raise PluginError(
                f"setting {name} has no description: add Field(description=...) in app/core/config.py"
            )
        if field.default_factory is not None or field.default is None:
            default = "unset"
        else:
            default = f"`{_shown(field.default)}`"
        variable = f"`CASEAPI_{name.upper()}`"
        rows.append(f"| {variable} | {default} | {_kind(field.annotation, field.metadata)} | {description} |")
    return "\n".join(rows)


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"  # relative to the working directory, as an operator writes it
    return str(value)


def _kind(annotation: Any, metadata: list[Any]) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Literal:
        return ", ".join(f"`{choice}`" for choice in typing.get_args(annotation))
    names = {bool: "`true` or `false`", int: "integer", float: "number", str: "text", Path: "path"}
    kind = names.get(annotation, "secret" if getattr(annotation, "__name__", "") == "SecretStr" else "text")
    bounds = []
    for constraint in metadata:
        for attribute, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(constraint, attribute, None) is not None:
                bounds.append(f"{sign} {_shown(getattr(constraint, attribute))}")
    return f"{kind} {', '.join(bounds)}".strip()


def cli_help() -> str:
    from app.cli import _parser

    parts = []
    for prog, parser in _commands(_parser(), "caseapi"):
        parser.formatter_class = _wide
        parser.prog = prog
        parts.append(f"### `{prog}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(parts)


def _wide(prog: str) -> argparse.HelpFormatter:
    # A fixed width, so that the page does not depend on the terminal that built it.
    return argparse.HelpFormatter(prog, width=100)


def _commands(parser: argparse.ArgumentParser, prog: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser itself, then every command under it, depth first in the parser's order."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prog} {name}")


def api_operations() -> str:
    from app.core.config import Settings
    from app.main import create_app

    with tempfile.TemporaryDirectory() as scratch:
        # A throwaway instance: building the document touches no database.
        settings = Settings(
            database_url=f"sqlite:///{scratch}/docs.db",
            audit_key=secrets.token_hex(32),
            key_file=Path(scratch) / "key",
            storage_dir=Path(scratch) / "files",
            webhook_delivery=False,
        )
        application = create_app(settings)
        document = application.openapi()
    info = document["info"]
    lines = [f"The document of caseapi {info['version']} (`/openapi.json` of a running instance).\n"]
    by_tag: dict[str, list[str]] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            tag = (operation.get("tags") or ["other"])[0]
            row = (
                f"| `{method.upper()}` | `{path}` | `{operation.get('operationId', '')}` "
                f"| {operation.get('summary', '')} |"
            )
            by_tag.setdefault(tag, []).append(row)
    for tag, rows in by_tag.items():
        lines.append(f"### {tag}\n\n| method | path | operationId | summary |\n| --- | --- | --- | --- |")
        lines.extend(rows)
        lines.append("")
    return "\n".join(lines)


GENERATORS: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "cli": cli_help,
    "api": api_operations,
}
