"""Generated PyTorch source: golden files, py_compile, ruff, imports, parameter counts.

Regenerate the golden files with `DSLC_REGEN_GOLDEN=1 pytest tests/test_torch_codegen.py`.
"""

from __future__ import annotations

import ast
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from dslc.backends import torch as tb  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "torch"
SPECS = sorted((ROOT / "specs").glob("*.dl"))
EXAMPLES = sorted((ROOT / "examples").glob("*.dl"))
GOLDEN_SPECS = [ROOT / "specs" / "digits_cnn.dl", ROOT / "specs" / "rnn_simple.dl",
                GOLDEN / "graph_features.dl"]


@pytest.mark.parametrize("path", GOLDEN_SPECS, ids=lambda p: p.stem)
def test_golden_source(path):
    spec = compile_file(path)
    source = tb.generate(spec, spec.model())
    golden = GOLDEN / f"{path.stem}.py.txt"
    if os.environ.get("DSLC_REGEN_GOLDEN"):
        golden.write_text(source, encoding="utf-8")
    assert golden.exists(), f"run with DSLC_REGEN_GOLDEN=1 to create {golden.name}"
    assert source == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", SPECS + EXAMPLES + [GOLDEN / "graph_features.dl"],
                         ids=lambda p: p.stem)
def test_every_spec_compiles_and_counts_match_check(path, tmp_path):
    spec = compile_file(path)
    for graph in spec.models.values():
        _check_module(spec, graph, tmp_path)


def _check_module(spec, graph, tmp_path):
    source = tb.generate(spec, graph)
    out = tmp_path / f"{graph.name}.py"
    out.write_text(source)
    py_compile.compile(str(out), doraise=True)
    # imports only torch (and the standard library)
    tree = ast.parse(source)
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    assert roots <= {"torch"} | set(sys.stdlib_module_names)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert [c.name for c in classes] == [tb.codegen.class_name(graph.name)]
    module = tb.load_module(graph, source)()  # no constructor arguments
    assert sum(p.numel() for p in module.parameters()) == graph.param_count
    # submodules are named after the spec's layers
    owners = {n.name for n in graph.nodes if n.params}
    assert owners <= {name for name, _ in module.named_children()}


def test_generated_sources_pass_ruff(tmp_path):
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    for path in SPECS + EXAMPLES + [GOLDEN / "graph_features.dl"]:
        spec = compile_file(path)
        for graph in spec.models.values():
            (tmp_path / f"{graph.name}.py").write_text(tb.generate(spec, graph))
    from test_torch_ops import CASES, _graph

    for case, (header, body) in CASES.items():
        (tmp_path / f"case_{case}.py").write_text(tb.generate(None, _graph(header, body)))
    res = subprocess.run([ruff, "check", "--no-cache", "--isolated", "--select", "E,F,W,I,B,UP",
                          "--line-length", "100", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_cli_compile_writes_the_module(tmp_path, dslc):
    res = dslc("compile", ROOT / "specs" / "digits_mlp.dl", "--target", "torch", "-o", tmp_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "digits_mlp.py"
    assert out.exists() and "class DigitsMlp(nn.Module):" in out.read_text()
    # standalone: runs in a fresh interpreter and never imports dslc
    code = ("import sys, torch; "
            "import digits_mlp; m = digits_mlp.DigitsMlp().eval(); "
            "y = m(torch.zeros(2, 64)); assert y.shape == (2, 10); "
            "assert 'dslc' not in sys.modules; print(round(float(y.sum()), 4))")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "2.0"  # softmax rows sum to 1


def test_standalone_module_starts_from_the_spec_initialisers():
    """A user who instantiates the generated class gets the spec's initialisers, not torch's."""
    import math

    import torch

    from dslc.compiler import compile_text

    spec = compile_text("model inits { input x: f32[400]\n"
                        " a = dense(300, kernel_init=he_normal, bias_init=ones)\n"
                        " b = dense(200, kernel_init=glorot_uniform)\n"
                        " dense(100, kernel_init=lecun_uniform) }", "inits.dl")
    graph = spec.model()
    torch.manual_seed(0)
    module = tb.instantiate(graph)
    module.reset_parameters()
    w_a, w_b = module.a.weight.detach(), module.b.weight.detach()
    assert abs(w_a.std().item() - math.sqrt(2 / 400)) < 0.003
    assert torch.all(module.a.bias == 1)
    bound = math.sqrt(6 / (300 + 200))
    assert w_b.abs().max().item() <= bound * 1.00001 and w_b.abs().max().item() > 0.95 * bound
    lecun = math.sqrt(3 / 200)
    w_c = module.dense_1.weight.detach()
    assert w_c.abs().max().item() <= lecun * 1.00001 and w_c.abs().max().item() > 0.95 * lecun
