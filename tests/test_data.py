"""Data loading, splits, preprocessing and augmentation (dslc/data/)."""

from __future__ import annotations

import gzip
import json
import struct
import sys

import numpy as np
import pytest

from dslc.data.idx import parse_idx
from dslc.data.loaders import Dataset, apply_preprocessing, augment, load_dataset
from dslc.diagnostics import DslError, Span
from dslc.ir.train import DataSource, Loss, Optimizer, Step, TrainConfig

SPAN = Span("spec.dl", 3, 5)


def config(kind: str, loss: str = "sparse_categorical_crossentropy", preprocess=(),
           validation: float = 0.0, **args) -> TrainConfig:
    steps = [s if isinstance(s, Step) else Step(name=s[0], args=s[1]) for s in preprocess]
    return TrainConfig(model="m", data=DataSource(kind=kind, args=args, span=SPAN),
                       loss=Loss(name=loss), optimizer=Optimizer(name="adam"),
                       preprocess=steps, validation=validation)


def load(cfg: TrainConfig, shape, base_dir=".", seed: int = 0) -> Dataset:
    return load_dataset(cfg, tuple(shape), base_dir, seed)


def write_idx(path, array: np.ndarray, code: int = 0x08, compress: bool = False) -> None:
    dtype = {0x08: ">u1", 0x0D: ">f4"}[code]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def mnist_folder(folder, n_train=50, n_test=20, compress=False):
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    folder.mkdir(exist_ok=True)
    for name, a in arrays.items():
        write_idx(folder / (name + (".gz" if compress else "")), a, compress=compress)
    return arrays


def error_of(fn) -> DslError:
    with pytest.raises(DslError) as info:
        fn()
    return info.value


# --- built-in and generated sources -----------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8, 1), (64,), (8, 8)])
def test_digits_shapes_and_ranges(shape):
    ds = load(config("digits", test=0.2), shape)
    assert ds.x_train.shape == (1438, *shape) and ds.x_test.shape == (359, *shape)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() == 0 and ds.x_train.max() == 16
    assert ds.num_classes == 10 and set(np.unique(ds.y_train)) == set(range(10))
    assert ds.x_val is None and ds.y_val is None


def test_shape_mismatch_names_both_shapes():
    err = error_of(lambda: load(config("digits"), (28, 28, 1)))
    msg = str(err)
    assert "[8, 8]" in msg and "[28, 28, 1]" in msg
    assert err.diagnostics[0].span == SPAN


def test_generators_are_seeded():
    cfg = config("linear", loss="mse", n=100)
    a, b, c = load(cfg, (1,), seed=3), load(cfg, (1,), seed=3), load(cfg, (1,), seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_linear_targets_follow_the_line():
    ds = load(config("linear", loss="mse", n=500, w=3.0, b=1.0, noise=0.0), (1,))
    assert ds.y_train.shape == (400, 1) and ds.y_train.dtype == np.float32
    np.testing.assert_allclose(ds.y_train, 3 * ds.x_train + 1, atol=1e-5)
    assert ds.num_classes is None
    assert -1 <= ds.x_train.min() and ds.x_train.max() <= 1


def test_blobs_are_binary_and_separable():
    ds = load(config("blobs", loss="binary_crossentropy", n=400, features=3), (3,))
    assert ds.x_train.shape == (320, 3) and ds.y_train.dtype == np.int64
    assert set(np.unique(ds.y_train)) == {0, 1} and ds.num_classes == 2
    side = (ds.x_train.sum(axis=1) > 0).astype(np.int64)
    assert (side == ds.y_train).mean() > 0.9


def test_sequences_predict_the_next_value():
    ds = load(config("sequences", loss="mse", n=200, steps=10, noise=0.0), (10, 1))
    assert ds.x_train.shape == (160, 10, 1) and ds.y_train.shape == (160, 1)
    # A noiseless sine obeys s[t+1] = 2cos(f) s[t] - s[t-1]; check the target continues it.
    s = ds.x_train[:, :, 0]
    two_cos = (s[:, 2] + s[:, 0]) / s[:, 1]
    ok = np.abs(s[:, 1]) > 0.3
    pred = two_cos * s[:, -1] - s[:, -2]
    np.testing.assert_allclose(pred[ok], ds.y_train[ok, 0], atol=1e-3)


def test_split_and_validation_sizes():
    ds = load(config("linear", loss="mse", n=1000, test=0.25, validation=0.1), (1,))
    assert len(ds.x_test) == 250 and len(ds.x_train) == 675 and len(ds.x_val) == 75
    everything = np.concatenate([ds.x_train, ds.x_val, ds.x_test])[:, 0]
    assert len(np.unique(everything)) == 1000  # disjoint, nothing lost
    whole = load(config("linear", loss="mse", n=1000, test=0.25), (1,))
    np.testing.assert_array_equal(whole.x_train[675:], ds.x_val)  # the last fraction


# --- preprocessing ----------------------------------------------------------------------------


def test_standardize_is_fitted_on_the_training_split_only():
    cfg = config("digits", preprocess=[("standardize", {})], validation=0.2)
    ds = load(cfg, (64,))
    raw = load(config("digits", validation=0.2), (64,))
    step = ds.preprocessing["steps"][0]
    np.testing.assert_allclose(step["mean"], raw.x_train.mean(axis=0), rtol=1e-5, atol=1e-5)
    std = raw.x_train.astype(np.float64).std(axis=0)
    np.testing.assert_allclose(step["std"], np.where(std == 0, 1, std), rtol=1e-5)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-4)
    assert np.abs(ds.x_test.mean(axis=0)).max() > 1e-3  # test stats differ: not refitted
    assert np.isfinite(ds.x_train).all()  # constant border pixels: std 0 → 1
    np.testing.assert_allclose(apply_preprocessing(raw.x_test, ds.preprocessing), ds.x_test,
                               rtol=1e-6)
    np.testing.assert_allclose(apply_preprocessing(raw.x_val, ds.preprocessing), ds.x_val,
                               rtol=1e-6)


def test_steps_apply_in_order_and_serialise():
    cfg = config("digits", preprocess=[("scale", {"factor": 1 / 16}), ("standardize", {}),
                                       ("one_hot", {"classes": None})])
    ds = load(cfg, (8, 8, 1))
    params = json.loads(json.dumps(ds.preprocessing))
    assert [s["name"] for s in params["steps"]] == ["scale", "standardize"]
    assert params["labels"] == [{"name": "one_hot", "classes": 10}]
    assert np.array(params["steps"][1]["mean"]).shape == (8, 8, 1)
    raw = load(config("digits"), (8, 8, 1))
    np.testing.assert_allclose(apply_preprocessing(raw.x_test, params), ds.x_test, rtol=1e-6)
    # new inputs of the same size but another layout still take the fitted parameters
    flat = apply_preprocessing(raw.x_test.reshape(-1, 64), params)
    np.testing.assert_allclose(flat, ds.x_test.reshape(-1, 64), rtol=1e-6)


def test_one_hot_labels():
    ds = load(config("digits", loss="categorical_crossentropy", preprocess=[("one_hot", {})]),
              (64,))
    assert ds.y_train.shape == (1438, 10) and ds.y_train.dtype == np.float32
    assert (ds.y_train.sum(axis=1) == 1).all()
    raw = load(config("digits"), (64,))
    np.testing.assert_array_equal(ds.y_train.argmax(axis=1), raw.y_train)
    err = error_of(lambda: load(config("digits", preprocess=[("one_hot", {"classes": 5})]), (64,)))
    assert "one_hot(10)" in err.diagnostics[0].hint


def test_scale_leaves_labels_alone():
    ds = load(config("digits", preprocess=[("scale", {"factor": 1 / 16})]), (64,))
    assert ds.x_train.max() == 1.0 and ds.y_train.dtype == np.int64


# --- files ------------------------------------------------------------------------------------


def test_npz_with_named_arrays(tmp_path):
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    np.savez(tmp_path / "d.npz", feats=x, labels=np.arange(20) % 3)
    ds = load(config("npz", path="d.npz", x="feats", y="labels", test=0.25), (2,), tmp_path)
    assert ds.x_train.shape == (15, 2) and ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.num_classes == 3
    rows = np.concatenate([ds.x_train, ds.x_test])
    assert sorted(rows[:, 0].tolist()) == x[:, 0].tolist()
    err = error_of(lambda: load(config("npz", path="d.npz"), (2,), tmp_path))
    assert "no array `x`" in str(err) and "feats" in str(err)


def test_npz_with_its_own_test_split(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((30, 4, 4)), y_train=np.ones(30, np.int64),
             x_test=np.ones((7, 4, 4)), y_test=np.zeros(7, np.int64))
    ds = load(config("npz", path="d.npz"), (4, 4, 1), tmp_path)
    assert ds.x_train.shape == (30, 4, 4, 1) and ds.x_test.shape == (7, 4, 4, 1)
    assert (ds.x_test == 1).all() and (ds.y_test == 0).all()


def test_npz_regression_targets(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((10, 3)), y=np.linspace(0, 1, 10))
    ds = load(config("npz", loss="mse", path="d.npz"), (3,), tmp_path)
    assert ds.y_train.shape == (8, 1) and ds.y_train.dtype == np.float32
    assert ds.num_classes is None


def test_npy_files(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((10, 5), np.float32))
    np.save(tmp_path / "y.npy", np.array([0, 1] * 5))
    ds = load(config("npy", loss="binary_crossentropy", x="x.npy", y="y.npy"), (5,), tmp_path)
    assert ds.x_train.shape == (8, 5) and ds.y_train.dtype == np.int64
    np.save(tmp_path / "y.npy", np.array([0, 1] * 4))
    assert "differ in length" in str(error_of(lambda: load(
        config("npy", x="x.npy", y="y.npy"), (5,), tmp_path)))


def test_pickled_arrays_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}] * 4, dtype=object))
    np.save(tmp_path / "y.npy", np.zeros(4))
    err = error_of(lambda: load(config("npy", x="x.npy", y="y.npy"), (1,), tmp_path))
    assert "x.npy" in str(err) and "pickled" in err.diagnostics[0].hint


@pytest.mark.parametrize("kind", ["npy", "npz"])
@pytest.mark.parametrize("raw", [b"", b"garbage", b"PK\x03\x04 torn zip", b"\x93NUMPY\x01"])
def test_corrupt_numpy_files_are_a_clear_error(tmp_path, kind, raw):
    # np.load hands files without NumPy's header to pickle; its complaint would mislead.
    (tmp_path / f"x.{kind}").write_bytes(raw)
    np.save(tmp_path / "y.npy", np.zeros(4))
    args = dict(x="x.npy", y="y.npy") if kind == "npy" else dict(path="x.npz")
    err = error_of(lambda: load(config(kind, **args), (1,), tmp_path))
    text = str(err)
    assert f"x.{kind}" in text and "pickle" not in text.lower()
    assert err.diagnostics[0].span == SPAN


def test_unknown_sample_dimension():
    ds = load(config("sequences", loss="mse", n=50, steps=6), (None, 1))
    assert ds.x_train.shape == (40, 6, 1)
    ds = load(config("digits"), (None, 8))
    assert ds.x_train.shape == (1438, 8, 8)


def test_missing_file_names_the_resolved_path(tmp_path):
    err = error_of(lambda: load(config("npz", path="nope/d.npz"), (2,), tmp_path))
    assert str((tmp_path / "nope" / "d.npz").resolve()) in str(err)
    assert err.diagnostics[0].span == SPAN


def test_csv_with_header_and_label_by_name(tmp_path):
    (tmp_path / "d.csv").write_text("a,label,b\n1,0,2\n3,1,4\n5,1,6\n7,0,8\n9,2,10\n")
    ds = load(config("csv", path="d.csv", label="label", test=0.2), (2,), tmp_path)
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    assert sorted(map(tuple, x.tolist())) == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]
    assert dict(zip(x[:, 0].tolist(), y.tolist(), strict=True)) == {1: 0, 3: 1, 5: 1, 7: 0, 9: 2}


def test_csv_without_header_label_by_index(tmp_path):
    (tmp_path / "d.csv").write_text("0.5,1.5,3\n2.5,3.5,4\n")
    ds = load(config("csv", loss="mse", path="d.csv", header=False, test=0.0), (2,), tmp_path)
    assert ds.x_train.shape == (2, 2) and ds.y_train.shape == (2, 1)
    assert sorted(ds.y_train[:, 0].tolist()) == [3, 4]
    ds0 = load(config("csv", loss="mse", path="d.csv", header=False, label=0, test=0.0), (2,),
               tmp_path)
    assert sorted(ds0.y_train[:, 0].tolist()) == [0.5, 2.5]


def test_csv_quotes_spaces_and_blank_lines(tmp_path):
    (tmp_path / "d.csv").write_text('\n"a", b ,y\n\n1, "2",0\n\n4,5,1\n')
    ds = load(config("csv", path="d.csv", label="y", test=0.0), (2,), tmp_path)
    order = np.argsort(ds.x_train[:, 0])
    np.testing.assert_array_equal(ds.x_train[order], [[1, 2], [4, 5]])
    np.testing.assert_array_equal(ds.y_train[order], [0, 1])


def test_csv_bad_cell_names_its_line(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n3,oops,1\n")
    err = error_of(lambda: load(config("csv", path="d.csv"), (2,), tmp_path))
    assert "d.csv:3:" in str(err) and "oops" in str(err) and "`b`" in str(err)


def test_csv_label_errors(tmp_path):
    (tmp_path / "d.csv").write_text("1,2,0\n3,4,1\n")
    err = error_of(lambda: load(config("csv", path="d.csv", header=False, label="y"), (2,),
                                tmp_path))
    assert "no header" in str(err)
    (tmp_path / "h.csv").write_text("a,b,y\n1,2,0\n3,4\n")
    assert "h.csv:3: 2 columns, expected 3" in str(error_of(
        lambda: load(config("csv", path="h.csv"), (2,), tmp_path)))


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder(tmp_path, compress):
    arrays = mnist_folder(tmp_path / "mnist", compress=compress)
    ds = load(config("idx", path="mnist", validation=0.2, test=None), (28, 28, 1), tmp_path)
    assert ds.x_train.shape == (40, 28, 28, 1) and ds.x_val.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.y_train.dtype == np.int64 and ds.x_train.max() <= 255
    # the training files, shuffled: same multiset of labels
    labels = np.sort(np.concatenate([ds.y_train, ds.y_val]))
    np.testing.assert_array_equal(labels, np.sort(arrays["train-labels-idx1-ubyte"]))


def test_idx_with_test_fraction_needs_only_training_files(tmp_path):
    mnist_folder(tmp_path / "m")
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / "m" / name).unlink()
    ds = load(config("idx", path="m", test=0.2), (784,), tmp_path)
    assert ds.x_train.shape == (40, 784) and ds.x_test.shape == (10, 784)
    err = error_of(lambda: load(config("idx", path="m", test=None), (784,), tmp_path))
    assert "t10k-images-idx3-ubyte" in str(err)


def test_idx_header_is_parsed():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    raw = bytes([0, 0, 0x0D, 3]) + struct.pack(">3I", 2, 3, 4) + a.astype(">f4").tobytes()
    out = parse_idx(raw, "f.idx")
    assert out.shape == (2, 3, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("raw, why", [
    (b"\x00\x00", "only 2 bytes"),
    (b"\x1f\x8b\x08\x03", "magic number"),
    (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 0]), "type code 0x42"),
    (bytes([0, 0, 8, 3, 0, 0, 0, 2]), "truncated header"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]), "truncated: dimensions [5]"),
])
def test_corrupt_idx_is_a_clear_error(raw, why):
    err = error_of(lambda: parse_idx(raw, "x.idx"))
    assert why in str(err) and "x.idx" in str(err)


def test_truncated_idx_file_in_a_folder(tmp_path):
    mnist_folder(tmp_path / "m", compress=True)
    path = tmp_path / "m" / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    err = error_of(lambda: load(config("idx", path="m"), (28, 28, 1), tmp_path))
    assert "truncated" in str(err) and "train-images-idx3-ubyte.gz" in str(err)
    path.write_bytes(path.read_bytes()[:30])  # a cut gzip stream
    assert "cannot read IDX file" in str(error_of(
        lambda: load(config("idx", path="m"), (28, 28, 1), tmp_path)))


# --- augmentation -----------------------------------------------------------------------------


def shifted_reference(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    for r in range(h):
        for c in range(w):
            if 0 <= r - dy < h and 0 <= c - dx < w:
                out[r, c] = img[r - dy, c - dx]
    return out


def test_shift_moves_each_image_with_zero_fill():
    x = np.random.default_rng(0).random((64, 10, 10, 2), dtype=np.float32) + 1
    before = x.copy()
    out = augment(x, [Step(name="shift", args={"fraction": 0.2})], np.random.default_rng(5))
    np.testing.assert_array_equal(x, before)  # input untouched
    assert out.shape == x.shape and out.dtype == np.float32
    offsets = set()
    for img, res in zip(x, out, strict=True):
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(shifted_reference(img, dy, dx), res)]
        assert len(match) == 1
        offsets.add(match[0])
    assert len(offsets) > 10  # offsets vary per image


def test_flip_mirrors_about_half_the_images():
    x = np.random.default_rng(0).random((400, 6, 6, 1), dtype=np.float32)
    for axis, dim in (("horizontal", 2), ("vertical", 1)):
        out = augment(x, [Step(name="flip", args={"axis": axis})], np.random.default_rng(1))
        flipped = np.array([np.array_equal(o, np.flip(i, axis=dim - 1)) for i, o in zip(x, out, strict=True)])
        same = np.array([np.array_equal(o, i) for i, o in zip(x, out, strict=True)])
        assert (flipped ^ same).all()
        assert 150 < flipped.sum() < 250


def test_noise_and_determinism():
    x = np.zeros((200, 5, 5, 1), np.float32)
    steps = [Step(name="noise", args={"std": 0.5}), Step(name="shift", args={"fraction": 0.2}),
             Step(name="flip", args={"axis": "vertical"})]
    a = augment(x, steps, np.random.default_rng(7))
    b = augment(x, steps, np.random.default_rng(7))
    c = augment(x, steps, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    noisy = augment(x, steps[:1], np.random.default_rng(7))
    assert abs(noisy.std() - 0.5) < 0.02 and noisy.dtype == np.float32


def test_image_augmentation_needs_images():
    step = Step(name="shift", args={"fraction": 0.1}, span=SPAN)
    err = error_of(lambda: augment(np.zeros((4, 8), np.float32), [step], np.random.default_rng()))
    assert err.diagnostics[0].span == SPAN


def test_augment_is_not_applied_by_the_loader():
    cfg = config("digits")
    with_aug = cfg.model_copy(update={"augment": [Step(name="noise", args={"std": 1.0})]})
    np.testing.assert_array_equal(load(cfg, (64,)).x_train, load(with_aug, (64,)).x_train)


def _traced_events(fn) -> int:
    """Python-level work of `fn()` (calls, lines, returns): a count, not a clock."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        count += 1
        return tracer

    outer = sys.gettrace()
    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(outer)
    return count


def test_shift_is_vectorised():
    # One slice copy per distinct offset: the Python work does not grow with the images.
    steps = [Step(name="shift", args={"fraction": 0.1})]
    augment(np.zeros((2, 28, 28, 1), np.float32), steps, np.random.default_rng(0))  # lazy imports
    work = []
    for n in (500, 5000):
        x = np.random.default_rng(0).random((n, 28, 28, 1), dtype=np.float32)
        rng = np.random.default_rng(0)
        work.append(_traced_events(lambda x=x, rng=rng: augment(x, steps, rng)))
    assert work[1] <= work[0] * 1.1, work
