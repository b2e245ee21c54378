"""The one file writer (dslc.weights.atomic_write_bytes) and checkpoint reading: nothing the
user had is lost or replaced by something half-made, and bad weights are named."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from dslc import cli
from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.weights import atomic_write_bytes, init_weights, load_weights, save_weights

SPEC = """
model tiny {
    input x: f32[4]
    dense(3, activation=softmax)
}
"""


def _graph():
    return compile_text(SPEC, "tiny.dl").model(None)


def test_a_fifo_or_device_is_never_replaced(tmp_path):
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    with pytest.raises(DslError, match="not a regular file"):
        atomic_write_bytes(fifo, b"data")
    assert fifo.exists() and not fifo.is_file()
    with pytest.raises(DslError, match="not a regular file"):
        atomic_write_bytes("/dev/null", b"data")


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_a_user_error_that_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _disk_full)
    target = tmp_path / "new" / "deeper" / "file.bin"
    with pytest.raises(DslError, match="disk full"):
        atomic_write_bytes(target, b"data")
    assert list(tmp_path.iterdir()) == []  # no temp file, no folder made for it


def test_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(DslError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_compile_on_a_full_disk_exits_2_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "tiny.dl"
    spec.write_text(SPEC)
    monkeypatch.setattr(os, "fsync", _disk_full)
    out = tmp_path / "generated"
    assert cli.main(["compile", str(spec), "--target", "torch", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "disk full" in err and "internal error" not in err
    assert not out.exists()


def test_nan_weights_are_refused_by_name(tmp_path):
    g = _graph()
    w = init_weights(g, 0)
    w["dense_1.kernel"][0, 0] = np.nan
    path = tmp_path / "w.safetensors"
    save_weights(path, w)
    with pytest.raises(DslError, match=r"`dense_1.kernel` holds 1 non-finite"):
        load_weights(path, g)


def test_integer_weights_are_an_error_naming_the_tensor(tmp_path):
    from safetensors.numpy import save_file

    g = _graph()
    w = {k: v.astype(np.float32) for k, v in init_weights(g, 0).items()}
    w["dense_1.bias"] = np.zeros(3, np.int32)
    path = tmp_path / "w.safetensors"
    save_file(w, str(path))
    with pytest.raises(DslError, match=r"`dense_1.bias` holds int32"):
        load_weights(path, g)


def test_float64_weights_load_as_float32(tmp_path):
    from safetensors.numpy import save_file

    g = _graph()
    w = {k: v.astype(np.float64) for k, v in init_weights(g, 0).items()}
    path = tmp_path / "w.safetensors"
    save_file(w, str(path))
    assert all(v.dtype == np.float32 for v in load_weights(path, g).values())


def test_a_weights_path_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(DslError, match="FIFO"):
        load_weights(fifo, _graph())
    with pytest.raises(DslError, match="character device"):
        load_weights("/dev/zero", _graph())
