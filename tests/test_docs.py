from conftest import ROOT

from dslc.docs import render_readme
from dslc.ops.registry import all_ops


def test_readme_tables_are_current():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render_readme(text) == text, "run `python -m dslc.docs`"
    for name in all_ops():
        assert f"| `{name}` |" in text


def test_readme_names_every_initialiser():
    import typing

    from dslc.ops.registry import Init

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [i for i in typing.get_args(Init) if f"`{i}`" not in text] == []


def test_readme_names_only_files_that_exist():
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:dslc|grammars|docs|bench|specs|examples)/[\w./]*)`", text))
    paths |= set(re.findall(r"\]\(((?:docs|bench)/[\w./]+)\)", text))
    assert "dslc/parse.py" in paths
    assert [p for p in sorted(paths) if not (ROOT / p).exists()] == []


def test_parser_tables_are_current():
    from dslc.parse import grammar_digest, grammar_text, load_tables

    tables = load_tables()
    assert tables is not None and tables["digest"] == grammar_digest(grammar_text()), \
        "run `python -m dslc.parse`"


def test_unreadable_parser_tables_are_rebuilt_from_the_grammar(tmp_path, monkeypatch):
    import marshal

    from dslc import parse

    good = parse.parse("model m { input x: f32[4]\n dense(2) }\n", "m.dl")
    for name, data in (("garbage", b"\x00not marshal"), ("empty", b""),
                       ("no tables", marshal.dumps({"digest": "x", "basic": marshal.dumps(1)})),
                       ("a list", marshal.dumps([1, 2]))):
        path = tmp_path / name
        path.write_bytes(data)
        monkeypatch.setattr(parse, "TABLES", path)
        parse._parser.cache_clear()
        assert parse.load_tables() is None, name
        assert parse.parse("model m { input x: f32[4]\n dense(2) }\n", "m.dl") == good, name
    parse._parser.cache_clear()


def test_every_op_documents_itself():
    for name, op in all_ops().items():
        assert op.summary(), name
        assert op.name == name


def test_code_is_lint_clean():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "ruff"
    ruff = str(beside) if beside.exists() else shutil.which("ruff")
    if ruff is None:
        import pytest

        pytest.skip("ruff is not installed")
    proc = subprocess.run([ruff, "check", "dslc", "tests", "bench"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout


# (spelled in pieces so that a plain grep for clock calls does not find this list itself)
CLOCKS = {"time", "perf" + "_counter", "perf" + "_counter_ns", "mono" + "tonic",
          "mono" + "tonic_ns", "process_time", "time_ns", "timeit", "default_timer"}


def test_no_clock_in_tests():
    """A test that reads a clock fails on a loaded machine: guard hangs with caps on work,
    asserted by counting, and keep speed figures in bench/. Hypothesis's `deadline` and
    too-slow health check are clocks too."""
    import ast

    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = {node.module} if isinstance(node, ast.ImportFrom) else \
                    {a.name for a in node.names}
                if modules & {"time", "timeit"}:
                    found.append(f"{where}: imports a clock")
            elif isinstance(node, ast.Attribute) and node.attr in CLOCKS - {"time"}:
                found.append(f"{where}: .{node.attr}")
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "settings":
                kws = {k.arg: k.value for k in node.keywords}
                deadline = kws.get("deadline")
                if not (isinstance(deadline, ast.Constant) and deadline.value is None):
                    found.append(f"{where}: hypothesis settings without deadline=None")
                if "too_slow" not in ast.unparse(kws.get("suppress_health_check", ast.List([]))):
                    found.append(f"{where}: hypothesis settings without suppressing too_slow")
    assert found == []


def test_the_op_index_is_current():
    """Op families load by name through dslc/ops/_index.py (`python -m dslc.docs`)."""
    from dslc.ops import _index as index
    from dslc.ops.registry import all_ops

    ops = all_ops()
    assert index.OPS == {n: type(op).__module__.rsplit(".", 1)[1] for n, op in sorted(ops.items())}, \
        "run `python -m dslc.docs`"
    assert set(index.ACTIVATIONS) == {n for n, op in ops.items() if op.category == "activation"}


def test_checking_a_cnn_loads_only_the_families_it_names():
    import subprocess
    import sys

    code = ("import sys\nfrom dslc.compiler import compile_file\n"
            f"compile_file({str(ROOT / 'specs' / 'cnn_mnist.dl')!r})\n"
            "print(sorted(m for m in sys.modules if m.startswith('dslc.ops.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert "dslc.ops.attention" not in out and "dslc.ops.recurrent" not in out, out
