"""`dslc compile --target onnx`, `export` and `run` under issue 11: no output replaced without
--force and none that is not a regular file ever, no silent NaN or header guess in inputs, and
the training data's value range recorded, reported and checked."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import ROOT  # noqa: E402

from dslc.backends.onnx.ranges import InputRange  # noqa: E402
from dslc.backends.onnx.record import check_output_path  # noqa: E402
from dslc.cli import build_parser, main  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402
from dslc.weights import init_weights, save_weights  # noqa: E402

DIGITS = ROOT / "specs" / "digits_cnn.dl"
MLP = ROOT / "specs" / "digits_mlp.dl"


def dslc(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _meta(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits_cnn compiled with seeded weights, and 4 samples in the training range 0..16."""
    folder = tmp_path_factory.mktemp("digits")
    assert main(["compile", str(DIGITS), "--target", "onnx", "-o", str(folder / "d.onnx")]) == 0
    x = np.random.default_rng(0).integers(0, 17, (4, 8, 8, 1)).astype(np.float32)
    np.save(folder / "x.npy", x)
    return folder / "d.onnx", folder / "x.npy"


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, init_weights(compile_file(DIGITS).model(), 1))
    return path


# -- item 1: nothing replaced without --force ---------------------------------------------------

def test_run_does_not_replace_an_output_without_force(digits, tmp_path, capsys):
    model, x = digits
    keep = tmp_path / "keep.csv"
    keep.write_text("precious\n")
    code, _, err = dslc(capsys, "run", model, "--input", x, "--output", keep)
    assert code == 2 and str(keep) in err and "already exists" in err and "--force" in err
    assert keep.read_text() == "precious\n"
    code, out, err = dslc(capsys, "run", model, "--input", x, "--output", keep, "--force")
    assert code == 0, err
    assert "4 rows" in out and keep.read_text() != "precious\n"


def test_export_does_not_replace_a_file_without_force(weights, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    out.write_bytes(b"someone's model")
    code, _, err = dslc(capsys, "export", DIGITS, "--weights", weights, "-o", out)
    assert code == 2 and str(out) in err and "--force" in err
    assert out.read_bytes() == b"someone's model"
    code, _, err = dslc(capsys, "export", DIGITS, "--weights", weights, "-o", out, "--force")
    assert code == 0, err
    onnx.checker.check_model(onnx.load(str(out)))


@pytest.mark.parametrize("into_folder", [False, True])
def test_compile_onnx_does_not_replace_a_file_without_force(tmp_path, capsys, into_folder):
    out = tmp_path / "other.onnx"
    target = out
    if into_folder:  # -o FOLDER writes FOLDER/<model>.onnx
        out, target = tmp_path, tmp_path / "digits_cnn.onnx"
    target.write_bytes(b"mine")
    code, _, err = dslc(capsys, "compile", DIGITS, "--target", "onnx", "-o", out)
    assert code == 2 and str(target) in err and "--force" in err
    assert target.read_bytes() == b"mine"
    assert dslc(capsys, "compile", DIGITS, "--target", "onnx", "-o", out, "--force")[0] == 0
    assert _meta(target)["dslc.model"] == "digits_cnn"


# -- item 2: an output that is not a regular file is never replaced -------------------------------

@pytest.fixture
def fifo(tmp_path):
    def make(name: str):
        path = tmp_path / name
        os.mkfifo(path)
        return path

    return make


def _still_a_fifo(path) -> bool:
    return stat.S_ISFIFO(os.lstat(path).st_mode)


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_run_refuses_a_fifo_output(digits, fifo, capsys, force):
    model, x = digits
    out = fifo("full.csv")
    code, _, err = dslc(capsys, "run", model, "--input", x, "--output", out, *force)
    assert code == 2 and str(out) in err and "not a regular file" in err and "FIFO" in err
    assert _still_a_fifo(out)


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_export_and_compile_refuse_a_fifo_output(weights, fifo, capsys, force):
    out = fifo("m.onnx")
    code, _, err = dslc(capsys, "export", DIGITS, "--weights", weights, "-o", out, *force)
    assert code == 2 and "not a regular file" in err
    code, _, err = dslc(capsys, "compile", DIGITS, "--target", "onnx", "-o", out, *force)
    assert code == 2 and "not a regular file" in err
    assert _still_a_fifo(out)


def test_a_device_is_refused_even_with_force():
    with pytest.raises(DslError, match="not a regular file.*character device"):
        check_output_path(Path("/dev/null"), "outputs", force=True)


# -- item 6: NaN and infinity, and what a header is ---------------------------------------------

def _csv(tmp_path, rows, header=True, name="x.csv"):
    lines = [",".join(f"p{i}" for i in range(64))] if header else []
    lines += [",".join(row) for row in rows]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(n: int = 3) -> list[list[str]]:
    rng = np.random.default_rng(1)
    return [[str(int(v)) for v in rng.integers(0, 17, 64)] for _ in range(n)]


@pytest.mark.parametrize("cell, shown", [("nan", "`nan` is not a finite number"),
                                         ("-Infinity", "`-Infinity` is not a finite number"),
                                         ("1e400", "`1e400` is not a finite number"),
                                         ("1e39", "`1e39` is too large for float32")])
def test_run_refuses_a_csv_cell_that_is_not_finite(digits, tmp_path, capsys, cell, shown):
    rows = _rows()
    rows[1][4] = cell
    path = _csv(tmp_path, rows)
    code, out, err = dslc(capsys, "run", digits[0], "--input", path)
    assert code == 2 and out == ""
    assert "line 3 (sample 1), column 5 (`p4`)" in err and shown in err
    assert "--allow-nan" in err


def test_allow_nan_warns_and_runs(digits, tmp_path, capsys):
    rows = _rows()
    rows[2][0] = "nan"
    path = _csv(tmp_path, rows, header=False)
    code, out, err = dslc(capsys, "run", digits[0], "--input", path, "--allow-nan")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "line 3 (sample 2), column 1" in warnings[0]
    assert "Warning" not in err  # no raw Python warning
    table = [line.split() for line in out.strip().splitlines()[1:]]
    assert len(table) == 3 and table[2][2] == "nan"


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e300])
def test_run_refuses_non_finite_arrays(digits, tmp_path, capsys, value):
    x = np.load(digits[1]).astype(np.float64)
    x[2, 3, 1, 0] = value
    np.save(tmp_path / "bad.npy", x)
    code, _, err = dslc(capsys, "run", digits[0], "--input", tmp_path / "bad.npy")
    assert code == 2 and "input `image` sample 2 at [3, 1, 0]" in err and "--allow-nan" in err
    code, _, err = dslc(capsys, "run", digits[0], "--input", tmp_path / "bad.npy", "--allow-nan")
    assert code == 0 and "warning:" in err and "Warning" not in err


def test_a_first_row_with_a_typo_is_an_error_not_a_header(digits, tmp_path, capsys):
    rows = _rows()
    rows[0][1] = "3x"
    path = _csv(tmp_path, rows, header=False)
    code, out, err = dslc(capsys, "run", digits[0], "--input", path)
    assert code == 2 and out == ""
    assert "line 1 (sample 0), column 2: `3x` is not a number" in err


def test_a_bad_cell_further_down_is_named(digits, tmp_path, capsys):
    rows = _rows()
    rows[2][63] = ""
    path = _csv(tmp_path, rows)
    code, _, err = dslc(capsys, "run", digits[0], "--input", path)
    assert code == 2 and "line 4 (sample 2), column 64 (`p63`): `` is not a number" in err
    rows[2] = rows[2][:10]
    code, _, err = dslc(capsys, "run", digits[0], "--input", _csv(tmp_path, rows, name="r.csv"))
    assert code == 2 and "line 4 has 10 cells, line 2 has 64" in err
    code, _, err = dslc(capsys, "run", digits[0], "--input",
                        _csv(tmp_path, [r[:10] for r in rows], name="h.csv"))
    assert code == 2 and "the header (line 1) names 64 columns, line 2 has 10 cells" in err


def test_a_header_of_names_is_still_a_header(digits, tmp_path, capsys):
    path = _csv(tmp_path, _rows())
    code, out, err = dslc(capsys, "run", digits[0], "--input", path)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 + 3


# -- item 18: the training data's value range ---------------------------------------------------

def test_export_records_the_range_of_a_built_in_source(weights, tmp_path, capsys):
    code, out, err = dslc(capsys, "export", DIGITS, "--weights", weights, "-o", tmp_path / "d.onnx")
    assert code == 0, err
    assert "training data values 0..16 (digits), light strokes on a dark background" in out
    rng = json.loads(_meta(tmp_path / "d.onnx")["dslc.input_range"])
    assert (rng["min"], rng["max"], rng["background"], rng["source"]) == (0, 16, "dark", "digits")


def test_an_idx_source_is_0_to_255_light_on_dark(tmp_path, capsys):
    spec = tmp_path / "m.dl"
    spec.write_text(DIGITS.read_text().replace("f32[8, 8, 1]", "f32[28, 28, 1]")
                    .replace("data       = digits(test=0.2)", 'data = idx("no/such/folder")'))
    assert dslc(capsys, "compile", spec, "--target", "onnx", "-o", tmp_path / "m.onnx")[0] == 0
    rng = InputRange.from_json(_meta(tmp_path / "m.onnx")["dslc.input_range"], "m.onnx")
    assert (rng.min, rng.max, rng.background) == (0, 255, "dark")


FILE_SPEC = """
model m {
    input x: f32[6]
    dense(3, activation=softmax)
}
train m {
    data       = npz("d.npz", test=0.25)
    preprocess = [standardize]
    loss       = sparse_categorical_crossentropy
    optimizer  = adam
    seed       = 3
}
"""


def test_export_measures_the_training_split_of_file_data(tmp_path, capsys):
    from dslc.data.loaders import load_dataset

    rng = np.random.default_rng(4)
    x = rng.uniform(2, 7, (40, 6)).astype(np.float32)
    x[0, 0], x[1, 1] = -50, 90  # one of them is likely in the test split
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 3, 40))
    spec = tmp_path / "m.dl"
    spec.write_text(FILE_SPEC)
    graph = compile_file(spec).model()
    save_weights(tmp_path / "w.safetensors", init_weights(graph, 0), {"seed": "9"})
    code, _, err = dslc(capsys, "export", spec, "--weights", tmp_path / "w.safetensors",
                        "-o", tmp_path / "m.onnx")
    assert code == 0, err
    got = json.loads(_meta(tmp_path / "m.onnx")["dslc.input_range"])
    cfg = compile_file(spec).train_config()
    raw = load_dataset(cfg.model_copy(update={"preprocess": []}), (6,), tmp_path, 9).x_train
    assert got["min"] == pytest.approx(float(raw.min())) and got["max"] == pytest.approx(
        float(raw.max()))
    assert got["mean"] == pytest.approx(float(raw.mean(dtype=np.float64)), rel=1e-6)
    assert got["source"] == "npz training split" and len(raw) == 30

    (tmp_path / "d.npz").unlink()  # the data gone: no range, a note, still an export
    code, _, err = dslc(capsys, "export", spec, "--weights", tmp_path / "w.safetensors",
                        "-o", tmp_path / "m.onnx", "--force")
    assert code == 0, err
    assert "not recording the training data's value range" in err and "d.npz" in err
    assert "dslc.input_range" not in _meta(tmp_path / "m.onnx")


def _png(path, pixels: np.ndarray):
    from PIL import Image

    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def test_run_on_an_image_says_what_the_model_expects_and_warns_on_the_other_polarity(
        digits, tmp_path, capsys):
    from sklearn.datasets import load_digits

    one = load_digits().images[0]  # a 0, light on dark, 0..16
    light_on_dark = _png(tmp_path / "digit.png", np.round(one * 255 / 16))
    code, out, err = dslc(capsys, "run", digits[0], "--input", light_on_dark)
    assert code == 0, err
    assert "expects values 0..16 (digits), light strokes on a dark background" in err
    assert "warning" not in err

    dark_on_light = _png(tmp_path / "inverted.png", 255 - np.round(one * 255 / 16))
    code, out, err = dslc(capsys, "run", digits[0], "--input", dark_on_light)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: inverted.png is mostly light")
    assert "invert it" in warnings[0]
    assert len(out.strip().splitlines()) == 2  # the answer is still given


def test_the_polarity_rule_on_every_digit():
    from sklearn.datasets import load_digits

    rng = InputRange.known("digits")
    assert rng is not None
    images = load_digits().images
    assert not any(rng.image_warning("d", im) for im in images)
    assert all(rng.image_warning("d", 16 - im) for im in images)


def test_run_warns_about_arrays_far_outside_the_range(digits, tmp_path, capsys):
    x = np.load(digits[1])
    code, _, err = dslc(capsys, "run", digits[0], "--input", digits[1])
    assert code == 0 and "warning" not in err
    np.save(tmp_path / "x255.npy", x * 255 / 16)  # 0..255 pixels for a model trained on 0..16
    code, _, err = dslc(capsys, "run", digits[0], "--input", tmp_path / "x255.npy")
    assert code == 0, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert "far outside the training data's 0..16 (digits)" in line


def test_a_model_without_a_range_says_so_for_images(tmp_path, capsys):
    spec = tmp_path / "m.dl"
    spec.write_text("model m {\n input x: f32[8, 8, 1]\n flatten\n dense(2, activation=softmax)\n}\n")
    assert dslc(capsys, "compile", spec, "--target", "onnx", "-o", tmp_path / "m.onnx")[0] == 0
    code, _, err = dslc(capsys, "run", tmp_path / "m.onnx", "--input",
                        _png(tmp_path / "a.png", np.zeros((8, 8))))
    assert code == 0 and "records no training value range" in err


# -- help -------------------------------------------------------------------------------------

def _subcommand(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["run", "export"])
def test_every_flag_has_help(command):
    assert [a.dest for a in _subcommand(command)._actions if not a.help] == []
    assert "--force" in _subcommand(command).format_help()
    assert "--force" in _subcommand("compile").format_help()
