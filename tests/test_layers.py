"""The layers a newcomer sees in the tree, checked: app/core imports nothing
above it, services never see HTTP, there is one way to the database, and no
module imports itself back through others."""

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"


def _module(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> Iterator[str]:
    """The modules `path` imports (at module level only, with `top_level_only`:
    an import inside a function runs when it is called, not when the module loads)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports are for the type checker only
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                base = _module(path).split(".")[: -node.level]
                yield ".".join([*base, node.module])
            else:
                yield node.module
                # `from app import access`: the submodule is what is imported.
                yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _app_modules() -> dict[str, Path]:
    return {_module(path): path for path in APP.rglob("*.py")}


def test_the_infrastructure_imports_nothing_above_it() -> None:
    modules = _app_modules()
    above = []
    for name, path in modules.items():
        if not name.startswith("app.core"):
            continue
        for imported in _imports(path, top_level_only=False):
            if imported.startswith("app.") and imported in modules and not imported.startswith("app.core"):
                above.append(f"{name} imports {imported}")
    assert not above, "\n".join(above)


def test_services_never_see_http() -> None:
    seen = []
    for name, path in _app_modules().items():
        if not name.endswith(".service"):
            continue
        for imported in _imports(path, top_level_only=False):
            if imported.split(".")[0] in {"fastapi", "starlette"}:
                seen.append(f"{name} imports {imported}")
    assert not seen, "\n".join(seen)


def test_one_way_to_the_database() -> None:
    """No module reaches the database through an ORM session: every route,
    command and background task runs on app.core.uow (the engine itself is
    used by migrations and by the unit of work on SQLite)."""
    sessions = []
    for name, path in _app_modules().items():
        for imported in _imports(path, top_level_only=False):
            if imported in {"sqlalchemy.orm.Session", "sqlmodel.Session", "sqlmodel.orm.session", "psycopg"}:
                sessions.append(f"{name} imports {imported}")
    assert not sessions, "\n".join(sessions)


def test_no_import_cycles() -> None:
    modules = _app_modules()
    graph = {
        name: {m for m in _imports(path, top_level_only=True) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's __init__ importing its own submodules is not a cycle of layers.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    sys.setrecursionlimit(10_000)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, cycles
