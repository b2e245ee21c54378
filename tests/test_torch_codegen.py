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

from dslc.backends.torch import BACKEND  # noqa: E402
from dslc.backends.torch.codegen import class_name  # noqa: E402
from dslc.backends.torch.runtime import instantiate, load_module  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "torch"
SPECS = sorted((ROOT / "specs").glob("*.dl"))
EXAMPLES = sorted((ROOT / "examples").glob("*.dl"))
GOLDEN_SPECS = [ROOT / "specs" / "digits_cnn.dl", ROOT / "specs" / "rnn_simple.dl",
                ROOT / "specs" / "transformer_classifier.dl",
                GOLDEN / "graph_features.dl"]


@pytest.mark.parametrize("path", GOLDEN_SPECS, ids=lambda p: p.stem)
def test_golden_source(path):
    spec = compile_file(path)
    source = BACKEND.generate(spec, spec.model())
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
    source = BACKEND.generate(spec, graph)
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
    # the model's class last, after the layer classes it uses (batch_norm's KerasBatchNorm)
    assert classes[-1].name == class_name(graph.name)
    assert {c.name for c in classes[:-1]} <= {"KerasBatchNorm"}
    module = load_module(graph, source)()  # no constructor arguments
    # parameters are the trainable weights; the state (buffers too) is every canonical one
    assert sum(p.numel() for p in module.parameters()) == graph.trainable_param_count
    assert sum(t.numel() for t in module.state_dict().values()) == graph.param_count
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
            (tmp_path / f"{graph.name}.py").write_text(BACKEND.generate(spec, graph))
    from test_torch_ops import CASES, _graph

    for case, (header, body) in CASES.items():
        (tmp_path / f"case_{case}.py").write_text(BACKEND.generate(None, _graph(header, body)))
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
    module = instantiate(graph)
    module.reset_parameters()
    w_a, w_b = module.a.weight.detach(), module.b.weight.detach()
    assert abs(w_a.std().item() - math.sqrt(2 / 400)) < 0.003
    assert torch.all(module.a.bias == 1)
    bound = math.sqrt(6 / (300 + 200))
    assert w_b.abs().max().item() <= bound * 1.00001 and w_b.abs().max().item() > 0.95 * bound
    lecun = math.sqrt(3 / 200)
    w_c = module.dense_1.weight.detach()
    assert w_c.abs().max().item() <= lecun * 1.00001 and w_c.abs().max().item() > 0.95 * lecun


def test_writing_source_imports_no_torch(tmp_path):
    """`dslc compile --target torch` only writes text: torch stays unimported."""
    code = ("import sys; from pathlib import Path\n"
            "from dslc.backends import get_backend\n"
            "from dslc.compiler import compile_file\n"
            "spec = compile_file(sys.argv[1]); graph = spec.model()\n"
            "backend = get_backend('torch')\n"
            "assert backend.generate(spec, graph).startswith('# Generated by dslc ')\n"
            "backend.compile(spec, graph, Path(sys.argv[2]))\n"
            "backend.lowerings.missing()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'safetensors')))")
    res = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / "digits_cnn.dl"),
                          str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
    assert (tmp_path / "digits_cnn.py").exists()


def test_outside_text_cannot_inject_code(tmp_path):
    """A spec file's name reaches the header comment; it stays a comment."""
    folder = tmp_path / "spec"
    folder.mkdir()
    path = folder / 'evil\nimport os; os.system("touch PWNED")\n#.dl'
    path.write_text("model m { input x: f32[3]\n dense(2) }\n")
    spec = compile_file(path)
    source = BACKEND.generate(spec, spec.model())
    tree = ast.parse(source)
    kinds = [(type(n).__name__, getattr(n, "module", None) or [a.name for a in
                                                               getattr(n, "names", [])])
             for n in tree.body]
    assert kinds == [("Expr", []), ("Import", ["torch"]), ("ImportFrom", "torch"),
                     ("ClassDef", [])]
    assert source.splitlines()[0].startswith("# Generated by dslc ")
    assert "evil\\nimport os" in source.splitlines()[0]
    run = tmp_path / "run"
    run.mkdir()
    (run / "m.py").write_text(source)
    res = subprocess.run([sys.executable, "m.py"], cwd=run, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in run.iterdir()) == ["m.py"]


def test_compile_never_replaces_a_file_it_did_not_write(tmp_path):
    from dslc.diagnostics import DslError

    spec = compile_file(ROOT / "specs" / "digits_mlp.dl")
    (tmp_path / "digits_mlp.py").write_text("# my own code\n")
    with pytest.raises(DslError, match="was not written by dslc"):
        BACKEND.compile(spec, spec.model(), tmp_path)
    (tmp_path / "digits_mlp.py").unlink()
    assert BACKEND.compile(spec, spec.model(), tmp_path) == tmp_path / "digits_mlp.py"
    assert BACKEND.compile(spec, spec.model(), tmp_path).read_text().startswith("# Generated")
