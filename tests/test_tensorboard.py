"""`dslc train --tensorboard`: event files written without TensorBoard, read back with its own
protos and EventAccumulator (and the records' framing checked by hand)."""

from __future__ import annotations

import csv
import struct

import numpy as np
import pytest

from dslc.cli import main
from dslc.compiler import compile_file, compile_text
from dslc.train.tensorboard import (
    EventWriter,
    crc32c,
    graph_def,
    histogram_value,
    masked_crc,
    scalar_tag,
)

MLP = """
model mlp {
    input image: f32[8, 8, 1]
    flatten
    dense(16, activation=relu)
    dense(10, activation=softmax)
}
train mlp {
    data       = digits(test=0.2)
    validation = 0.2
    preprocess = [scale(1/16)]
    loss       = sparse_categorical_crossentropy
    optimizer  = adam(lr=2e-3)
    metrics    = [accuracy]
    epochs     = 3
}
"""


def read_records(path):
    """Every record's payload, checking the lengths and both masked CRC-32C checksums."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc(header)
        payload = data[pos + 12:pos + 12 + length]
        assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == \
            masked_crc(payload)
        out.append(payload)
        pos += 16 + length
    return out


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue's check value
    assert crc32c(b"") == 0


def test_records_decode_as_tensorboard_events(tmp_path):
    pb = pytest.importorskip("tensorboard.compat.proto.event_pb2")
    writer = EventWriter(tmp_path)
    writer.scalars(3, {"epoch_loss": 0.25, "epoch_accuracy": 0.5})
    values = np.random.default_rng(0).standard_normal(1000)
    writer.histograms(3, {"dense/kernel": values})
    first, scalars, histos = (pb.Event.FromString(r) for r in read_records(writer.path))
    assert first.file_version == "brain.Event:2"
    assert scalars.step == 3
    assert {v.tag: v.simple_value for v in scalars.summary.value} == \
        {"epoch_loss": 0.25, "epoch_accuracy": 0.5}
    h = histos.summary.value[0].histo
    assert histos.summary.value[0].tag == "dense/kernel"
    assert (h.min, h.max, h.num) == (values.min(), values.max(), 1000)
    assert h.sum == pytest.approx(values.sum()) and h.sum_squares == pytest.approx((values ** 2).sum())
    assert sum(h.bucket) == 1000 and len(h.bucket) == len(h.bucket_limit)
    assert h.bucket_limit[-1] == pytest.approx(values.max())


def test_a_constant_tensor_has_a_histogram():
    pb = pytest.importorskip("tensorboard.compat.proto.summary_pb2")
    value = pb.Summary.Value.FromString(histogram_value("b", np.zeros(4)))
    assert value.histo.num == 4 and sum(value.histo.bucket) == 4


def test_the_graph_has_the_specs_layers_and_block_groups(root):
    pb = pytest.importorskip("tensorboard.compat.proto.graph_pb2")
    graph = compile_file(root / "examples" / "tiny_resnet.dl").model()
    g = pb.GraphDef.FromString(graph_def(graph))
    nodes = {n.name: n for n in g.node}
    assert len(nodes) == len(graph.nodes) + len(graph.inputs)
    scoped = [n for n in graph.nodes if n.blocks]
    assert scoped, "tiny_resnet expands blocks"
    node = scoped[0]
    name = "/".join([*(b.instance for b in node.blocks), node.name])
    assert nodes[name].op == node.op
    assert nodes[name].attr["spec_line"].i == node.span.line
    for n in g.node:  # every input names a node of the graph
        assert all(i in nodes for i in n.input)
    shape = nodes[graph.nodes[0].name].attr["_output_shapes"].list.shape[0]
    assert [d.size for d in shape.dim] == [-1, *graph.nodes[0].type.shape]


def test_scalar_tags_follow_keras():
    assert [scalar_tag(c) for c in ("loss", "accuracy", "lr")] == \
        ["epoch_loss", "epoch_accuracy", "epoch_learning_rate"]


def _accumulator(folder):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_train_tensorboard_reads_back(backend, tmp_path, capsys):
    pytest.importorskip(backend)
    path = tmp_path / "mlp.dl"
    path.write_text(MLP)
    out = tmp_path / "run"
    assert main(["train", str(path), "--backend", backend, "--tensorboard",
                 "--out", str(out), "--epochs", "2"]) == 0
    assert "tensorboard --logdir" in capsys.readouterr().out
    with open(out / "history.csv") as f:
        history = list(csv.DictReader(f))
    train = _accumulator(out / "tensorboard" / "train")
    tags = train.Tags()
    assert {"epoch_loss", "epoch_accuracy"} <= set(tags["scalars"])
    assert sorted(tags["histograms"]) == ["dense_1/bias", "dense_1/kernel", "dense_2/bias",
                                          "dense_2/kernel"]
    assert tags["graph"]
    assert [n.name for n in train.Graph().node] == ["image", "flatten_1", "dense_1", "dense_2"]
    loss = train.Scalars("epoch_loss")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx([float(r["loss"]) for r in history], rel=1e-5)
    validation = _accumulator(out / "tensorboard" / "validation")
    val = validation.Scalars("epoch_accuracy")
    assert [e.value for e in val] == pytest.approx([float(r["val_accuracy"]) for r in history],
                                                   rel=1e-5)
    assert [h.step for h in train.Histograms("dense_1/kernel")] == [1, 2]
    # --resume adds the next epochs to the same dashboard, without repeating the earlier ones
    assert main(["train", str(path), "--backend", backend, "--tensorboard", "--resume",
                 "--out", str(out), "--epochs", "3"]) == 0
    assert [e.step for e in _accumulator(out / "tensorboard" / "train").Scalars("epoch_loss")] \
        == [1, 2, 3]
    # a fresh run (--force) starts the dashboard afresh
    assert main(["train", str(path), "--backend", backend, "--tensorboard", "--force",
                 "--out", str(out), "--epochs", "1"]) == 0
    assert [e.step for e in _accumulator(out / "tensorboard" / "train").Scalars("epoch_loss")] \
        == [1]


def test_a_history_lr_column_becomes_the_learning_rate(tmp_path):
    pytest.importorskip("tensorboard")
    from dslc.train.tensorboard import TensorBoard

    class Weights:
        def get_weights(self):
            return {"dense_1.kernel": np.ones((2, 2), np.float32)}

    graph = compile_text(MLP).model()
    board = TensorBoard(tmp_path, graph, Weights())
    board.on_epoch(0, {"epoch": 1, "loss": 0.5, "lr": 1e-3, "val_loss": 0.7})
    acc = _accumulator(tmp_path / "tensorboard" / "train")
    assert acc.Scalars("epoch_learning_rate")[0].value == pytest.approx(1e-3)
    assert _accumulator(tmp_path / "tensorboard" / "validation").Scalars("epoch_loss")[0].value \
        == pytest.approx(0.7)
