"""The import rules of docs/architecture.md, checked on the source with ``ast``.

Every import counts: module level, inside functions, and under ``TYPE_CHECKING`` (a type-only
import is still a dependency a reader has to follow).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"

# Only these may import gateway.app: the package's lazy create_app and the server that runs it.
MAY_IMPORT_APP = {"gateway", "gateway.server"}

# The floors, bottom-up: a module may import its own floor and the ones below, never above.
FLOORS: list[tuple[str, ...]] = [
    # 0: words every part uses
    (
        "gateway.errors",
        "gateway.config",
        "gateway.context",
        "gateway.slugs",
        "gateway.filemodes",
        "gateway.native",
    ),
    # 1: state and the request path's pieces
    ("gateway.store", "gateway.http", "gateway.routing", "gateway.runtimes", "gateway.fleet"),
    # 2: the surfaces, then the composition root and the entry points
    ("gateway.app", "gateway.server", "gateway.cli", "gateway.clikit"),
]


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the gateway modules it imports (``from pkg import sub`` counts as pkg.sub)."""
    mods = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [*subs, base]
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def app_importers(graph: dict[str, set[str]]) -> set[str]:
    return {name for name, deps in graph.items() if "gateway.app" in deps} - MAY_IMPORT_APP


def floor_of(name: str) -> int | None:
    for level, prefixes in enumerate(FLOORS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return level
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for name, deps in graph.items():
        mine = floor_of(name)
        for dep in deps:
            theirs = floor_of(dep)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{name} -> {dep}")
    return sorted(bad)


def test_there_are_no_import_circles() -> None:
    assert circles(import_graph(PACKAGE)) == []


def test_only_the_entry_points_import_the_app() -> None:
    assert app_importers(import_graph(PACKAGE)) == set()


def test_lower_floors_never_import_higher_ones() -> None:
    assert upward_imports(import_graph(PACKAGE)) == []


def test_the_checks_see_a_circle_and_an_app_import(tmp_path: Path) -> None:
    # The checker itself: a made-up package with both faults must be caught.
    root = tmp_path / "gateway"
    (root / "routing").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "app.py").write_text("from gateway.routing import proxy\n")
    (root / "routing" / "__init__.py").write_text("")
    (root / "routing" / "proxy.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway.app import Gateway\n"
    )
    graph = import_graph(root)
    assert circles(graph) == [["gateway.app", "gateway.routing.proxy"]]
    assert app_importers(graph) == {"gateway.routing.proxy"}
    assert upward_imports(graph) == ["gateway.routing.proxy -> gateway.app"]


# What one request learned travels in gateway.context.RequestContext, never as loose keys.
LOOSE_KEYS = {"gateway.cycle", "gateway.body_follows", "gateway.user", "gateway.api"}
LOOSE_KEYS |= {"gateway.private", "team", "request_id", "target", "retries"}


def loose_scope_keys(root: Path) -> list[str]:
    """``scope["team"]``, ``scope.get("team")``, ``"team" in scope`` and the like."""
    found = []
    for name, path in sorted(modules(root).items()):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                if node.value.id == "scope" and isinstance(node.slice, ast.Constant):
                    key = node.slice.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                if isinstance(owner, ast.Name) and owner.id == "scope" and node.args:
                    first = node.args[0]
                    key = first.value if isinstance(first, ast.Constant) else None
            elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant):
                right = node.comparators[0]
                if isinstance(right, ast.Name) and right.id == "scope":
                    key = node.left.value
            elif isinstance(node, ast.Dict):
                key = next(
                    (k.value for k in node.keys if isinstance(k, ast.Constant)
                     and k.value in ("gateway.body_follows", "gateway.cycle")),
                    None,
                )  # fmt: skip
            if key in LOOSE_KEYS:
                found.append(f"{name}:{node.lineno} {key}")
    return found


def test_the_request_context_replaces_loose_scope_keys() -> None:
    assert loose_scope_keys(PACKAGE) == []


# HTTP on both sides (gateway/http/): it may use the words of floor 0 and the listener limits,
# never routing, auth or any policy, so the server and the client can be read on their own.
HTTP_MAY_IMPORT = (*FLOORS[0], "gateway.http", "gateway.limits")


def http_boundary(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for name, deps in graph.items():
        if name == "gateway.http" or name.startswith("gateway.http."):
            for dep in deps:
                if not any(dep == p or dep.startswith(p + ".") for p in HTTP_MAY_IMPORT):
                    bad.append(f"{name} -> {dep}")
    return sorted(bad)


def test_the_http_package_knows_no_policy() -> None:
    assert http_boundary(import_graph(PACKAGE)) == []


# A function is read whole: none longer than this, and a module stays around one concept.
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500
# The modules allowed to be longer, and why (each is one concept that reads top to bottom).
LONG_MODULES = {
    "gateway.http.protocol": "the connection and its request cycles, one state machine",
}


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    found = []
    for name, path in sorted(modules(root).items()):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    found.append(f"{name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def long_modules(root: Path, limit: int = MAX_MODULE_LINES) -> list[str]:
    return [
        f"{name} ({n} lines)"
        for name, path in sorted(modules(root).items())
        if (n := len(path.read_text().splitlines())) > limit and name not in LONG_MODULES
    ]


def test_no_function_is_too_long_to_read_whole() -> None:
    assert long_functions(PACKAGE) == []


def test_no_module_outgrows_one_concept() -> None:
    assert long_modules(PACKAGE) == []


def test_the_size_and_http_checks_see_their_faults(tmp_path: Path) -> None:
    root = tmp_path / "gateway"
    (root / "http").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "routing.py").write_text("")
    (root / "http" / "__init__.py").write_text("")
    (root / "http" / "client.py").write_text("from gateway import routing\n")
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (root / "big.py").write_text("def f():\n" + body + "\n" * MAX_MODULE_LINES)
    assert http_boundary(import_graph(root)) == ["gateway.http.client -> gateway.routing"]
    assert long_functions(root) == [f"gateway.big:1 f ({MAX_FUNCTION_LINES + 1} lines)"]
    assert long_modules(root) == [
        f"gateway.big ({MAX_FUNCTION_LINES + 1 + MAX_MODULE_LINES} lines)"
    ]
