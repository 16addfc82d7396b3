"""No import cycles among the modules of src/mlops_loop, and no module over 600 lines.

Every import counts: at module level, inside functions and under `TYPE_CHECKING`. Importing
`a.b.c` also runs `a/__init__` and `a/b/__init__`, but that implicit relation is not an edge;
an explicit `from a.b import x` inside `a/b/c.py` is one (to `a.b`, the package's __init__).
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "mlops_loop"
MAX_LINES = 600


def module_name(path: Path, root: Path = SRC) -> str:
    """`mlops_loop.core.drift` for .../mlops_loop/core/drift/__init__.py, and so on."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: Path = PACKAGE, root: Path = SRC) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(package.rglob("*.py"))}


def _resolve(name: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module a `from ... import` names, relative levels resolved."""
    if level == 0:
        return module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules `path` (module `name`) imports, anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(target: str) -> None:
        # The module itself, else the longest prefix that is one (`import a.b.attr`).
        parts = target.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in known:
                found.add(candidate)
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, is_package, node.level, node.module)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in known else source)
    found.discard(name)
    return found


def import_graph(package: Path = PACKAGE, root: Path = SRC) -> dict[str, set[str]]:
    found = modules(package, root)
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), iteratively, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(sorted(component))
    return out


def _shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside `within` (breadth first)."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph.get(node, ())):
            if nxt not in within:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles as paths `[a, b, ..., a]`: the shortest one through each module on a cycle."""
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for component in _components(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph.get(component[0], ()):
            continue
        for start in component:
            cycle = _shortest_cycle(graph, start, members)
            body = cycle[:-1]
            pivot = body.index(min(body))
            key = tuple(body[pivot:] + body[:pivot])
            if key not in seen:
                seen.add(key)
                cycles.append([*key, key[0]])
    return cycles


def test_find_cycles_sees_a_cycle_and_nothing_else():
    graph = {
        "p.a": {"p.b"},
        "p.b": {"p.c"},
        "p.c": {"p.a", "p.d"},
        "p.d": {"p.e"},
        "p.e": set(),
        "p.f": {"p.f"},
    }
    assert find_cycles(graph) == [["p.a", "p.b", "p.c", "p.a"], ["p.f", "p.f"]]
    assert find_cycles({**graph, "p.c": {"p.d"}, "p.f": set()}) == []


def test_import_graph_counts_every_kind_of_import(tmp_path):
    pkg = tmp_path / "p"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from p.sub.a import x\n")
    (pkg / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from . import b\n"
        "def f():\n    from ..c import y\n    import p.sub.b.z\n"
    )
    (pkg / "sub" / "b.py").write_text("from p.sub import x\n")
    (pkg / "c.py").write_text("import os\n")
    graph = import_graph(pkg, tmp_path)
    assert graph == {
        "p": set(),
        "p.c": set(),
        "p.sub": {"p.sub.a"},
        "p.sub.a": {"p.sub.b", "p.c"},
        # An explicit import of the package is an edge to its __init__ (and so a cycle here).
        "p.sub.b": {"p.sub"},
    }
    assert find_cycles(graph) == [["p.sub", "p.sub.a", "p.sub.b", "p.sub"]]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in src/mlops_loop:\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )


def test_no_module_over_600_lines():
    lengths = {
        str(path.relative_to(SRC)): len(path.read_text(encoding="utf-8").splitlines())
        for path in modules().values()
    }
    over = {name: n for name, n in sorted(lengths.items()) if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: " + ", ".join(
        f"{name} ({n})" for name, n in over.items()
    )
