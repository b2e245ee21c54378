"""The standard library (dslc/std, `use "std/<name>.dl"`): plain .dl blocks that resolve from
the package, check, show their block calls in `check --json`, and give the same numbers on
every backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, run_dslc

from dslc import stdlib
from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.fmt import format_text
from dslc.ir import ast
from dslc.ops import find_op
from dslc.parse import parse

STD = sorted((ROOT / "dslc" / "std").glob("*.dl"))

# One small model per module, calling each of its blocks (and their parameters) at least once.
MODELS = {
    "mlp": """use "std/mlp.dl"
model m {
    input x: f32[5]
    mlp([8, 6])
    mlp([4], activation=tanh)
    dense(3)
}
""",
    "vgg": """use "std/vgg.dl"
model m {
    input image: f32[8, 8, 2]
    vgg(4)
    vgg(6, convs=1)
    flatten
    dense(3)
}
""",
    "resnet": """use "std/resnet.dl"
model m {
    input image: f32[7, 7, 3]
    conv2d(4, kernel=1)
    resnet_basic(4)
    resnet_down(6)
    resnet_down(8, strides=1)
    resnet_basic(8)
    global_avgpool2d
    dense(3)
}
""",
    "transformer": """use "std/transformer.dl"
model m {
    input s: f32[5, 8]
    enc1 = transformer_encoder(2, 8, 16)
    enc2 = transformer_encoder(4, 8, 12, dropout=0.0)
    flatten
    dense(3)
}
""",
}

HAS_ATTENTION = find_op("multi_head_attention") is not None
NEEDS_ATTENTION = {"transformer"}


def _skip_without_attention(name: str) -> None:
    if name in NEEDS_ATTENTION and not HAS_ATTENTION:
        pytest.skip("the op multi_head_attention is not registered yet")


def _std_blocks() -> dict[str, str]:
    """block name → module stem, read from the files themselves."""
    return {item.name: path.stem for path in STD
            for item in parse(path.read_text(encoding="utf-8"), str(path)).items
            if isinstance(item, ast.Block)}


def test_the_library_has_what_the_issue_asks_for():
    assert {f"std/{p.name}" for p in STD} == set(stdlib.modules())
    assert {"mlp", "vgg", "resnet_basic", "resnet_down", "transformer_encoder"} <= set(
        _std_blocks())


def test_every_block_has_a_model_here():
    for block, module in _std_blocks().items():
        assert module in MODELS and f"{block}(" in MODELS[module], block


@pytest.mark.parametrize("path", STD, ids=[p.stem for p in STD])
def test_std_files_are_formatted_and_documented(path):
    text = path.read_text(encoding="utf-8")
    assert format_text(text, str(path)) == text
    assert text.startswith("#")  # what the blocks are, and whose definition they follow


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_module_checks(name, tmp_path):
    _skip_without_attention(name)
    graph = compile_text(MODELS[name], tmp_path / "m.dl").model()
    made = {b.block for n in graph.nodes for b in n.blocks}
    assert made == {b for b, m in _std_blocks().items() if m == name}


def test_block_shapes_and_parameters(tmp_path):
    graph = compile_text(MODELS["resnet"], tmp_path / "m.dl").model()
    shapes = {n.name: n.type.shape for n in graph.nodes}
    assert shapes["resnet_down_1_conv1"] == (4, 4, 6)  # 7x7, strides 2, same: ceil(7 / 2)
    assert shapes["resnet_down_1_shortcut"] == (4, 4, 6)
    assert shapes["resnet_down_2_relu_1"] == (4, 4, 8)
    assert graph.node("resnet_down_2_shortcut").param_count == 6 * 8 + 8  # 1x1 projection
    graph = compile_text(MODELS["vgg"], tmp_path / "m.dl").model()
    assert [n.type.shape for n in graph.nodes if n.op == "maxpool2d"] == [(4, 4, 4), (2, 2, 6)]
    graph = compile_text(MODELS["mlp"], tmp_path / "m.dl").model()
    assert [(n.attrs.units, n.attrs.activation) for n in graph.nodes] == [
        (8, "relu"), (6, "relu"), (4, "tanh"), (3, "linear")]
    assert [n.name for n in graph.nodes] == ["mlp_1_dense_1", "mlp_1_dense_2", "mlp_2_dense_1",
                                             "dense_1"]


def test_mlp_takes_a_list_of_widths(tmp_path):
    call = 'use "std/mlp.dl"\nmodel m {{\n    input x: f32[4]\n    {}\n    dense(1)\n}}\n'
    graph = compile_text(call.format("mlp([16, 8, 4, 2])"), tmp_path / "m.dl").model()
    assert [n.attrs.units for n in graph.nodes] == [16, 8, 4, 2, 1]
    err = _error(call.format("mlp(8)"), tmp_path)
    assert "4:9: error: `units` of block `mlp` is list, got `8`" in err
    assert "write a list, e.g. `[8]`" in err
    err = _error(call.format("mlp([])"), tmp_path)
    assert "4:5: error: `for` over an empty list would make no layers (in block `mlp`, " \
           "std/mlp.dl line " in err
    err = _error(call.format('mlp([8, "wide"])'), tmp_path)
    assert "4:5: error: `units` of `dense`" in err and "(in block `mlp`" in err


def test_transformer_encoder_is_post_norm(tmp_path):
    _skip_without_attention("transformer")
    graph = compile_text(MODELS["transformer"], tmp_path / "m.dl").model()
    enc1 = [n for n in graph.nodes if n.blocks and n.blocks[0].instance == "enc1"]
    assert [n.op for n in enc1] == ["multi_head_attention", "dropout", "add", "layer_norm",
                                    "dense", "dense", "dropout", "add", "layer_norm"]
    assert enc1[-1].name == "enc1_norm2" and enc1[-1].type.shape == (5, 8)
    assert graph.node("enc1_attention").attrs.key_dim == 4


def test_check_json_shows_each_layers_block_calls(tmp_path):
    spec = tmp_path / "m.dl"
    spec.write_text('use "std/resnet.dl"\n'
                    "block stage(filters: int) {\n    input x\n    resnet_down(filters)\n"
                    "    resnet_basic(filters)\n}\n"
                    "model m {\n    input image: f32[8, 8, 3]\n    s1 = stage(4)\n"
                    "    global_avgpool2d\n    dense(2)\n}\n")
    proc = run_dslc("check", "--json", spec)
    assert proc.returncode == 0, proc.stderr
    layers = {la["name"]: la["blocks"] for la in json.loads(proc.stdout)["models"][0]["layers"]}
    assert layers["image"] == [] and layers["dense_1"] == []
    assert layers["s1_resnet_basic_1_conv2"] == [
        {"instance": "s1", "block": "stage"},
        {"instance": "s1_resnet_basic_1", "block": "resnet_basic"}]
    assert layers["s1_resnet_down_1_shortcut"][-1]["block"] == "resnet_down"


def _error(text: str, tmp_path, name="m.dl") -> str:
    spec = tmp_path / name
    spec.write_text(text)
    proc = run_dslc("check", spec)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    return proc.stderr


BODY = "model m {\n    input x: f32[4]\n    mlp([3, 3])\n}\n"


def test_an_unknown_module_lists_the_library(tmp_path):
    err = _error('use "std/mpl.dl"\n' + BODY, tmp_path)
    assert f"{tmp_path / 'm.dl'}:1:1: error: no module `std/mpl.dl` in the standard library" in err
    assert "did you mean `std/mlp.dl`?" in err
    for module in stdlib.modules():
        assert f"`{module}`" in err
    assert 'use "./std/mpl.dl"' in err


def test_a_module_named_without_its_suffix(tmp_path):
    err = _error('use "std/mlp"\n' + BODY, tmp_path)
    assert "no module `std/mlp`" in err and 'write `use "std/mlp.dl"`' in err


def test_the_packaged_library_wins_over_a_local_std_folder(tmp_path):
    (tmp_path / "std").mkdir()
    (tmp_path / "std" / "mlp.dl").write_text("block mlp(units: list) {\n    input x\n"
                                             "    dense(99)\n}\n")
    spec = compile_text('use "std/mlp.dl"\n' + BODY, tmp_path / "m.dl")
    assert [n.attrs.units for n in spec.model().nodes] == [3, 3]
    spec = compile_text('use "./std/mlp.dl"\n' + BODY, tmp_path / "m.dl")
    assert [n.attrs.units for n in spec.model().nodes] == [99]


def test_names_outside_the_library_are_not_reached(tmp_path):
    for name in ("std/../stdlib.py", "std/../../pyproject.toml", "std/", "std/x/../mlp.dl"):
        with pytest.raises(DslError, match="no module"):
            compile_text(f'use "{name}"\n' + BODY, tmp_path / "m.dl")


def test_an_error_inside_a_std_block_points_at_the_call(tmp_path):
    err = _error('use "std/resnet.dl"\nmodel m {\n    input image: f32[8, 8, 3]\n'
                 "    resnet_basic(16)\n    global_avgpool2d\n}\n", tmp_path)
    assert f"{tmp_path / 'm.dl'}:4:5: error: layer `resnet_basic_1_add_1` (add)" in err
    assert "(in block `resnet_basic`, std/resnet.dl line " in err
    assert "    resnet_basic(16)" in err  # the user's line is shown, not the library's
    err = _error('use "std/vgg.dl"\nmodel m {\n    input x: f32[8, 8, 3]\n'
                 "    vgg(4, convs=0)\n}\n", tmp_path)
    assert f"{tmp_path / 'm.dl'}:4:5: error: repeat needs a positive integer" in err


def test_a_run_folder_does_not_copy_the_library(tmp_path):
    from dslc.train.outputs import _spec_copies

    spec = compile_text(MODELS["mlp"], tmp_path / "m.dl")
    assert any(stdlib.is_std(name) for name in spec.sources)
    assert list(_spec_copies(spec).values()) == [Path("m.dl")]


def test_check_reads_the_library_without_importing_much(tmp_path):
    spec = tmp_path / "m.dl"
    spec.write_text(MODELS["resnet"])
    code = ("import sys; from dslc.cli import main; main(['check', sys.argv[1]]); "
            "import json; print(json.dumps(sorted(sys.modules)))")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True)
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    assert not {"importlib.resources", "zipfile", "torch", "keras", "tensorflow"} & loaded


@pytest.mark.parametrize("name", sorted(MODELS))
def test_verify_passes_on_every_block(name, tmp_path):
    """Same weights, same batch: every backend against the reference (as `dslc verify`)."""
    _skip_without_attention(name)
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    pytest.importorskip("onnxruntime")
    import numpy as np

    from dslc import verify
    from dslc.backends import backend_names
    from dslc.weights import init_weights

    graph = compile_text(MODELS[name], tmp_path / "m.dl").model()
    weights = init_weights(graph, 0)
    rng = np.random.default_rng(3)  # seeded init leaves biases at zero: give them values
    for key, p in graph.param_specs().items():
        if key.endswith(".bias"):
            weights[key] = rng.normal(0, 0.5, p.shape).astype(np.float32)
    report = verify.run_backends(graph, weights, verify.seeded_batch(graph, 4, 0),
                                 tolerance=verify.Tolerance(atol=1e-5, rtol=0.0))
    runners = set(backend_names(runs=True))
    assert {b for pair in report.pairs for b in pair} == runners
    assert report.within(), {k: (p.abs, p.rel) for k, p in report.pairs.items()}


def test_the_readme_example_checks(tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Standard library"):]
    example = section.split("```\n")[1]
    graph = compile_text(example, tmp_path / "m.dl").model()
    assert graph.node("stage2_conv1").blocks[0].block == "resnet_basic"
    for module in stdlib.modules():
        assert f'`"{module}"`' in section  # the table names every module


def test_the_editor_follows_a_use_of_the_library(tmp_path):
    pytest.importorskip("lsprotocol")
    from dslc.lsp import features

    text = 'use "std/resnet.dl"\n' + "model m {\n    input image: f32[8, 8, 4]\n" \
           "    resnet_basic(4)\n    global_avgpool2d\n}\n"
    a = features.analyse(text, tmp_path / "m.dl")
    resnet = (ROOT / "dslc" / "std" / "resnet.dl").resolve()
    (location,) = features.definition(a, text.index("std/resnet"))
    assert location.uri == resnet.as_uri()
    (location,) = features.definition(a, text.index("resnet_basic("))
    assert location.uri == resnet.as_uri()
    line = resnet.read_text().splitlines()[location.range.start.line]
    assert line.startswith("block resnet_basic(")
    assert features.hover(a, text.index("resnet_basic(")) is not None
    labels = {c.label for c in features.completion(a, text.index("std/resnet") + 1)}
    assert set(stdlib.modules()) <= labels
