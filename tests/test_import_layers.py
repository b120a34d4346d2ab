"""The layers import downward only, so that a newcomer can state the architecture in one sentence and trust it:
freellm's shared plumbing (background tasks, the Celery app and its beat schedule) at the very bottom, then providers (data, secrets, adapters, catalog) < routing (router, quota, sessions, handoff) <
analytics (request log, dashboards, live feed) < the API package (routing/api/) and freellm's entry points
(ASGI app, URLs, settings).
Adapters import nothing from Django or any app, and no two modules of the apps import each other, directly or
round a circle.

Read from the source with `ast`, every import counted (module level, inside functions, under TYPE_CHECKING), so
a lazy import cannot hide a back-edge. A small test rather than import-linter's `layers` contract: the rules
fit in a few lines here, two of them (plumbing modules inside the top package, the API package inside routing)
would need an independence contract and ignore lists there, and no new dependency is needed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("providers", "routing", "analytics", "freellm")
PLUMBING, TOP = -1, 3
# freellm's modules that are the project's top: the web entry points and what wires the apps together. Its
# other modules are plumbing that every layer may use, so they import no app (the Celery app finds tasks by
# name).
ENTRY_POINTS = {"freellm", "freellm.asgi", "freellm.wsgi", "freellm.urls", "freellm.settings"}
API_PACKAGE = "routing.api"
ADAPTERS = "providers.adapters"
FORBIDDEN_IN_ADAPTERS = ("django", "ninja", "channels", "celery", "asgiref", *APPS)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer(module: str) -> int:
    """-1 freellm's plumbing, 0 providers, 1 routing, 2 analytics, 3 the API package and freellm's entry points."""
    if module in ENTRY_POINTS or _within(module, API_PACKAGE):
        return TOP
    if _within(module, "freellm"):
        return PLUMBING
    return {"providers": 0, "routing": 1, "analytics": 2}[module.split(".")[0]]


def _modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _parse(path: Path) -> ast.AST:
    try:
        return ast.parse(path.read_text(), str(path))
    except SystemError:
        # CPython 3.11's "AST constructor recursion depth mismatch": its recursion counter is shared with
        # whatever another thread of the test process (a live gateway) is compiling at that moment. Once more.
        return ast.parse(path.read_text(), str(path))


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file; `from a import b` names a.b when b is a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield (submodule if submodule in MODULES else source), node.lineno


def _app_module(name: str) -> str | None:
    """The module of the apps that an import names (itself, or the package it names an attribute of)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for name, line in _imports(module, path):
            target = _app_module(name)
            if target is not None and target != module:
                edges.setdefault(target, line)
    return graph


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


def upward_imports() -> list[str]:
    return sorted(
        f"{_where(module, line)} {module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, edges in _graph().items()
        for target, line in edges.items()
        if layer(target) > layer(module)
    )


def adapter_imports() -> list[str]:
    found = []
    for module, path in MODULES.items():
        if _within(module, ADAPTERS):
            for name, line in _imports(module, path):
                if name.split(".")[0] in FORBIDDEN_IN_ADAPTERS and not _within(name, ADAPTERS):
                    found.append(f"{_where(module, line)} {module} imports {name}")
    return sorted(found)


def import_cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each one circle or a knot of them."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_the_scan_sees_every_app_and_its_imports():
    # A scan that found nothing would pass every rule below: make sure it reads the real tree.
    assert {m.split(".")[0] for m in MODULES} == set(APPS)
    graph = _graph()
    assert "providers.models" in graph["routing.selectors_quota"]  # a module-level import
    assert "providers.services" in graph["routing.router"]  # one inside a function
    assert sum(len(edges) for edges in graph.values()) > 100


def test_imports_point_down_the_layers():
    assert upward_imports() == []


def test_adapters_import_nothing_from_django_or_any_app():
    assert adapter_imports() == []


def test_no_import_cycles_between_modules():
    assert import_cycles() == []


if __name__ == "__main__":
    for line in upward_imports() + adapter_imports():
        print(line)
    for cycle in import_cycles():
        print("cycle:", " <-> ".join(cycle))
