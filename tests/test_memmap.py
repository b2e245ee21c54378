"""Data bigger than memory (dslc/data/lazy.py): npy/npz memory-mapped, batches read lazily,
preprocessing fitted in a streaming pass, and a run that trains on a file larger than its
memory cap — counted in bytes materialised, not in seconds."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from dslc.data.arrays import load_npy, load_npz
from dslc.data.lazy import ENV, LazyArray, parse_size, reads
from dslc.data.loaders import load_dataset
from dslc.diagnostics import DslError
from dslc.ir.train import DataSource, Loss, Optimizer, Step, TrainConfig


def config(kind: str, preprocess=(), validation: float = 0.0, **args) -> TrainConfig:
    steps = [Step(name=name, args=a) for name, a in preprocess]
    return TrainConfig(model="m", data=DataSource(kind=kind, args=args),
                       loss=Loss(name="sparse_categorical_crossentropy"),
                       optimizer=Optimizer(name="adam"), preprocess=steps, validation=validation)


def digits_like(n=600, features=16, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(size=(n, features)).astype(np.float32) * 3 + y[:, None] * 2 + 5
    return x, y


def test_parse_size():
    assert parse_size("512K") == 512 * 1024
    assert parse_size("2g") == 2 * 2**30
    assert parse_size("1.5M") == int(1.5 * 2**20)
    assert parse_size("1000") == 1000
    for bad in ("", "-1G", "lots", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_npy_and_stored_npz_members_are_memory_mapped(tmp_path):
    x, y = digits_like()
    np.save(tmp_path / "x.npy", x)
    mapped = load_npy(tmp_path / "x.npy", mmap=True)
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, x)
    np.savez(tmp_path / "d.npz", x=x, y=y, empty=np.zeros((0, 3)))
    arrays = load_npz(tmp_path / "d.npz", mmap=True)
    assert isinstance(arrays["x"], np.memmap) and np.array_equal(arrays["x"], x)
    assert np.array_equal(arrays["y"], y) and arrays["empty"].shape == (0, 3)


def test_fortran_order_member_maps_too(tmp_path):
    x = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(6, 4))
    np.savez(tmp_path / "f.npz", x=x)
    assert np.array_equal(load_npz(tmp_path / "f.npz", mmap=True)["x"], x)


def test_compressed_member_loads_under_the_cap_and_is_refused_over_it(tmp_path, monkeypatch):
    x, y = digits_like()
    np.savez_compressed(tmp_path / "c.npz", x=x, y=y)
    with zipfile.ZipFile(tmp_path / "c.npz") as zf:
        assert zf.getinfo("x.npy").compress_type == zipfile.ZIP_DEFLATED
    arrays = load_npz(tmp_path / "c.npz", mmap=True)
    assert not isinstance(arrays["x"], np.memmap) and np.array_equal(arrays["x"], x)
    monkeypatch.setenv(ENV, "8K")
    with pytest.raises(DslError) as info:
        load_npz(tmp_path / "c.npz", mmap=True)
    text = str(info.value) + (info.value.diagnostics[0].hint or "")
    assert "compressed" in text and "cannot be memory-mapped" in text and "np.savez" in text


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_over_the_cap_the_splits_stay_on_disk_and_equal_the_in_memory_ones(tmp_path, monkeypatch,
                                                                           kind):
    x, y = digits_like()
    if kind == "npy":
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        args = {"x": "x.npy", "y": "y.npy"}
    else:
        np.savez(tmp_path / "d.npz", x=x, y=y)
        args = {"path": "d.npz", "x": "x", "y": "y"}
    cfg = config(kind, preprocess=[("scale", {"factor": 0.5}), ("standardize", {})],
                 validation=0.1, test=0.2, **args)
    whole = load_dataset(cfg, (4, 4), tmp_path, 3)
    monkeypatch.setenv(ENV, "16K")  # the features are 37.5 KiB as float32
    with reads() as seen:
        lazy = load_dataset(cfg, (4, 4), tmp_path, 3)
    assert isinstance(lazy.x_train, LazyArray) and lazy.x_train.shape == whole.x_train.shape
    assert max(seen) <= 16 * 1024  # the checks and statistics streamed in blocks
    with pytest.raises(DslError, match="memory cap"):  # more than the cap at once: refused
        np.asarray(lazy.x_train)
    monkeypatch.delenv(ENV)
    for name in ("x_train", "x_val", "x_test"):
        np.testing.assert_allclose(getattr(lazy, name)[:], getattr(whole, name), atol=2e-6)
    for name in ("y_train", "y_val", "y_test"):
        assert np.array_equal(getattr(lazy, name), getattr(whole, name))
    np.testing.assert_allclose(lazy.preprocessing["steps"][1]["std"],
                               whole.preprocessing["steps"][1]["std"], rtol=1e-6)


def test_lazy_array_reads_rows_in_the_asked_order(tmp_path):
    base = np.arange(40, dtype=np.float32).reshape(10, 4)
    lazy = LazyArray(base).take(np.array([7, 2, 9, 3]))
    np.testing.assert_array_equal(lazy[:], base[[7, 2, 9, 3]])
    np.testing.assert_array_equal(lazy[np.array([3, 0])], base[[3, 7]])
    np.testing.assert_array_equal(lazy[-1], base[3])
    np.testing.assert_array_equal(lazy.reshape(4, 2, -1)[1:2], base[[2]].reshape(1, 2, 2))


def test_nan_in_a_mapped_file_is_found(tmp_path, monkeypatch):
    x, y = digits_like()
    x[500, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    monkeypatch.setenv(ENV, "16K")
    with pytest.raises(DslError, match="NaN"):
        load_dataset(config("npy", x="x.npy", y="y.npy"), (16,), tmp_path, 0)


SPEC = """
model mm {
    input x: f32[16]
    dense(8, activation=relu)
    dense(4, activation=softmax)
}
train mm {
    data       = npy("x.npy", "y.npy", test=0.2)
    preprocess = [scale(0.5), standardize]
    loss       = sparse_categorical_crossentropy
    optimizer  = adam(lr=1e-2)
    metrics    = [accuracy]
    epochs     = 2
    batch      = 32
    validation = 0.1
    seed       = 0
}
"""


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_trains_on_a_file_larger_than_the_memory_cap(tmp_path, monkeypatch, backend):
    pytest.importorskip("torch" if backend == "torch" else "keras")
    from dslc.cli import main
    from dslc.weights import read_weights

    x, y = digits_like(n=2000)
    np.save(tmp_path / "x.npy", x)  # 125 KiB of features
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "mm.dl").write_text(SPEC)
    size = x.nbytes
    monkeypatch.setenv(ENV, "1G")  # the CLI's --max-memory sets it; undone after the test
    spec = str(tmp_path / "mm.dl")
    assert main(["train", spec, "--backend", backend, "--out", str(tmp_path / "ram")]) == 0
    with reads() as seen:
        assert main(["train", spec, "--backend", backend, "--out", str(tmp_path / "disk"),
                     "--max-memory", "32K"]) == 0
    # Every block read is under the cap, and the training split was read each epoch.
    assert seen and max(seen) <= 32 * 1024 < size
    assert sum(seen) >= 2 * 0.72 * size
    ram, _ = read_weights(tmp_path / "ram" / "weights.safetensors")
    disk, _ = read_weights(tmp_path / "disk" / "weights.safetensors")
    for key in ram:  # same batches in the same order; standardize's statistics streamed
        np.testing.assert_allclose(disk[key], ram[key], atol=1e-4)
