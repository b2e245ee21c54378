"""`dslc import`: ONNX models made here with `torch.onnx.export` from hand-written modules, and
dslc's own exports, come back as specs whose weights give the same outputs (≤ 1e-5); the spec
checks; unsupported nodes and files that are not ONNX are located errors.

The exports use the TorchScript exporter (`dynamo=False`): the dynamo one needs onnxscript,
which dslc does not install, and takes seconds a model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import ROOT  # noqa: E402
from torch import nn  # noqa: E402

from dslc.backends.onnx.export import to_model  # noqa: E402
from dslc.backends.onnx.importer import import_file, import_model  # noqa: E402
from dslc.cli import main  # noqa: E402
from dslc.compiler import compile_file, compile_text  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402
from dslc.weights import load_weights  # noqa: E402

ATOL = 1e-5


def export(module: nn.Module, shapes, path, opset: int = 17, dynamic: bool = True,
           names=None) -> None:
    """`module` as an ONNX file, from PyTorch's exporter, in inference mode."""
    torch.manual_seed(0)
    module.eval()
    xs = tuple(torch.randn(2, *s) for s in shapes)
    names = names or [f"x{i}" for i in range(len(shapes))]
    axes = {n: {0: "batch"} for n in names} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, xs, str(path), dynamo=False, opset_version=opset,
                          input_names=names, dynamic_axes=axes)


def ort_run(model_bytes: bytes, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def round_trip(module: nn.Module, shapes, tmp_path, opset: int = 17, dynamic: bool = True,
               batch: int = 3):
    """torch → ONNX → spec → ONNX: every output equal to PyTorch's and to the first ONNX
    model's, the inputs converted as documented (NCHW → NHWC)."""
    path = tmp_path / "net.onnx"
    export(module, shapes, path, opset, dynamic)
    imported = import_file(path)
    rng = np.random.default_rng(1)
    n = batch if dynamic else 2
    xs = [rng.normal(size=(n, *s)).astype(np.float32) for s in shapes]
    with torch.no_grad():
        expected = module(*map(torch.from_numpy, xs))
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    first = ort_run(path.read_bytes(), {b.onnx: x for b, x in zip(imported.inputs, xs)})
    again = to_model(imported.graph, imported.weights)
    onnx.checker.check_model(again)
    feeds = {b.name: b.to_spec(x) for b, x in zip(imported.inputs, xs)}
    outs = ort_run(again.SerializeToString(), feeds)
    assert len(outs) == len(expected) == len(imported.outputs)
    for b, want, onnx_out, got in zip(imported.outputs, expected, first, outs):
        got = b.to_onnx(got)
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=ATOL)
        np.testing.assert_allclose(got, onnx_out, rtol=0, atol=ATOL)
    # The spec as written checks on its own, to the same graph.
    assert compile_text(imported.text, "again.dl").model().param_count == \
        sum(p.numel() for p in module.parameters() if p.requires_grad) - _extra_rnn_biases(module)
    return imported


def _extra_rnn_biases(module: nn.Module) -> int:
    """PyTorch's RNN keeps two biases that only appear as their sum; the spec keeps one."""
    return sum(m.hidden_size * m.num_layers * (4 if isinstance(m, nn.LSTM) else 1)
               for m in module.modules() if isinstance(m, nn.RNN | nn.LSTM) and m.bias)


def lines(imported) -> list[str]:
    return [ln.strip() for ln in imported.text.splitlines() if not ln.startswith("#")]


# -- models made with torch.onnx.export -------------------------------------------------------

class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 8, bias=False)
        self.out = nn.Linear(8, 5)

    def forward(self, x):
        return torch.softmax(self.out(torch.tanh(self.fc2(torch.relu(self.fc1(x))))), dim=1)


def test_an_mlp_comes_back_with_its_names_and_fused_activations(tmp_path):
    imported = round_trip(MLP(), [(12,)], tmp_path)
    assert lines(imported)[1:] == [
        "input x0: f32[12]",
        "fc1 = dense(16, activation=relu)",
        "fc2 = dense(8, activation=tanh, use_bias=false)",
        "out = dense(5, activation=softmax)",
        "}",
    ]


class Windows(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, (3, 1), stride=(1, 2))
        self.avg = nn.AvgPool2d(2, stride=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):  # [N, 3, 8, 8] → [N, 6, 4, 4] → [N, 8, 2, 2] → [N, 8, 1, 1]
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.avg(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class CNN2(nn.Module):
    """conv/pool/flatten/dense on 3-channel NCHW images: the flatten order matters."""

    def __init__(self, view: bool = False):
        super().__init__()
        self.view = view
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 4, 3)
        self.fc = nn.Linear(4 * 2 * 3, 10)

    def forward(self, x):  # [N, 3, 8, 10] → [N, 6, 4, 5] → [N, 4, 2, 3] → 24
        x = self.pool(torch.relu(self.conv1(x)))
        x = torch.sigmoid(self.conv2(x))
        x = x.view(x.size(0), -1) if self.view else torch.flatten(x, 1)
        return self.fc(x)


@pytest.mark.parametrize("view", [False, True], ids=["flatten", "view"])
def test_a_cnn_flattens_nchw_maps_into_a_permuted_dense_kernel(tmp_path, view):
    imported = round_trip(CNN2(view), [(3, 8, 10)], tmp_path)
    assert imported.inputs[0].axes == (0, 3, 1, 2)  # the spec takes NHWC
    assert imported.graph.inputs[0].type.shape == (8, 10, 3)
    body = lines(imported)
    assert "conv1 = conv2d(6, padding=same, activation=relu)" in body
    assert "conv2 = conv2d(4, activation=sigmoid)" in body
    assert any(ln.endswith("= flatten") for ln in body)
    assert "fc = dense(10)" in body


def test_a_frozen_batch_size_in_a_reshape_is_read_as_the_batch(tmp_path):
    # Without dynamic axes the tracer bakes the batch (2) into `view`'s shape constant.
    imported = round_trip(CNN2(view=True), [(3, 8, 10)], tmp_path, dynamic=False)
    assert imported.graph.nodes[-1].op == "dense"


def test_windows_with_strides_and_average_pooling(tmp_path):
    imported = round_trip(Windows(), [(3, 8, 8)], tmp_path)
    body = lines(imported)
    assert "conv2 = conv2d(8, kernel=[3, 1], strides=[1, 2], activation=relu)" in body
    assert "avg = avgpool2d(strides=1)" in body


def test_pooling_with_same_padding_and_a_harmless_ceil_mode(tmp_path):
    module = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                           nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                           nn.MaxPool2d(2, ceil_mode=True))  # 8 / 2: ceil and floor agree
    imported = round_trip(module, [(2, 8, 8)], tmp_path)
    assert lines(imported)[2:5] == ["n0 = maxpool2d(3, strides=1, padding=same)",
                                    "n1 = avgpool2d(3, strides=1, padding=same)",
                                    "n2 = maxpool2d"]


class Branches(nn.Module):
    """Two branches added, concatenated with a third, global pooling, layer norm."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)
        self.c = nn.Conv2d(4, 3, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.norm = nn.LayerNorm(7)
        self.head = nn.Linear(7, 3)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        y = self.a(s) + self.b(s)
        z = torch.cat([self.act(y), nn.functional.elu(self.c(s))], dim=1)
        g = self.gap(z).flatten(1)
        m = z.mean(dim=(2, 3))
        return self.head(self.norm(g + m)), torch.sigmoid(y)


def test_branches_add_concat_and_global_pooling(tmp_path):
    imported = round_trip(Branches(), [(2, 6, 6)], tmp_path)
    ops = [n.op for n in imported.graph.nodes]
    assert ops.count("add") == 2 and "concat" in ops and ops.count("global_avgpool2d") == 2
    assert "layer_norm" in ops and "leaky_relu" in ops
    body = lines(imported)
    assert "c = conv2d(stem, 3, kernel=1, activation=elu)" in body
    assert any("leaky_relu(0.2)" in ln for ln in body)
    assert any("layer_norm(epsilon=1e-05)" in ln for ln in body)
    # An image output leaves NCHW in the ONNX model and channels-last in the spec.
    assert imported.outputs[1].axes == (0, 3, 1, 2)


class Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return nn.functional.gelu(self.fc(x))


@pytest.mark.parametrize("opset", [17, 20])
def test_gelu_as_erf_arithmetic_or_as_one_op(tmp_path, opset):
    # Before opset 20 PyTorch writes GELU as x * 0.5 * (1 + erf(x / sqrt(2))).
    imported = round_trip(Gelu(), [(6,)], tmp_path, opset=opset)
    assert lines(imported)[2] == "fc = dense(6, activation=gelu)"


class Sequence(nn.Module):
    """Linear on every step of a sequence: MatMul then Add, the Add is the bias."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, x):
        return self.norm(torch.relu(self.proj(x)))


def test_a_linear_on_a_sequence_is_matmul_plus_bias(tmp_path):
    imported = round_trip(Sequence(), [(5, 3)], tmp_path)
    assert lines(imported)[2] == "proj = dense(4, activation=relu)"


class RNN(nn.Module):
    def __init__(self, batch_first=True, last="index", layers=1, nonlinearity="tanh"):
        super().__init__()
        self.batch_first, self.last = batch_first, last
        self.rnn = nn.RNN(3, 5, num_layers=layers, batch_first=batch_first,
                          nonlinearity=nonlinearity)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        out, h = self.rnn(x)
        if self.last == "state":
            return self.fc(h[-1])
        if self.last == "sequence":
            return self.fc(out)
        return self.fc(out[:, -1] if self.batch_first else out[-1])


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("last", ["index", "state", "sequence"])
def test_an_rnn_is_a_simple_rnn_with_one_bias(tmp_path, batch_first, last):
    module = RNN(batch_first, last)
    if batch_first:
        imported = round_trip(module, [(7, 3)], tmp_path)
    else:  # time-major: the ONNX input is [T, N, F], the spec's [N, T, F]
        imported = _time_major_round_trip(module, tmp_path)
    rnn = imported.graph.nodes[0]
    assert rnn.op == "simple_rnn" and rnn.attrs.return_sequences == (last == "sequence")
    assert rnn.param_count == 3 * 5 + 5 * 5 + 5


def _time_major_round_trip(module, tmp_path):
    path = tmp_path / "rnn.onnx"
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(7, 2, 3),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {1: "batch"}})
    imported = import_file(path)
    assert imported.inputs[0].axes == (1, 0, 2)
    x = np.random.default_rng(2).normal(size=(7, 4, 3)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    model = to_model(imported.graph, imported.weights)
    (got,) = ort_run(model.SerializeToString(), {"x": imported.inputs[0].to_spec(x)})
    np.testing.assert_allclose(imported.outputs[0].to_onnx(got), want, rtol=0, atol=ATOL)
    return imported


class Gated(nn.Module):
    """nn.LSTM or nn.GRU (PyTorch's gate orders, which its exporter moves to ONNX's)."""

    def __init__(self, kind, batch_first=True, last="index", layers=1, bias=True):
        super().__init__()
        self.batch_first, self.last = batch_first, last
        self.rnn = kind(3, 5, num_layers=layers, batch_first=batch_first, bias=bias)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        out, h = self.rnn(x)
        if self.last == "state":
            return self.fc((h[0] if isinstance(h, tuple) else h)[-1])
        if self.last == "sequence":
            return self.fc(out)
        return self.fc(out[:, -1] if self.batch_first else out[-1])


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU], ids=["lstm", "gru"])
@pytest.mark.parametrize("batch_first, last", [(True, "index"), (True, "state"),
                                               (True, "sequence"), (False, "index")])
def test_torch_lstm_and_gru_come_back(tmp_path, kind, batch_first, last):
    module = Gated(kind, batch_first, last)
    if batch_first:
        imported = round_trip(module, [(7, 3)], tmp_path)
    else:
        imported = _time_major_round_trip(module, tmp_path)
    layer = imported.graph.nodes[0]
    assert layer.op == kind.__name__.lower() and layer.attrs.return_sequences == (last == "sequence")
    if kind is nn.GRU:  # PyTorch's GRU is Keras's reset_after form, both biases kept
        assert layer.attrs.reset_after and layer.param_count == 3 * 15 + 5 * 15 + 2 * 15


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU], ids=["lstm", "gru"])
def test_stacked_torch_lstms_and_grus_without_bias(tmp_path, kind):
    imported = round_trip(Gated(kind, layers=2, bias=False), [(6, 3)], tmp_path)
    first, second = imported.graph.nodes[:2]
    assert first.attrs.return_sequences and not second.attrs.return_sequences
    assert not first.attrs.use_bias and not second.attrs.use_bias


def test_a_bidirectional_lstm_is_a_located_error(tmp_path, capsys):
    module = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    export(module, [(5, 3)], tmp_path / "bi.onnx")
    assert main(["import", str(tmp_path / "bi.onnx"), "-o", str(tmp_path / "bi.dl")]) == 2
    err = capsys.readouterr().err
    assert "bi.onnx: node " in err and "(LSTM): runs bidirectional" in err
    assert "Traceback" not in err


def test_stacked_relu_rnns(tmp_path):
    imported = round_trip(RNN(layers=2, nonlinearity="relu"), [(6, 3)], tmp_path)
    first, second = imported.graph.nodes[:2]
    assert first.attrs.return_sequences and first.attrs.activation == "relu"
    assert not second.attrs.return_sequences


# -- dslc's own exports -----------------------------------------------------------------------

SPECS = sorted((ROOT / "specs").glob("*.dl")) + sorted((ROOT / "examples").glob("*.dl"))

EXTRA = """
model extras {
    input image: f32[7, 9, 3]
    a = conv2d(image, 4, kernel=[3, 2], strides=2, padding=same)
    b = leaky_relu(a)
    c = avgpool2d(b, 3, strides=2, padding=same)
    d = maxpool2d(b, 2, strides=1, padding=same)
    e = global_maxpool2d(d)
    f = concat(global_avgpool2d(c), e)
    g = layer_norm(f, center=false)
    h = dropout(g, 0.5)
    i = dense(h, 6, use_bias=false, activation=gelu)
    r = reshape(i, [3, 2])
    s = simple_rnn(r, 4, return_sequences=true, activation=linear)
    t = dense(s, 2, activation=elu)
    output t, c
}
"""


def _sample(rng, ttype) -> np.ndarray:
    """A batch of 3 for an input: floats, or ids below every vocab here (embedding's)."""
    shape = (3, *[d or 5 for d in ttype.shape])
    if ttype.dtype.startswith("i"):
        return rng.integers(0, 5, size=shape).astype(ttype.numpy_dtype)
    return rng.normal(size=shape).astype(np.float32)


def _own_round_trip(graph):
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(size=p.shape).astype(np.float32) * 0.5
               for k, p in graph.param_specs().items()}
    for k in weights:
        if k.endswith(".moving_variance"):  # a variance: positive
            weights[k] = np.abs(weights[k]) + 0.5
    model = to_model(graph, weights)
    imported = import_model(model, f"{graph.name}.onnx")
    feeds = {i.name: _sample(rng, i.type) for i in graph.inputs}
    first = ort_run(model.SerializeToString(), feeds)
    again = ort_run(to_model(imported.graph, imported.weights).SerializeToString(),
                    {b.name: b.to_spec(feeds[b.onnx]) for b in imported.inputs})
    for b, want, got in zip(imported.outputs, first, again):
        np.testing.assert_allclose(b.to_onnx(got), want, rtol=0, atol=ATOL)
    return imported, weights


# Specs with ops `dslc import` does not read back yet: expected to fail until it does.
IMPORT_PENDING = {"transformer_classifier": "dslc import does not read position_embedding yet",
                  "lstm_classifier": "dslc import does not read masked recurrent layers yet"}
# Specs that come back as fewer layers, the same numbers: order_attention's
# `reshape([length, 1, dim])` only adds a size-1 axis (no ONNX data moves), so the
# global_avgpool2d after it reads back as a global_avgpool1d over the steps.
SIMPLER = {"order_attention": lambda layers: [
    (name, "global_avgpool1d" if op == "global_avgpool2d" else op)
    for name, op in layers if op != "reshape"]}


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.xfail(reason=IMPORT_PENDING[p.stem], strict=True,
                                            raises=DslError))
    if p.stem in IMPORT_PENDING else p for p in SPECS], ids=[p.stem for p in SPECS])
def test_dslc_exports_come_back_as_the_same_model(path):
    for graph in compile_file(path).models.values():
        imported, weights = _own_round_trip(graph)
        # Same layers, same names, same canonical weights (dropout has no ONNX node).
        kept = [(n.name, n.op) for n in graph.nodes if n.op != "dropout"]
        if path.stem in SIMPLER:
            kept = SIMPLER[path.stem](kept)
        assert [(n.name, n.op) for n in imported.graph.nodes] == kept
        assert imported.name == graph.name
        assert set(imported.weights) == set(weights)
        for key, w in weights.items():
            np.testing.assert_array_equal(imported.weights[key], w)


def test_dslc_exports_of_every_layout_case():
    graph = compile_text(EXTRA, "extras.dl").model()
    imported, _ = _own_round_trip(graph)
    assert imported.outputs[1].identity  # dslc's ONNX outputs are channels-last already
    assert imported.graph.param_count == graph.param_count
    body = lines(imported)
    # b = leaky_relu(a) is a's only reader: it becomes a's activation, b's readers read a.
    assert "a = conv2d(4, kernel=[3, 2], strides=2, padding=same, activation=leaky_relu)" in body
    assert "d = maxpool2d(a, strides=1, padding=same)" in body
    assert "s = simple_rnn(4, activation=linear, return_sequences=true)" in body


# -- the command ------------------------------------------------------------------------------

def test_the_command_writes_a_spec_that_checks_and_its_weights(tmp_path, capsys):
    export(CNN2(), [(3, 8, 10)], tmp_path / "cnn.onnx")
    spec, weights = tmp_path / "out" / "cnn.dl", tmp_path / "out" / "cnn.safetensors"
    assert main(["import", str(tmp_path / "cnn.onnx"), "-o", str(spec)]) == 0
    assert f"wrote {spec}" in capsys.readouterr().out
    text = spec.read_text()
    assert text.startswith("# Imported by `dslc import` from cnn.onnx (pytorch ")
    assert "Input `x0` is the ONNX input `x0` [N, 3, 8, 10] as [N, 8, 10, 3]" in text
    assert main(["check", str(spec)]) == 0
    assert "total params: 638" in capsys.readouterr().out
    load_weights(weights, compile_file(spec).model())

    # Existing files are kept without --force, and named.
    assert main(["import", str(tmp_path / "cnn.onnx"), "-o", str(spec)]) == 2
    assert "already exists" in capsys.readouterr().err
    custom = tmp_path / "w.safetensors"
    assert main(["import", str(tmp_path / "cnn.onnx"), "-o", str(spec), "--weights",
                 str(custom), "--force"]) == 0
    assert custom.is_file()


def test_the_command_through_a_subprocess(dslc, tmp_path):
    export(MLP(), [(12,)], tmp_path / "mlp.onnx")
    r = dslc("import", tmp_path / "mlp.onnx", "-o", tmp_path / "mlp.dl")
    assert r.returncode == 0, r.stderr
    r = dslc("check", tmp_path / "mlp.dl")
    assert r.returncode == 0, r.stderr
    assert "total params: 381" in r.stdout


def _cos_model():
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first"),
             helper.make_node("Cos", ["r"], ["y"], name="the_cos")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_unsupported_node_is_named_with_its_place(tmp_path, capsys):
    path = tmp_path / "cos.onnx"
    onnx.save(_cos_model(), str(path))
    assert main(["import", str(path), "-o", str(tmp_path / "cos.dl")]) == 2
    err = capsys.readouterr().err
    assert "cos.onnx: node 1 `the_cos` (Cos): ONNX op `Cos` is not supported by dslc import" \
        in err
    assert "hint: dslc import reads " in err and "Traceback" not in err
    assert not (tmp_path / "cos.dl").exists() and not (tmp_path / "cos.safetensors").exists()


def test_batch_norm_after_a_linear_imports(tmp_path, capsys):
    module = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    export(module, [(4,)], tmp_path / "bn.onnx")
    assert main(["import", str(tmp_path / "bn.onnx"), "-o", str(tmp_path / "bn.dl")]) == 0
    assert "batch_norm(momentum=0.9, epsilon=1e-05)" in (tmp_path / "bn.dl").read_text()


@pytest.mark.parametrize("content, why", [
    (b"model m { input x: f32[2] }\n", "not an ONNX model"),
    (b"", "not an ONNX model"),
    (bytes(range(256)) * 4, "not an ONNX model"),
])
def test_a_file_that_is_not_onnx_is_a_clear_error(tmp_path, capsys, content, why):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    assert main(["import", str(path), "-o", str(tmp_path / "m.dl")]) == 2
    err = capsys.readouterr().err
    assert f"model.onnx: {why}" in err and "Traceback" not in err


def test_a_missing_file_and_a_folder(tmp_path, capsys):
    assert main(["import", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "m.dl")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["import", str(tmp_path), "-o", str(tmp_path / "m.dl")]) == 2
    assert "not a regular file" in capsys.readouterr().err


class Strided(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, **kw)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("module, size, message", [
    (Strided(stride=2, padding=1), 8, "pads [1, 1, 1, 1] (top, left, bottom, right) are "
                                      "neither none nor TensorFlow's `same` padding for this "
                                      "input, [0, 0, 1, 1]"),
    (Strided(padding=(0, 1)), 8, "pads [0, 1, 0, 1]"),
    (nn.MaxPool2d(2, ceil_mode=True), 7, "ceil_mode=1"),
    (nn.AvgPool2d(3, stride=1, padding=1), 8, "count_include_pad=1"),
])
def test_windows_dslc_cannot_express_are_located_errors(tmp_path, capsys, module, size,
                                                        message):
    export(module, [(1, size, size)], tmp_path / "w.onnx")
    assert main(["import", str(tmp_path / "w.onnx"), "-o", str(tmp_path / "w.dl")]) == 2
    err = capsys.readouterr().err
    assert "w.onnx: node 0 `" in err and message in err


def test_outputs_wrong_names_and_suffixes(tmp_path, capsys):
    export(MLP(), [(12,)], tmp_path / "mlp.onnx")
    assert main(["import", str(tmp_path / "mlp.onnx"), "-o", str(tmp_path / "m.txt")]) == 2
    assert "is a .dl spec" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "mlp.onnx"), "-o", str(tmp_path / "m.dl"),
                 "--weights", str(tmp_path / "mlp.onnx")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    assert not (tmp_path / "m.dl").exists()


def test_spec_text_is_safe_from_odd_onnx_names():
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["in\nput", "w"], ["y"], name="evil\nimport os")]
    graph = helper.make_graph(nodes, "model {", [helper.make_tensor_value_info(
        "in\nput", TensorProto.FLOAT, ["N", 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="x\ny")
    imported = import_model(model, "odd\n.onnx")
    assert "import os" not in imported.text.replace("# ", "")
    assert all(ln.startswith(("#", "model", "    ", "}")) for ln in imported.text.splitlines())
    assert [n.name for n in imported.graph.nodes] == ["evil_import_os"]


def test_a_dslc_scan_rnn_says_why_it_is_not_read_back():
    graph = compile_text("model m {\n    input s: f32[4, 2]\n    simple_rnn(3, activation=gelu)\n}\n",
                         "m.dl").model()
    model = to_model(graph, {k: np.ones(p.shape, np.float32)
                             for k, p in graph.param_specs().items()})
    with pytest.raises(Exception) as err:
        import_model(model, "m.onnx")
    assert "(Scan): ONNX op `Scan` is not supported" in str(err.value)
    assert "Scan loop" in err.value.diagnostics[0].hint


class BatchNorms(nn.Module):
    """nn.BatchNorm2d after a pooling (a Conv before it would be folded into the Conv by the
    exporter) and nn.BatchNorm1d on the flattened (NCHW-ordered) features, with statistics of
    their own."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.bn2d = nn.BatchNorm2d(3)
        self.bn1d = nn.BatchNorm1d(12)
        self.head = nn.Linear(12, 2)
        for bn in (self.bn2d, self.bn1d):
            n = bn.num_features
            bn.running_mean.copy_(torch.linspace(-1, 1, n))
            bn.running_var.copy_(torch.linspace(0.5, 2, n))
            nn.init.normal_(bn.weight)
            nn.init.normal_(bn.bias)

    def forward(self, x):
        return self.head(self.bn1d(self.bn2d(self.pool(x)).flatten(1)))


def test_batch_normalization_comes_back_as_batch_norm(tmp_path):
    """torch's momentum 0.1 is ONNX's (and Keras's, and dslc's) 0.9; epsilon as exported."""
    path = tmp_path / "bn.onnx"
    module = BatchNorms()
    export(module, [(3, 4, 4)], path)
    imported = import_file(path)
    bns = [n for n in imported.graph.nodes if n.op == "batch_norm"]
    assert len(bns) == 2
    assert all(n.attrs.momentum == 0.9 and n.attrs.epsilon == 1e-5 for n in bns)
    x = np.random.default_rng(1).normal(size=(3, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    again = to_model(imported.graph, imported.weights)
    onnx.checker.check_model(again, full_check=True)
    b = imported.inputs[0]
    got = imported.outputs[0].to_onnx(ort_run(again.SerializeToString(), {b.name: b.to_spec(x)})[0])
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


# -- each op, exported by dslc and read back ---------------------------------------------------

SEQ = "input s: f32[6, 3]"
IMAGE = "input image: f32[6, 6, 4]"
# One small model per op and per attribute that changes the exported graph: the spec, the
# input line it reads. Each comes back with the same layers, attributes and weights.
OP_CASES = {
    "simple_rnn_backwards": (SEQ, "simple_rnn(4, go_backwards=true)"),
    "simple_rnn_backwards_seq": (SEQ, "simple_rnn(4, go_backwards=true, return_sequences=true)"),
    "lstm": (SEQ, "lstm(4)"),
    "lstm_seq": (SEQ, "lstm(4, return_sequences=true)\n    lstm(2)"),
    "lstm_backwards": (SEQ, "lstm(4, go_backwards=true)"),
    "lstm_backwards_seq": (SEQ, "lstm(4, go_backwards=true, return_sequences=true)\n"
                                "    dense(2)"),
    "lstm_gates": (SEQ, "lstm(3, activation=relu, recurrent_activation=linear, "
                        "use_bias=false, return_sequences=true)"),
    "lstm_any_length": ("input s: f32[?, 3]",
                        "lstm(4, go_backwards=true, return_sequences=true)"),
    "gru": (SEQ, "gru(4)"),
    "gru_reset_before": (SEQ, "gru(4, reset_after=false, return_sequences=true)"),
    "gru_backwards": (SEQ, "gru(4, go_backwards=true, return_sequences=true)\n"
                           "    gru(3, go_backwards=true)"),
    "gru_gates": (SEQ, "gru(3, activation=sigmoid, recurrent_activation=tanh, use_bias=false)"),
    "conv1d": (SEQ, "conv1d(4, kernel=3, activation=relu)\n    conv1d(2, kernel=2, use_bias=false)"),
    "conv1d_same_strided": ("input s: f32[7, 3]",
                            "conv1d(4, kernel=3, strides=2, padding=same)"),
    "conv1d_causal_dilated": (SEQ, "conv1d(4, kernel=2, padding=causal, dilation=2)"),
    "conv1d_any_length": ("input s: f32[?, 3]", "conv1d(4, kernel=3, padding=same)"),
    "pools_1d": (SEQ, "conv1d(4, kernel=1)\n    maxpool1d(2)\n    avgpool1d(3, strides=1, "
                      "padding=same)\n    global_maxpool1d"),
    "global_avgpool1d": (SEQ, "global_avgpool1d"),
    "conv2d_groups": (IMAGE, "conv2d(6, kernel=3, groups=2, padding=same)"),
    "depthwise_conv2d": (IMAGE, "depthwise_conv2d(kernel=3, depth_multiplier=2, "
                                "activation=relu)\n    depthwise_conv2d(kernel=[1, 2], "
                                "strides=2, use_bias=false)"),
    "conv2d_transpose": (IMAGE, "conv2d_transpose(3, kernel=3, strides=2, padding=same)\n"
                                "    conv2d_transpose(2, kernel=2, activation=tanh)"),
    "conv2d_transpose_short_kernel": (IMAGE, "conv2d_transpose(2, kernel=1, strides=2, "
                                             "use_bias=false)"),
    "upsampling2d": (IMAGE, "upsampling2d(2)\n    upsampling2d([2, 3], interpolation=bilinear)"),
    "zero_padding2d": (IMAGE, "zero_padding2d(1)\n    zero_padding2d([[1, 0], [2, 1]])\n"
                              "    conv2d(2, kernel=3)\n    zero_padding2d([0, 2])"),
    "activations": ("input x: f32[5]", "selu\n    softplus\n    softsign\n    hard_sigmoid\n"
                                       "    relu6\n    silu\n    log_softmax"),
    "activations_fused": ("input x: f32[5]",
                          "dense(4, activation=silu)\n    dense(3, activation=relu6)\n"
                          "    dense(3, activation=selu)\n    dense(2, activation=log_softmax)"),
    "activations_image": (IMAGE, "conv2d(3, kernel=1, activation=hard_sigmoid)\n    softsign\n"
                                 "    log_softmax\n    silu"),
    "merges": ("input x: f32[4]\n    input y: f32[4]",
               "a = multiply(x, y)\n    b = subtract(a, x)\n    c = maximum(b, y, x)\n"
               "    d = minimum(c, a)\n    average(d, b, y)"),
    "merges_image": (IMAGE, "a = conv2d(image, 4, kernel=1)\n    b = multiply(a, image)\n"
                            "    c = subtract(image, b)\n    maximum(c, a)"),
    "embedding": ("input ids: i64[6]", "embedding(10, 4)\n    lstm(3)"),
    "embedding_i32": ("input ids: i32[5]", "embedding(7, 3)\n    dense(2)"),
    "norms": ("input x: f32[5]", "layer_norm(scale=false)\n    batch_norm(center=false)\n"
                                 "    batch_norm(scale=false, epsilon=0.01)"),
    "norms_sequence": (SEQ, "layer_norm(epsilon=0.001)\n    batch_norm"),
    "norms_image": (IMAGE, "batch_norm\n    layer_norm"),
    "attention": (SEQ, "multi_head_attention(s, s, heads=2, key_dim=3)"),
    "attention_causal": (SEQ, "a = dense(s, 4)\n    multi_head_attention(a, a, 2, 3, causal=true, "
                              "use_bias=false)"),
    "attention_any_length": ("input s: f32[?, 3]",
                             "multi_head_attention(s, s, heads=1, key_dim=2, causal=true)"),
    "attention_cross": ("input q: f32[4, 3]\n    input v: f32[6, 5]\n    input k: f32[6, 2]",
                        "multi_head_attention(q, v, k, heads=3, key_dim=2, value_dim=4, "
                        "output_dim=7)"),
}


def _attrs(node) -> dict:
    return {k: v for k, v in node.attrs.model_dump().items() if not k.endswith("_init")}


@pytest.mark.parametrize("case", list(OP_CASES))
def test_each_op_dslc_exports_comes_back(case):
    inputs, body = OP_CASES[case]
    graph = compile_text(f"model m_{case} {{\n    {inputs}\n    {body}\n}}\n", "m.dl").model()
    imported, weights = _own_round_trip(graph)
    kept = [n for n in graph.nodes if n.op != "dropout"]
    assert [(n.name, n.op, _attrs(n)) for n in imported.graph.nodes] == \
        [(n.name, n.op, _attrs(n)) for n in kept]
    assert imported.weights.keys() == weights.keys()
    for key, w in weights.items():
        np.testing.assert_array_equal(imported.weights[key], w)


# -- the new ops from PyTorch's exporter -------------------------------------------------------

class Conv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(3, 6, 3, padding=1)
        self.pool = nn.MaxPool1d(2)
        self.conv2 = nn.Conv1d(6, 4, 2, dilation=2, bias=False)
        self.avg = nn.AvgPool1d(2, stride=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):  # [N, C, T], as PyTorch's Conv1d reads it
        y = self.avg(self.conv2(self.pool(torch.relu(self.conv1(x)))))
        return self.head(y.mean(dim=2))


def test_torch_conv1d_and_1d_pools(tmp_path):
    imported = round_trip(Conv1d(), [(3, 10)], tmp_path)
    assert imported.inputs[0].axes == (0, 2, 1)  # NCW → the spec's [T, C]
    assert [n.op for n in imported.graph.nodes] == [
        "conv1d", "maxpool1d", "conv1d", "avgpool1d", "global_avgpool1d", "dense"]
    assert lines(imported)[2] == "conv1 = conv1d(6, padding=same, activation=relu)"


class Images(nn.Module):
    """Grouped and depthwise Conv2d, ConvTranspose2d, Upsample, ZeroPad2d and the new
    activations, from PyTorch."""

    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(4, 6, 3, groups=2, padding=1)
        self.depthwise = nn.Conv2d(6, 12, 3, groups=6)
        self.up = nn.ConvTranspose2d(12, 3, 3, stride=2)
        self.pad = nn.ZeroPad2d((1, 2, 0, 1))
        self.resize = nn.Upsample(scale_factor=2, mode="nearest")
        self.smooth = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x):
        y = nn.functional.silu(self.grouped(x))
        y = nn.functional.relu6(self.depthwise(y))
        y = nn.functional.hardsigmoid(self.up(y))
        return self.smooth(self.resize(self.pad(y))), nn.functional.selu(y) * y - y


def test_torch_grouped_depthwise_transposed_and_resized_convolutions(tmp_path):
    imported = round_trip(Images(), [(4, 6, 6)], tmp_path)
    ops = [n.op for n in imported.graph.nodes]
    for op in ("conv2d", "depthwise_conv2d", "conv2d_transpose", "zero_padding2d",
               "upsampling2d", "selu", "multiply", "subtract"):
        assert op in ops
    body = "\n".join(lines(imported))
    assert "groups=2" in body and "activation=silu" in body and "activation=relu6" in body
    assert "activation=hard_sigmoid" in body and "interpolation=bilinear" in body


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.rnn = nn.GRU(4, 3, batch_first=True)

    def forward(self, ids):
        return self.rnn(self.embed(ids))[1][-1]


def test_torch_embedding_reads_integer_ids(tmp_path):
    path = tmp_path / "embed.onnx"
    module = Embed().eval()
    ids = torch.tensor([[1, 2, 3, 4, 5], [0, 9, 8, 7, 6]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (ids,), str(path), dynamo=False, opset_version=17,
                          input_names=["ids"], dynamic_axes={"ids": {0: "batch"}})
    imported = import_file(path)
    assert "input ids: i64[5]" in imported.text
    assert [n.op for n in imported.graph.nodes] == ["embedding", "gru"]
    with torch.no_grad():
        want = module(ids).numpy()
    (got,) = ort_run(to_model(imported.graph, imported.weights).SerializeToString(),
                     {"ids": ids.numpy()})
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


@pytest.mark.parametrize("module, size, message", [
    (nn.ConvTranspose2d(1, 2, 3, stride=2, padding=1, output_padding=1), 4,
     "pads [1, 1, 1, 1] with output_padding [1, 1], which gives neither Keras's `valid` nor "
     "`same`"),
    (nn.Upsample(scale_factor=2, mode="bicubic"), 4, "resizes `cubic`"),
    (nn.ReflectionPad2d(1), 4, "pads in `reflect` mode"),
    (nn.Hardtanh(-2, 2), 4, "clips to [-2.0, 2.0]"),
    (nn.Conv1d(1, 2, 3, padding=2), 4, "pads [2, 2] (start, end) are neither none"),
])
def test_new_ops_dslc_cannot_express_are_located_errors(tmp_path, capsys, module, size,
                                                        message):
    shape = (1, size) if isinstance(module, nn.Conv1d) else (1, size, size)
    export(module, [shape], tmp_path / "w.onnx")
    assert main(["import", str(tmp_path / "w.onnx"), "-o", str(tmp_path / "w.dl")]) == 2
    err = capsys.readouterr().err
    assert "w.onnx: node " in err and message in err and "Traceback" not in err


def test_an_attention_graph_not_exactly_dslcs_is_a_located_error():
    from onnx import numpy_helper

    graph = compile_text("model m {\n    input s: f32[4, 3]\n"
                         "    multi_head_attention(s, s, heads=2, key_dim=2)\n}\n", "m.dl").model()
    model = to_model(graph, {k: np.ones(p.shape, np.float32)
                             for k, p in graph.param_specs().items()})
    (scale,) = [t for t in model.graph.initializer if t.name.endswith(".scale")]
    scale.CopyFrom(numpy_helper.from_array(np.array(0.5, np.float32), scale.name))
    with pytest.raises(DslError) as err:
        import_model(model, "m.onnx")
    assert "m.onnx: node " in str(err.value) and "(MatMul): scales the query by 0.5" in \
        str(err.value)


def test_a_reverse_rnn_sequence_read_in_time_order_is_a_located_error():
    graph = compile_text("model m {\n    input s: f32[4, 3]\n"
                         "    lstm(2, go_backwards=true, return_sequences=true)\n}\n",
                         "m.dl").model()
    model = to_model(graph, {k: np.ones(p.shape, np.float32)
                             for k, p in graph.param_specs().items()})
    (flip,) = [n for n in model.graph.node if n.op_type == "Slice"]
    for n in model.graph.node:  # drop the Slice that puts the steps in reading order
        for i, name in enumerate(n.input):
            if name == flip.output[0]:
                n.input[i] = flip.input[0]
    model.graph.node.remove(flip)
    with pytest.raises(DslError) as err:
        import_model(model, "m.onnx")
    assert "m.onnx: node " in str(err.value) and "reverse-running RNN in time order" in \
        str(err.value)
