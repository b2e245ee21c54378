"""dslc's modules import each other without cycles, and `dslc check` imports no framework.

The graph is read from the source with `ast`: every `import` and `from ... import`, at module
level and inside functions (a lazy import that closes a cycle is still a cycle), but not those
under `if TYPE_CHECKING:`, which never run. `import a.b.c` is an edge to `a.b.c`; the implicit
import of a module's parent packages is not an edge."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "dslc"
FRAMEWORKS = ("torch", "tensorflow", "keras", "onnx", "onnxruntime")


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every import statement that can run, skipping `if TYPE_CHECKING:` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, dict[str, str]]:
    """module → {imported dslc module: the import line}."""
    files = module_files()
    graph: dict[str, dict[str, str]] = {m: {} for m in files}
    for module, path in files.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(source, str(path))):
            where = f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}"
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(module, is_package, node)
                # `from pkg import sub` imports the submodule; `from pkg import name`, pkg.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            for target in targets:
                if target in files and target != module:
                    graph[module].setdefault(target, where)
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle (as a path of modules, first repeated last) per strongly connected component
    with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        components.append(sorted(comp))
    return [_cycle_in(graph, set(comp)) for comp in components]


def _cycle_in(graph: dict[str, dict[str, str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w in comp and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in {comp}")  # pragma: no cover


def describe(graph: dict[str, dict[str, str]], cycle: list[str]) -> str:
    lines = [" -> ".join(cycle)]
    lines += [f"    {graph[a][b]}" for a, b in zip(cycle, cycle[1:])]
    return "\n".join(lines)


def test_the_walk_sees_every_kind_of_import():
    graph = import_graph()
    assert "dslc.passes.build" in graph["dslc.compiler"]  # from a.b import name
    assert "dslc.ir.ast" in graph["dslc.parse"]  # from package import submodule
    assert "dslc.cli" in graph["dslc.__main__"]


def test_cycle_finder():
    graph = {"a": {"b": "a:1"}, "b": {"c": "b:1"}, "c": {"a": "c:1"}, "d": {"a": "d:1"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b": ""}, "b": {}}) == []


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    report = "\n\n".join(describe(graph, c) for c in found)
    print(report)
    assert not found, f"{len(found)} import cycle(s):\n{report}"


# Third-party packages `dslc check` may load beside the standard library.
CHECK_PACKAGES = {"dslc", "lark", "pydantic", "pydantic_core", "annotated_types",
                  "typing_extensions", "typing_inspection"}
CHECK_MODULE_BUDGET = 250  # modules beyond `import lark, pydantic`; 126 on 2025's Python 3.11

_CHECK = """
import json, sys
import lark, pydantic
before = set(sys.modules)
from dslc.cli import main
rc = main(["check", sys.argv[1]])
print(json.dumps({"rc": rc, "new": sorted(set(sys.modules) - before)}))
"""


def test_check_imports_no_framework():
    # Counted in a fresh interpreter: the modules `dslc check` adds to sys.modules.
    proc = subprocess.run([sys.executable, "-c", _CHECK, str(ROOT / "specs" / "cnn_mnist.dl")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, proc.stderr
    new = result["new"]
    tops = {m.split(".")[0] for m in new}
    assert not tops & {*FRAMEWORKS, "numpy"}, sorted(tops & {*FRAMEWORKS, "numpy"})
    third_party = {t for t in tops if t not in sys.stdlib_module_names
                   and not t.startswith("_sysconfigdata")}
    assert third_party <= CHECK_PACKAGES, sorted(third_party - CHECK_PACKAGES)
    assert len(new) <= CHECK_MODULE_BUDGET, len(new)


_STARTUP = """
import sys
from dslc.cli import main
rc = main(["check", sys.argv[1]])
loaded = set(sys.modules)
import dataclasses, json
from dslc.ir import graph
dslc_dataclasses = sorted(
    f"{name}.{k}" for name, mod in list(sys.modules.items()) if name.startswith("dslc")
    for k, v in vars(mod).items()
    if isinstance(v, type) and v.__module__ == name and dataclasses.is_dataclass(v))
built = [m.__name__ for m in (graph.Input, graph.BlockCall, graph.Node, graph.Graph)
         if m.__pydantic_complete__]
print(json.dumps({"rc": rc, "json": "json" in loaded, "dataclasses": dslc_dataclasses,
                  "built": built}))
"""


def test_check_start_up_work_is_counted():
    """What `dslc check` no longer does at start-up (docs/benchmarks.md, issue 12), counted
    rather than timed: it imports no `json`, defines no dataclass of dslc's (each compiles its
    methods with `exec`; dslc/records.py instead), and builds no validator for the graph's
    input, node, block-call and graph models (the builder constructs them from checked parts)."""
    proc = subprocess.run([sys.executable, "-c", _STARTUP, str(ROOT / "specs" / "cnn_mnist.dl")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"rc": 0, "json": False, "dataclasses": [], "built": []}, result


def test_check_leaves_the_cycle_collector_as_it_found_it(tmp_path, capsys):
    """`check` turns the collector off while it runs (docs/benchmarks.md); a program calling
    `main` keeps its own setting, after a good spec and after a bad one."""
    import gc

    from dslc.cli import main

    bad = tmp_path / "bad.dl"
    bad.write_text("model m { input x: f32[4]\n dense(0) }\n")
    assert gc.isenabled()
    assert main(["check", str(ROOT / "specs" / "cnn_mnist.dl")]) == 0
    assert gc.isenabled()
    assert main(["check", str(bad)]) == 2
    assert gc.isenabled()
    gc.disable()
    try:
        assert main(["check", str(ROOT / "specs" / "cnn_mnist.dl")]) == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
