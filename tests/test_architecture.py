"""The package's floors: no import cycle, the functional core imports nothing from ibhebb, imports only go down.

Every ``import`` counts, at module level or inside a function: an upward import
made lazily is still a cycle, only hidden.
"""
import ast
from pathlib import Path

import ibhebb

SRC = Path(ibhebb.__file__).resolve().parent

FLOORS = {
    "errors": 0, "_version": 0, "fileio": 0.2, "presets": 0.25, "config": 0.5,
    "functional": 1,
    "data": 2, "models": 2, "reservoir": 2, "memory": 2,
    "rules": 3,
    "engine": 4,
    "train": 5,
    "app": 6,
    "": 6.5,  # ibhebb/__init__: the public API, built on the trainer
    "cli": 7, "__main__": 8,
}
"""The floor of each top-level module or package of ``ibhebb`` (``""`` is ``ibhebb`` itself)."""
SIDEWAYS = {("memory", "reservoir")}
"""Imports between different packages of one floor that are allowed (the reservoir memory is built on reservoirs)."""


def module_names() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = list(f.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """``module -> the ibhebb modules it imports`` (``from . import x`` is an arrow to ``x``, not to the package)."""
    mods = module_names()
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [target, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[m].update(t for t in targets if t in mods and t != m)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def top(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_functional_core_imports_nothing_else_from_ibhebb():
    graph = import_graph()
    outside = {(m, t) for m, ts in graph.items() if top(m) == "functional" for t in ts if top(t) != "functional"}
    assert outside == set()


def test_every_module_has_a_floor():
    assert {top(m) for m in module_names()} <= set(FLOORS)


def test_imports_only_go_down():
    bad = []
    for m, targets in import_graph().items():
        for t in targets:
            a, b = top(m), top(t)
            if (FLOORS[b] > FLOORS[a]) or (FLOORS[b] == FLOORS[a] and a != b and (a, b) not in SIDEWAYS):
                bad.append(f"{m} -> {t}")
    assert bad == []


def test_public_api():
    assert set(ibhebb.__all__) <= set(dir(ibhebb))
    names = ("MLP", "LeakyMLP", "CNN", "make_rule", "RULES", "global_signal", "hsic_bottleneck", "Trainer", "train",
             "load_config", "BioHSICLearner", "PHSICLearner", "load_run")
    for name in names:
        assert name in ibhebb.__all__
