"""Names and layout in the generated torch and Keras sources: aliases of the reusable
temporary, nn.Module's private attributes, buffer names, exhausted temporaries, keyword
model names, comments and long lines. Each case compiles a tiny spec, checks both sources
with py_compile and ruff, and runs all three backends on the same weights (`dslc.verify`),
comparing every output."""

from __future__ import annotations

import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("onnxruntime")

from dslc import verify  # noqa: E402
from dslc.backends import get_backend  # noqa: E402
from dslc.backends.torch.codegen import MODULE_ATTRS, module_attrs  # noqa: E402
from dslc.backends.torch.runtime import load_module  # noqa: E402
from dslc.backends.torch.weights import state_dict_keys  # noqa: E402
from dslc.compiler import compile_text  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

RUFF = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")


def _ruff(*args: str) -> None:
    if not Path(RUFF).exists():
        return
    res = subprocess.run([RUFF, *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _sources(text: str, tmp_path: Path):
    """The graph and both generated sources, checked by py_compile and ruff."""
    graph = compile_text(text, "case.dl").model()
    torch_src = get_backend("torch").generate(None, graph)
    keras_src = get_backend("keras").generate(None, graph)
    torch_py, keras_py = tmp_path / "gen_torch.py", tmp_path / "gen_keras.py"
    torch_py.write_text(torch_src, encoding="utf-8")
    keras_py.write_text(keras_src, encoding="utf-8")
    for path in (torch_py, keras_py):
        py_compile.compile(str(path), doraise=True)
    # as tests/test_torch_codegen.py and tests/test_keras_codegen.py check them
    _ruff("check", "--no-cache", "--isolated", "--select", "E,F,W,I,B,UP", "--line-length",
          "100", str(torch_py))
    _ruff("check", "--no-cache", "--isolated", str(keras_py))
    _ruff("format", "--check", "--no-cache", "--isolated", str(keras_py))
    return graph, torch_src, keras_src


def _agree(graph) -> list[np.ndarray]:
    """Every output of every backend, same weights, same batch: all within 1e-5."""
    weights = init_weights(graph, 0)
    xs = verify.seeded_batch(graph, 3, 0)
    feed = xs[0] if len(xs) == 1 else xs
    outs = {name: get_backend(name).build(graph, weights).predict_all(feed)
            for name in ("torch", "keras", "onnx")}
    for name in ("keras", "onnx"):
        assert len(outs[name]) == len(outs["torch"]) == len(graph.outputs)
        for out, a, b in zip(graph.outputs, outs["torch"], outs[name], strict=True):
            assert verify.max_abs_diff(a, b) <= 1e-5, f"torch vs {name}: output {out}"
    report = verify.run_backends(graph, weights, xs, tolerance=verify.Tolerance(1e-5, 0.0))
    assert report.within(), report.pairs
    return outs["torch"]


def _check(text: str, tmp_path: Path):
    graph, torch_src, keras_src = _sources(text, tmp_path)
    _agree(graph)
    return graph, torch_src, keras_src


# 1. an identity read again later must not alias the reusable temporary


def test_linear_that_branches_keeps_its_own_value(tmp_path):
    graph, src, _ = _check("model linear_alias { input inp: f32[4]\n c = dense(inp, 4)\n"
                           " l = linear(c)\n p = dense(l, 4)\n q = dense(p, 4)\n"
                           " r = dense(l, 4)\n output r, q }", tmp_path)
    # `r` reads the identity's value (c's), not the temporary that `p` overwrote
    assert "r = self.r(c)" in src


@pytest.mark.parametrize("body", [
    "a = dense(x, 3)\n d = dropout(a, 0.5)\n output a, d",
    "a = dense(x, 3)\n d1 = dropout(a, 0.1)\n d2 = linear(a)\n output d1, d2",
    "a = dense(x, 4)\n l = linear(a)\n m = linear(l)\n b = dense(m, 4)\n c = dense(b, 4)\n"
    " e = dense(m, 4)\n output e, c",
    "a = dense(x, 4)\n f = flatten(a)\n b = dense(f, 4)\n c = dense(b, 4)\n g = dense(f, 4)\n"
    " output g, c",
    "a = dense(x, 4)\n f = reshape(a, [4])\n b = dense(f, 4)\n c = dense(b, 4)\n"
    " g = dense(f, 4)\n output g, c",
], ids=["dropout", "dropout_linear", "linear_linear", "flatten_flat", "reshape_same"])
def test_pass_through_ops_that_branch(body, tmp_path):
    _check(f"model m {{ input x: f32[4]\n {body} }}", tmp_path)


# 2. comments are never wrapped as code


def test_rnn_comment_with_a_long_layer_name(tmp_path):
    name = "recurrent_" + "r" * 50
    graph, src, _ = _check(f"model m {{ input seq: f32[3, 2]\n"
                           f" {name} = simple_rnn(seq, 3)\n dense(2) }}", tmp_path)
    for line in src.splitlines():
        if line.lstrip().startswith("#") and name in line:
            assert line.lstrip().startswith(f"# {name}:")
    assert all(len(line) <= 100 for line in src.splitlines())


def test_avgpool_comment_with_a_long_layer_name(tmp_path):
    name = "pool_" + "p" * 60
    _check(f"model m {{ input image: f32[5, 5, 1]\n"
           f" {name} = avgpool2d(image, 2, strides=2, padding=same)\n flatten\n dense(2) }}",
           tmp_path)


# 3. attributes that would break nn.Module


@pytest.mark.parametrize("names", [
    ["_modules", "_parameters", "__class__"],
    ["_buffers", "_call_impl", "__hidden"],
    ["reset_parameters", "forward", "_"],
    ["_a", "a", "a_"],
])
def test_layer_names_that_would_break_the_module(names, tmp_path):
    body = f" {names[0]} = dense(x, 4)\n"
    body += "".join(f" {b} = dense({a}, 4)\n" for a, b in zip(names, names[1:]))
    graph, src, _ = _check(f"model priv {{ input x: f32[4]\n{body} dense(2) }}", tmp_path)
    attrs = module_attrs(graph)
    assert len(set(attrs.values())) == len(attrs)
    for layer, attr in attrs.items():
        assert not attr.startswith("_") and attr.isidentifier()
        assert attr not in MODULE_ATTRS
        if layer.isidentifier() and not layer.startswith("_") and \
                layer not in MODULE_ATTRS:
            assert attr == layer  # a safe name is never taken by a renamed one
    # canonical `<layer>.<param>` keys map onto the module's state_dict
    module = load_module(graph, src)()
    keys = state_dict_keys(graph)
    assert set(keys.values()) == set(module.state_dict())
    assert set(keys) == set(init_weights(graph, 0))


def test_every_public_module_attribute_is_reserved():
    from torch import nn

    public = {n for n in dir(nn.Module()) if not n.startswith("_")}
    assert public <= MODULE_ATTRS
    assert "reset_parameters" in MODULE_ATTRS


# 4. buffers never take a spec name


def test_avgpool_buffer_does_not_collide_with_a_layer(tmp_path):
    graph, src, _ = _check("model avgreal { input image: f32[7, 7, 2]\n"
                           " p = avgpool2d(2, strides=2, padding=same)\n"
                           " p_real = conv2d(p, 3, kernel=2, padding=same)\n"
                           " flatten\n dense(3) }", tmp_path)
    assert "self.p_real = nn.Conv2d(" in src
    assert 'self.register_buffer("p_real",' not in src


# 5. a temporary when every candidate is taken


def test_temporary_when_all_candidates_are_spec_names(tmp_path):
    _check("model temps { input x: f32[4]\n h = dense(x, 4)\n y = dense(h, 4)\n"
           " z = dense(y, 4)\n out_ = dense(z, 4)\n a = dense(out_, 4)\n b = dense(a, 4)\n"
           " c = dense(b, 4)\n output h, y, z, out_, c }", tmp_path)


# 6. a model named after a Python keyword


def test_keyword_model_name(tmp_path):
    from dslc.backends.keras.codegen import model_function

    graph, _, keras_src = _check("model class { input import: f32[3]\n"
                                 " torch = dense(import, 4, activation=relu)\n"
                                 " keras = dense(torch, 2) }", tmp_path)
    assert model_function(graph) == "build_class"
    assert "def build_class() -> keras.Model:" in keras_src


# 7. long lines


def test_long_torch_return_is_a_tuple(tmp_path):
    names = [f"output_{c * 12}" for c in "abcde"]
    body = "".join(f" {n} = conv2d(image, 2, kernel=1)\n" for n in names)
    graph, src, _ = _check(f"model m {{ input image: f32[2, 2, 1]\n{body}"
                           f" output {', '.join(names)} }}", tmp_path)
    lines = src.splitlines()
    start = lines.index("        return (")
    assert lines[start + 1:start + 6] == [f"            {n}.permute(0, 2, 3, 1)," for n in names]
    assert lines[start + 6] == "        )"


def test_long_keras_inputs_and_lists_are_wrapped(tmp_path):
    a, b, c = ("input_" + "a" * 60, "input_" + "b" * 60, "input_" + "c" * 60)
    graph, src, keras_src = _check(
        f"model m {{ input {a}: f32[4]\n input {b}: f32[4]\n input {c}: f32[4]\n"
        f" s = add({a}, {b}, {c})\n k = concat({a}, {b}, {c})\n output s, k }}", tmp_path)
    assert all(len(line) <= 100 for line in keras_src.splitlines())
    assert all(len(line) <= 100 for line in src.splitlines())
    assert f"{a} = keras.Input(\n" in keras_src


def test_fused_recurrent_kernels_leave_no_unused_names(tmp_path):
    # `seq, h = torch.gru(...)` kept the half not used: ruff's default rules (RUF059) flagged it
    graph = compile_text("""
model rnns {
    input x: f32[5, 3]
    a = lstm(x, 4, return_sequences=true)
    b = gru(a, 4, return_sequences=true)
    c = simple_rnn(b, 4, return_sequences=true)
    d = lstm(c, 3)
    e = gru(c, 3)
    f = simple_rnn(c, 3)
    output d, e, f
}
""", "rnns.dl").model()
    path = tmp_path / "rnns.py"
    path.write_text(get_backend("torch").generate(None, graph), encoding="utf-8")
    _ruff("check", "--no-cache", "--isolated", "--extend-select", "RUF", "--line-length", "100",
          str(path))
    _agree(graph)
