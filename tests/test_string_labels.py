"""Tabular data as people have it (issue 15, item 7): class names in a CSV — text labels, or
scikit-learn's header of counts and names — become classes (sorted, stated), travel in the
weights' and the ONNX file's metadata, and `dslc eval` / `dslc run` print them. The
scikit-learn files are read from the installed package's data folder, as a user points at them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import load_iris, load_wine  # noqa: E402

from dslc.cli import main  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402
from dslc.data.loaders import load_dataset  # noqa: E402
from dslc.data.sources import SOURCE_FNS, Context  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402
from dslc.weights import read_weights  # noqa: E402

DATA = Path(sklearn.__file__).parent / "datasets" / "data"
IRIS = DATA / "iris.csv"
WINE = DATA / "wine_data.csv"
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


def _read(path, **args):
    return SOURCE_FNS["csv"]({"label": -1, "header": True, "path": str(path), **args},
                             Context(Path("."), 0, None))


def _spec(tmp_path: Path, data: str, width: int = 4, classes: int = 3, epochs: int = 40,
          loss: str = "sparse_categorical_crossentropy", name: str = "tab") -> Path:
    last = "dense(1, activation=sigmoid)" if loss == "binary_crossentropy" else \
        f"dense({classes}, activation=softmax)"
    path = tmp_path / f"{name}.dl"
    path.write_text(f"model {name} {{\n input x: f32[{width}]\n dense(16, activation=relu)\n"
                    f" {last}\n}}\ntrain {name} {{\n data = {data}\n preprocess = [standardize]\n"
                    f" loss = {loss}\n optimizer = adam(lr=0.01)\n metrics = [accuracy]\n"
                    f" epochs = {epochs}\n batch = 16\n}}\n", encoding="utf-8")
    return path


def _dslc(capsys, *args) -> tuple[str, str]:
    assert main([str(a) for a in args]) == 0
    return capsys.readouterr()


@pytest.mark.parametrize("path, load, classes", [
    (IRIS, load_iris, IRIS_CLASSES),
    (WINE, load_wine, ["class_0", "class_1", "class_2"]),
])
def test_scikit_learns_header_names_the_classes(path, load, classes):
    """The first row is `n_samples,n_features,class names...`: counts that fit the table make
    it scikit-learn's header, not column names."""
    assert path.read_text().splitlines()[0].split(",")[2:] == classes
    raw = _read(path)
    want = load()
    np.testing.assert_allclose(raw.x, want.data.astype(np.float32))
    np.testing.assert_array_equal(raw.y, want.target)
    assert raw.classes == classes and "header" in raw.classes_from


def test_a_header_whose_counts_do_not_fit_is_column_names(tmp_path):
    (tmp_path / "d.csv").write_text("3,1,a,b\n1,2,3,0\n4,5,6,1\n")  # says 3 rows: there are 2
    raw = _read(tmp_path / "d.csv")
    assert raw.classes is None and raw.y.tolist() == [0, 1]


def test_text_labels_are_classes_in_sorted_order(tmp_path):
    iris = load_iris()
    words = np.array(["dog", "cat", "bird"])[iris.target]  # sorted: bird, cat, dog
    lines = ["sepal_length,sepal_width,petal_length,petal_width,animal"]
    lines += [",".join(f"{v:g}" for v in row) + f", {w}" for row, w in zip(iris.data, words,
                                                                          strict=True)]
    (tmp_path / "pets.csv").write_text("\n".join(lines) + "\n")
    raw = _read(tmp_path / "pets.csv", label="animal")
    assert raw.classes == ["bird", "cat", "dog"] and "sorted" in raw.classes_from
    np.testing.assert_array_equal(raw.y, [["bird", "cat", "dog"].index(w) for w in words])
    np.testing.assert_allclose(raw.x, iris.data.astype(np.float32))


@pytest.mark.parametrize("text, message", [
    ("a,y\n1,cat\n2,3\n", r"mixes numbers \(`3`, line 3\) and text \(`cat`, line 2\)"),
    ("a,y\n1,cat\n2, \n", r"d.csv:3: the label is empty"),
    ("a,y\n1,cat\nx,dog\n", r"d.csv:3: column 1 \(`a`\) is 'x', not a number"),
    ("a,y\n1,cat\n2,dog,3\n", r"d.csv:3: 3 columns, expected 2"),
])
def test_text_label_errors_name_the_line(tmp_path, text, message):
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(DslError, match=message):
        _read(tmp_path / "d.csv")


def test_class_names_need_a_classification_loss(tmp_path):
    spec = compile_file(_spec(tmp_path, f'csv("{IRIS.as_posix()}")', loss="mse", classes=1))
    with pytest.raises(DslError, match="the labels are class names .*mse needs numbers"):
        load_dataset(spec.train_config(), (4,), tmp_path, 0)


@pytest.fixture(scope="module")
def iris_runs(tmp_path_factory):
    """`dslc train` on iris.csv, as a user points at it, on torch and keras."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("iris")
    spec = _spec(folder, f'csv("{IRIS.as_posix()}", test=0.2)', name="iris")
    outputs = {}
    for backend in ("torch", "keras"):
        if backend == "keras":
            pytest.importorskip("tensorflow")
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            assert main(["train", str(spec), "--backend", backend,
                         "--out", str(folder / backend)]) == 0
        outputs[backend] = stdout.getvalue() + stderr.getvalue()
    return spec, folder, outputs


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_train_on_iris_csv_states_the_classes_and_learns(iris_runs, backend):
    spec, folder, outputs = iris_runs
    assert ("classes (named in the header, scikit-learn's format): 0 setosa, 1 versicolor, "
            "2 virginica") in outputs[backend]
    metrics = json.loads((folder / backend / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9  # 0.933 on both (README), 30 test samples
    assert metrics["classes"] == IRIS_CLASSES
    _, meta = read_weights(folder / backend / "weights.safetensors")
    assert json.loads(meta["classes"]) == IRIS_CLASSES


def test_eval_labels_the_confusion_matrix_with_names(iris_runs, capsys):
    spec, folder, _ = iris_runs
    out, _ = _dslc(capsys, "eval", spec, "--weights", folder / "torch" / "weights.safetensors")
    lines = out.splitlines()
    at = lines.index("confusion matrix (rows: true class, columns: predicted):")
    assert lines[at + 1].split() == IRIS_CLASSES
    assert [row.split()[0] for row in lines[at + 2:at + 5]] == IRIS_CLASSES
    cm = [[int(v) for v in row.split()[1:]] for row in lines[at + 2:at + 5]]
    report = json.loads(_dslc(capsys, "eval", spec, "--weights",
                              folder / "torch" / "weights.safetensors", "--json")[0])
    assert report["classes"] == IRIS_CLASSES and report["confusion_matrix"] == cm


def test_export_and_run_print_class_names(iris_runs, capsys, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import onnx

    spec, folder, _ = iris_runs
    model = tmp_path / "iris.onnx"
    out, _ = _dslc(capsys, "export", spec, "--weights", folder / "torch" / "weights.safetensors",
                   "-o", model)
    assert "classes setosa, versicolor, virginica" in out
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert json.loads(meta["dslc.classes"]) == {"dense_2": IRIS_CLASSES}
    iris = load_iris()
    rows = [0, 1, 50, 51, 100, 101]  # two of each class, as the file holds them
    np.savetxt(tmp_path / "flowers.csv", iris.data[rows], delimiter=",", fmt="%g")
    out, _ = _dslc(capsys, "run", model, "--input", tmp_path / "flowers.csv")
    lines = out.strip().splitlines()
    assert lines[0].split() == ["row", "class", "probability"]
    assert [line.split()[1] for line in lines[1:]] == [IRIS_CLASSES[t] for t in iris.target[rows]]


def test_binary_text_labels_run_by_name(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = rng.normal(size=(200, 2)) + np.where(y[:, None] == 1, 2.0, -2.0)
    words = np.array(["dog", "cat"])[y]  # cats around +2; cat sorts first: class 0 is cat
    (tmp_path / "pets.csv").write_text("a,b,pet\n" + "".join(
        f"{a:.4f},{b:.4f},{w}\n" for (a, b), w in zip(x, words, strict=True)))
    spec = _spec(tmp_path, 'csv("pets.csv")', width=2, epochs=10, loss="binary_crossentropy")
    out, err = _dslc(capsys, "train", spec, "--out", tmp_path / "run")
    assert "classes (the label column's values, sorted): 0 cat, 1 dog" in out + err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["accuracy"] > 0.95
    _dslc(capsys, "export", spec, "--weights", tmp_path / "run" / "weights.safetensors",
          "-o", tmp_path / "pets.onnx")
    np.savetxt(tmp_path / "in.csv", [[-2.0, -2.0], [2.0, 2.0]], delimiter=",")
    out, _ = _dslc(capsys, "run", tmp_path / "pets.onnx", "--input", tmp_path / "in.csv")
    assert [line.split()[1] for line in out.strip().splitlines()[1:]] == ["dog", "cat"]


def test_eval_refuses_weights_trained_on_other_classes(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("a,y\n" + "".join(f"{i % 7},{'ab'[i % 2]}\n"
                                                      for i in range(40)))
    spec = _spec(tmp_path, 'csv("d.csv")', width=1, classes=3, epochs=1)
    _dslc(capsys, "train", spec, "--out", tmp_path / "run")
    (tmp_path / "d.csv").write_text("a,y\n" + "".join(f"{i % 7},{'abc'[i % 3]}\n"
                                                      for i in range(40)))
    assert main(["eval", str(spec), "--weights", str(tmp_path / "run" / "weights.safetensors")]) != 0
    assert "was trained with classes a, b; the data now has a, b, c" in capsys.readouterr().err


def test_export_refuses_more_names_than_outputs(iris_runs, capsys, tmp_path):
    pytest.importorskip("onnx")
    from dslc.weights import save_weights

    spec, folder, _ = iris_runs
    weights, meta = read_weights(folder / "torch" / "weights.safetensors")
    save_weights(tmp_path / "w.safetensors", weights,
                 {**meta, "classes": json.dumps([*IRIS_CLASSES, "rose"])})
    assert main(["export", str(spec), "--weights", str(tmp_path / "w.safetensors"),
                 "-o", str(tmp_path / "m.onnx")]) != 0
    assert "names 4 classes; model `iris`'s output dense_2 is a classifier of 3" in \
        capsys.readouterr().err
