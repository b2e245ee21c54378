"""`dslc train` fails early and says what it did (issue 11, items 16 and 17 and the friction
list): an unwritable --out before any work, data errors before a framework is imported,
library warnings as one `note:` line, a resume hint after Ctrl-C, every written file named."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import warnings

import numpy as np
import pytest

from dslc import cli
from dslc.train import run as train_run

SMALL = """
model small {
    input image: f32[8, 8, 1]
    flatten
    dense(10, activation=softmax)
}
train small {
    data       = digits(test=0.2)
    preprocess = [scale(1/16)]
    loss       = sparse_categorical_crossentropy
    optimizer  = adam(lr=3e-3)
    metrics    = [accuracy]
    epochs     = 3
    batch      = 128
    seed       = 1
}
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "small.dl"
    path.write_text(SMALL)
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if training gets as far as loading data."""
    def dataset(*args, **kwargs):
        raise AssertionError("the data was loaded before --out was checked")

    monkeypatch.setattr(train_run, "_dataset", dataset)


# -- item 16: --out is checked before any work ---------------------------------------------

def test_out_under_a_regular_file_fails_before_training(spec, tmp_path, capsys, no_work):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "run"
    assert cli.main(["train", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'file'} is a file, not a folder" in err and ".tmp" not in err


def test_a_read_only_out_folder_fails_before_training(spec, tmp_path, capsys, no_work,
                                                      monkeypatch):
    # Tests run as root, which permission bits do not stop: the folder is read-only as
    # os.access sees it (as a read-only mount would make it for root as well).
    folder = tmp_path / "ro"
    folder.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(folder)
                        else real(p, mode, **kw))
    for out in (folder, folder / "new" / "run"):  # the folder itself, or one to be made in it
        assert cli.main(["train", str(spec), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"the folder {folder} is not writable" in err, err
        assert not (folder / "new").exists()


def test_data_errors_come_before_the_framework_is_imported(root, tmp_path):
    # a copy of cnn_small that reads MNIST IDX files that are not there (no download)
    text = (root / "specs" / "cnn_small.dl").read_text()
    spec = tmp_path / "cnn_small.dl"
    spec.write_text(re.sub(r"data\s*=\s*mnist\(([^)]*)\)",
                           lambda m: 'data = idx("missing/"' + (", " + m[1] if m[1] else "") + ")",
                           text))
    assert 'idx("missing/"' in spec.read_text()
    code = ("import sys; from dslc.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, [m for m in ('torch', 'keras', 'tensorflow') if m in sys.modules])")
    for backend in ("torch", "keras"):
        res = subprocess.run([sys.executable, "-c", code, "train", str(spec),
                              "--out", str(tmp_path / backend), "--backend",
                              backend], capture_output=True, text=True, timeout=300)
        assert res.stdout.strip() == "2 []", (res.stdout, res.stderr)
        assert "not found" in res.stderr


# -- item 17: library warnings become notes ------------------------------------------------

def test_library_warnings_are_one_note_each(monkeypatch, capsys):
    def command(args):
        with np.errstate(over="warn"):
            for _ in range(3):
                np.exp(np.float32(1000.0))
        warnings.warn("Image size (9 pixels) exceeds limit of 4 pixels, could be\n"
                      "decompression bomb DOS attack.", UserWarning, stacklevel=1)
        warnings.warn("Image size (9 pixels) exceeds limit of 4 pixels, could be\n"
                      "decompression bomb DOS attack.", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setitem(cli.COMMANDS, "check", command)
    assert cli.main(["check", "x.dl"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: overflow encountered in exp (RuntimeWarning)",
                   "note: Image size (9 pixels) exceeds limit of 4 pixels, could be "
                   "decompression bomb DOS attack. (UserWarning)"]


def test_a_note_does_not_hide_the_error_after_it(monkeypatch, capsys):
    from dslc.diagnostics import DslError

    def command(args):
        warnings.warn("something odd", RuntimeWarning, stacklevel=1)
        raise DslError("the real problem")

    monkeypatch.setitem(cli.COMMANDS, "check", command)
    assert cli.main(["check", "x.dl"]) == 2
    err = capsys.readouterr().err
    assert "note: something odd (RuntimeWarning)" in err and "the real problem" in err
    assert warnings.showwarning is not None and "Notes" not in repr(warnings.showwarning)


def test_pil_decompression_bomb_warning_is_a_note(root, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    Image = pytest.importorskip("PIL.Image")
    model = tmp_path / "digits.onnx"
    assert cli.main(["compile", str(root / "specs" / "digits_cnn.dl"), "--target", "onnx",
                     "-o", str(model)]) == 0
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # the 8x8 digit is "too large"
    capsys.readouterr()
    assert cli.main(["run", str(model), "--input", str(root / "examples" / "digit.png")]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "DecompressionBombWarning" in line]
    assert len(notes) == 1 and notes[0].startswith("note: Image size (64 pixels)"), err
    assert "warnings.warn" not in err and ".py:" not in err


# -- friction: Ctrl-C says how to resume; the last line names every file ------------------

class _StopAt(train_run.Progress):
    epoch = 1

    def start_epoch(self, epoch, epochs, samples):
        if epoch == self.epoch:
            raise KeyboardInterrupt
        super().start_epoch(epoch, epochs, samples)


def test_ctrl_c_says_how_to_resume(spec, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(train_run, "Progress", _StopAt)
    assert cli.main(["train", str(spec), "--out", str(out), "--epochs", "3"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted\n")
    assert f"epoch 1 of 3 is saved in {out / 'checkpoint.safetensors'}" in err
    command = err.split("to continue: ", 1)[1].strip()
    assert command == shlex.join(["dslc", "train", str(spec), "--out", str(out), "--resume",
                                  "--epochs", "3"])
    monkeypatch.setattr(train_run, "Progress", _StopAt.__mro__[1])
    assert cli.main(shlex.split(command)[1:]) == 0
    assert (out / "weights.safetensors").exists()


def test_ctrl_c_in_the_first_epoch_says_there_is_nothing_to_resume(spec, tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setattr(_StopAt, "epoch", 0)
    monkeypatch.setattr(train_run, "Progress", _StopAt)
    assert cli.main(["train", str(spec), "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert "no epoch finished" in err and "--resume" not in err


def test_the_last_line_names_every_file_written(tmp_path, capsys):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.dl").write_text(
        "block head(n: int) {\n    input x\n    flatten(x)\n"
        "    output dense(n, activation=softmax)\n}\n")
    spec = tmp_path / "small.dl"
    spec.write_text('use "lib/blocks.dl"\n' + SMALL.replace(
        "    flatten\n    dense(10, activation=softmax)", "    head(10)"))
    out = tmp_path / "run"
    assert cli.main(["train", str(spec), "--out", str(out), "--epochs", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"wrote {out}/: ")
    listed = last.split(": ", 1)[1].split(", ")
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert sorted(listed) == on_disk
    assert {"weights.safetensors", "checkpoint.safetensors", "history.csv", "metrics.json",
            "curves.png", "small.dl", "lib/blocks.dl"} == set(listed)
