"""No import cycle among Ember's modules, within a package or across packages.

import-linter's layers contracts (pyproject.toml) say which package may import which; this
checks what they cannot: that no two modules anywhere import each other, even indirectly."""

from __future__ import annotations

import grimp

PACKAGES = ("builds", "calls", "config", "events", "fn", "gateway", "invoker", "scheduler", "store")


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.split(".")[0] not in PACKAGES:
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module.split(".")[0] in PACKAGES and module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert cycles(graph) == [], "import cycles: " + "; ".join(
        " <-> ".join(component) for component in cycles(graph)
    )


def test_a_cycle_would_be_found() -> None:
    graph = grimp.ImportGraph()
    for module in ("gateway.a", "gateway.b", "gateway.c"):
        graph.add_module(module)
    graph.add_import(importer="gateway.a", imported="gateway.b")
    graph.add_import(importer="gateway.b", imported="gateway.a")
    graph.add_import(importer="gateway.c", imported="gateway.a")
    assert cycles(graph) == [["gateway.a", "gateway.b"]]
