"""`dslc train --tensorboard`: TensorBoard event files in the run folder, written without
TensorBoard, TensorFlow or protobuf installed (the format is small and stable: records of
`Event` protobuf messages, each framed with a length and masked CRC-32C checksums).

The layout is Keras's TensorBoard callback's, so dashboards users have look the same:
OUT/tensorboard/train and OUT/tensorboard/validation, one scalar per history column named
`epoch_<column>` (`epoch_loss`, `epoch_accuracy`; the learning rate, where the history has
one, as `epoch_learning_rate`), so training and validation curves overlay; a histogram of
each weight (`<layer>/<param>`) every epoch; and the model's graph — the spec's own layers,
named as in the spec, block instances as groups, the output shapes and attributes on each
node — the same for every backend. View with `tensorboard --logdir OUT/tensorboard` (pip
install tensorboard).
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from dslc.ir.graph import Graph

# protobuf wire format ---------------------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _double(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", value)


def _float(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", value)


def _bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return _key(field, 2) + _varint(len(data)) + data


def _packed_doubles(field: int, values: list[float]) -> bytes:
    return _bytes(field, struct.pack(f"<{len(values)}d", *values))


# CRC-32C (Castagnoli), as TFRecord frames records --------------------------------------------

def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc(header)) + data
            + struct.pack("<I", masked_crc(data)))


# messages -----------------------------------------------------------------------------------

def event(step: int, *, summary: bytes | None = None, graph_def: bytes | None = None,
          file_version: str | None = None, wall_time: float | None = None) -> bytes:
    """An `Event`: wall_time (1), step (2), file_version (3), graph_def (4), summary (5)."""
    out = _double(1, time.time() if wall_time is None else wall_time) + _int(2, step)
    if file_version is not None:
        out += _bytes(3, file_version)
    if graph_def is not None:
        out += _bytes(4, graph_def)
    if summary is not None:
        out += _bytes(5, summary)
    return out


def scalar_value(tag: str, value: float) -> bytes:
    """A `Summary.Value` with tag (1) and simple_value (2)."""
    return _bytes(1, tag) + _float(2, value)


def histogram_value(tag: str, values: np.ndarray, bins: int = 30) -> bytes:
    """A `Summary.Value` with tag (1) and histo (5): a `HistogramProto` of min (1), max (2),
    num (3), sum (4), sum_squares (5), bucket_limit (6) and bucket (7); each bucket counts
    the values up to its limit (and above the previous one)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        v = np.zeros(1)
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    histo = (_double(1, float(v.min())) + _double(2, float(v.max())) + _double(3, float(v.size))
             + _double(4, float(v.sum())) + _double(5, float(np.square(v).sum()))
             + _packed_doubles(6, [float(e) for e in edges[1:]])
             + _packed_doubles(7, [float(c) for c in counts]))
    return _bytes(1, tag) + _bytes(5, histo)


def summary(*values: bytes) -> bytes:
    """A `Summary`: repeated value (1)."""
    return b"".join(_bytes(1, v) for v in values)


def _shape(dims: list[int]) -> bytes:
    """A `TensorShapeProto`: repeated dim (2) of size (1); -1 where unknown (the batch)."""
    return b"".join(_bytes(2, _int(1, d)) for d in dims)


def _attr(key: str, value: bytes) -> bytes:
    """One entry of `NodeDef.attr` (5), a map of string to `AttrValue`."""
    return _bytes(5, _bytes(1, key) + _bytes(2, value))


def graph_def(graph: Graph) -> bytes:
    """A `GraphDef` (node (1), versions (4)) of the spec's layers: `NodeDef` name (1), op (2),
    input (3), attr (5) — `_output_shapes` (TensorBoard shows it on the edges), the op's
    attributes as text and the parameter count."""
    scoped = {i.name: i.name for i in graph.inputs}
    for node in graph.nodes:
        scoped[node.name] = "/".join([*(b.instance for b in node.blocks), node.name])
    nodes = []
    for inp in graph.inputs:
        dims = [-1, *(-1 if d is None else d for d in inp.type.shape)]
        nodes.append(_bytes(1, inp.name) + _bytes(2, "input")
                     + _attr("_output_shapes", _bytes(1, _bytes(7, _shape(dims)))))
    for node in graph.nodes:
        body = _bytes(1, scoped[node.name]) + _bytes(2, node.op)
        body += b"".join(_bytes(3, scoped[i]) for i in node.inputs)
        if node.type is not None:
            dims = [-1, *(-1 if d is None else d for d in node.type.shape)]
            body += _attr("_output_shapes", _bytes(1, _bytes(7, _shape(dims))))
        attrs = node.attrs.model_dump() if hasattr(node.attrs, "model_dump") else {}
        for key, value in attrs.items():
            body += _attr(key, _bytes(2, str(value)))
        body += _attr("params", _int(3, node.param_count))
        body += _attr("spec_line", _int(3, node.span.line))
        nodes.append(body)
    return b"".join(_bytes(1, n) for n in nodes) + _bytes(4, _int(1, 1))


# writing --------------------------------------------------------------------------------------

_COUNTER = itertools.count()


class EventWriter:
    """One event file in `folder`, named as TensorBoard's writers name theirs."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())
        self.path = folder / (f"events.out.tfevents.{int(time.time())}.{host or 'host'}."
                              f"{os.getpid()}.{next(_COUNTER)}")
        self.write(event(0, file_version="brain.Event:2"))

    def write(self, data: bytes) -> None:
        # Opened for each event: nothing to close, and a reader sees every finished epoch.
        with self.path.open("ab") as f:
            f.write(record(data))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if values:
            self.write(event(step, summary=summary(*(scalar_value(k, v)
                                                     for k, v in values.items()))))

    def histograms(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        if arrays:
            self.write(event(step, summary=summary(*(histogram_value(k, a)
                                                     for k, a in arrays.items()))))

    def graph(self, graph: Graph) -> None:
        self.write(event(0, graph_def=graph_def(graph)))


def scalar_tag(column: str) -> str:
    return "epoch_learning_rate" if column in ("lr", "learning_rate") else f"epoch_{column}"


class TensorBoard:
    """The `on_epoch` hook of `dslc train --tensorboard` (see the module's docstring). A
    fresh run replaces the folder's earlier event files; a resumed one adds a file."""

    def __init__(self, out: Path, graph: Graph, trainer: Any, resume: bool = False):
        self.folder = out / "tensorboard"
        self.trainer = trainer
        if not resume:
            for sub in ("train", "validation"):
                for old in (self.folder / sub).glob("events.out.tfevents.*"):
                    old.unlink()
        self.train = EventWriter(self.folder / "train")
        self.validation: EventWriter | None = None
        if not resume:
            self.train.graph(graph)

    def on_epoch(self, epoch: int, row: dict) -> None:
        step = int(row.get("epoch", epoch + 1))
        numbers = {k: float(v) for k, v in row.items() if k != "epoch"
                   and isinstance(v, int | float) and not isinstance(v, bool)
                   and math.isfinite(v)}
        self.train.scalars(step, {scalar_tag(k): v for k, v in numbers.items()
                                  if not k.startswith("val_")})
        val = {scalar_tag(k[len("val_"):]): v for k, v in numbers.items() if k.startswith("val_")}
        if val:
            if self.validation is None:
                self.validation = EventWriter(self.folder / "validation")
            self.validation.scalars(step, val)
        weights = self.trainer.get_weights()
        self.train.histograms(step, {k.replace(".", "/", 1): v for k, v in weights.items()})
