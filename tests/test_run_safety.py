"""What `dslc train`, `eval` and `compile` do with the user's files and odd settings: nothing
replaced by surprise (a foreign file only with --force, a FIFO or device never), every refusal
a clear error (exit 2), never an internal error."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from dslc.cli import main
from dslc.compiler import compile_text
from dslc.diagnostics import DslError

SMALL = """
model m {
    input x: f32[8, 8]
    flatten
    dense(10, activation=softmax)
}
train m {
    data      = digits
    loss      = sparse_categorical_crossentropy
    optimizer = adam
    metrics   = [accuracy]
    epochs    = 1
}
"""


def dslc(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_out_that_is_a_file_is_refused_before_training(tmp_path, capsys):
    spec = write(tmp_path / "m.dl", SMALL)
    write(tmp_path / "afile", "mine")
    code, out, err = dslc(capsys, "train", spec, "--out", tmp_path / "afile")
    assert code == 2 and "is a file" in err and "epoch" not in out
    assert (tmp_path / "afile").read_text() == "mine"


def test_files_of_the_user_in_out_are_not_replaced(tmp_path, capsys):
    spec = write(tmp_path / "a" / "m.dl", SMALL)
    theirs = write(tmp_path / "b" / "m.dl", "# another project's spec\n")
    code, _, err = dslc(capsys, "train", spec, "--out", tmp_path / "b")
    assert code == 2 and "m.dl" in err and "--force" in err
    assert theirs.read_text() == "# another project's spec\n"


def test_resume_refuses_a_changed_model_but_takes_more_epochs(tmp_path, capsys):
    spec = write(tmp_path / "m.dl", SMALL)
    out = tmp_path / "run"
    assert dslc(capsys, "train", spec, "--out", out)[0] == 0
    write(spec, SMALL.replace("epochs    = 1", "epochs    = 2") + "# a comment\n")
    code, out_text, _ = dslc(capsys, "train", spec, "--out", out, "--resume")
    assert code == 0 and "resuming after epoch 1" in out_text
    write(spec, SMALL.replace("activation=softmax", "activation=softmax, use_bias=false")
          .replace("epochs    = 1", "epochs    = 3"))
    code, _, err = dslc(capsys, "train", spec, "--out", out, "--resume")
    assert code == 2 and "spec changed" in err


def test_the_spec_copy_keeps_its_imports_resolvable(tmp_path, capsys):
    write(tmp_path / "l1" / "common.dl", "let width = 16\n")
    write(tmp_path / "l2" / "common.dl", "let act = relu\n")
    spec = write(tmp_path / "main.dl", 'use "l1/common.dl"\nuse "l2/common.dl"\n' + SMALL.replace(
        "    flatten\n", "    flatten\n    dense(width, activation=act)\n"))
    out = tmp_path / "run"
    assert dslc(capsys, "train", spec, "--out", out)[0] == 0
    assert (out / "l1" / "common.dl").read_text() == "let width = 16\n"
    assert (out / "l2" / "common.dl").read_text() == "let act = relu\n"
    code, text, _ = dslc(capsys, "check", out / "main.dl")
    assert code == 0 and "dense_1" in text


def test_outputs_get_the_usual_file_mode(tmp_path, capsys):
    spec = write(tmp_path / "m.dl", SMALL)
    old = os.umask(0o022)
    try:
        assert dslc(capsys, "train", spec, "--out", tmp_path / "run")[0] == 0
        assert dslc(capsys, "compile", spec, "--target", "torch", "-o", tmp_path / "gen")[0] == 0
    finally:
        os.umask(old)
    for path in [*(tmp_path / "run").iterdir(), tmp_path / "gen" / "m.py"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_compile_does_not_replace_a_file_it_did_not_write(tmp_path, capsys):
    spec = write(tmp_path / "m.dl", SMALL)
    mine = write(tmp_path / "gen" / "m.py", "print('mine')\n")
    code, _, err = dslc(capsys, "compile", spec, "--target", "torch", "-o", tmp_path / "gen")
    assert code == 2 and "not written by dslc" in err
    assert mine.read_text() == "print('mine')\n"
    mine.unlink()
    for _ in range(2):  # its own output it replaces
        assert dslc(capsys, "compile", spec, "--target", "torch", "-o", tmp_path / "gen")[0] == 0
    code, _, err = dslc(capsys, "compile", spec, "--target", "torch", "-o", mine.parent / "x.dl")
    assert code == 0  # a folder named x.dl is made
    code, _, err = dslc(capsys, "compile", spec, "--target", "keras", "-o", spec)
    assert code == 2 and "is a file" in err


@pytest.mark.parametrize("target", ["torch", "keras"])
def test_compile_force_replaces_a_foreign_file_but_never_a_fifo(tmp_path, capsys, target):
    spec = write(tmp_path / "m.dl", SMALL)
    mine = write(tmp_path / "gen" / "m.py", "print('mine')\n")
    code, _, err = dslc(capsys, "compile", spec, "--target", target, "-o", mine.parent)
    assert code == 2 and "not written by dslc" in err and "--force" in err
    assert mine.read_text() == "print('mine')\n"
    code, _, err = dslc(capsys, "compile", spec, "--target", target, "-o", mine.parent, "--force")
    assert code == 0, err
    assert mine.read_text().startswith("# Generated by dslc")
    mine.unlink()
    os.mkfifo(mine)
    code, _, err = dslc(capsys, "compile", spec, "--target", target, "-o", mine.parent, "--force")
    assert code == 2 and "not a regular file" in err
    assert stat.S_ISFIFO(os.lstat(mine).st_mode)


def test_labels_beyond_the_output_classes_are_refused(tmp_path, capsys):
    rows = "\n".join(f"{i},{i % 5},{i % 4}" for i in range(20))
    write(tmp_path / "d.csv", "a,b,label\n" + rows + "\n")
    spec = write(tmp_path / "m.dl", """
model m { input x: f32[2]
  dense(3, activation=softmax) }
train m { data = csv("d.csv", label="label")
  loss = sparse_categorical_crossentropy
  optimizer = adam
  epochs = 1 }
""")
    code, _, err = dslc(capsys, "train", spec, "--out", tmp_path / "run")
    assert code == 2 and "up to class 3" in err and "3 classes" in err and "dense(4" in err


def test_an_empty_test_split_is_refused(tmp_path, capsys):
    spec = write(tmp_path / "m.dl", SMALL.replace("data      = digits", "data = digits(test=0)"))
    code, _, err = dslc(capsys, "train", spec, "--out", tmp_path / "run")
    assert code == 2 and "test split is empty" in err


def test_json_figures_are_standard_json():
    from dslc.train.outputs import json_text

    text = json_text({"loss": float("nan"), "a": np.float32(np.inf), "b": [np.float64(1.5)]})
    assert json.loads(text) == {"loss": None, "a": None, "b": [1.5]}


def test_weights_of_a_dtype_numpy_lacks(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    save_file({"dense_1.kernel": torch.zeros(64, 10, dtype=torch.bfloat16)},
              str(tmp_path / "w.safetensors"))
    spec = write(tmp_path / "m.dl", SMALL)
    code, _, err = dslc(capsys, "eval", spec, "--weights", tmp_path / "w.safetensors")
    assert code == 2 and "BF16" in err and "float32" in err


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--seed", "99999999999999999999"]])
def test_seeds_out_of_range(tmp_path, capsys, args):
    spec = write(tmp_path / "m.dl", SMALL)
    with pytest.raises(SystemExit) as info:
        main(["train", str(spec), *args])
    assert info.value.code == 2 and "outside 0..4294967295" in capsys.readouterr().err


@pytest.mark.parametrize("setting, message", [
    ('epochs = "3"', "`epochs` must be a whole number"),
    ("epochs = 2.5", "`epochs` must be a whole number"),
    ("seed = -1", "`seed` must be a whole number in 0..4,294,967,295"),
    ("validation = 1.5", "`validation` must be a fraction"),
    ("shuffle = 1", "`shuffle` must be `true` or `false`"),
    ('augment = [shift("abc")]', "`shift` needs a fraction in [0, 1)"),
    ("augment = [shift(-1)]", "`shift` needs a fraction in [0, 1)"),
    ("augment = [noise(std=-1)]", "`noise` needs a standard deviation >= 0"),
    ("preprocess = [scale(0)]", "`scale` needs a non-zero number"),
    ("preprocess = [one_hot(1)]", "`one_hot` needs a whole number of classes >= 2"),
])
def test_train_settings_are_checked(setting, message):
    text = SMALL.replace("input x: f32[8, 8]", "input x: f32[8, 8, 1]").replace(
        "    epochs    = 1\n", f"    {setting}\n")
    with pytest.raises(DslError) as info:
        compile_text(text, "m.dl").train_config("m")
    diag = info.value.diagnostics[0]
    assert message in diag.message and diag.span is not None


def test_validation_that_leaves_no_training_says_so():
    from dslc.data.loaders import load_dataset

    spec = compile_text("model m { input x: f32[1]\n dense(1) }\n"
                        "train m { data = linear(n=10)\n loss = mse\n optimizer = sgd\n"
                        " validation = 0.99 }\n", "m.dl")
    with pytest.raises(DslError, match="leaves none for training"):
        load_dataset(spec.train_config("m"), (1,), ".", 0)


def test_resume_keeps_the_seed_and_batch_of_the_run(tmp_path, capsys):
    spec = write(tmp_path / "m.dl", SMALL)
    out = tmp_path / "run"
    assert dslc(capsys, "train", spec, "--out", out, "--seed", "4", "--batch", "16")[0] == 0
    for flag, value in (("--seed", "5"), ("--batch", "32")):
        code, _, err = dslc(capsys, "train", spec, "--out", out, "--resume", "--epochs", "2",
                            flag, value)
        assert code == 2 and f"without {flag}" in err
    code, _, err = dslc(capsys, "train", spec, "--out", out, "--resume", "--force")
    assert code == 2 and "give one" in err
    code, text, _ = dslc(capsys, "train", spec, "--out", out, "--resume", "--epochs", "2")
    assert code == 0 and "batch 16" in text
    assert json.loads((out / "metrics.json").read_text())["seed"] == 4


def test_the_spec_copy_of_a_spec_using_a_parent_folder(tmp_path, capsys):
    write(tmp_path / "a" / "common.dl", "let width = 16\n")
    spec = write(tmp_path / "a" / "spec" / "main.dl", 'use "../common.dl"\n' + SMALL.replace(
        "    flatten\n", "    flatten\n    dense(width, activation=relu)\n"))
    write(tmp_path / "elsewhere" / "common.dl", "not a spec\n")  # what `../` from --out reaches
    out = tmp_path / "elsewhere" / "run"
    assert dslc(capsys, "train", spec, "--out", out)[0] == 0
    copy = out / "spec" / "spec" / "main.dl"
    assert (out / "spec" / "common.dl").read_text() == "let width = 16\n"
    code, text, _ = dslc(capsys, "check", copy)
    assert code == 0 and "dense_1" in text


def test_run_does_not_write_its_outputs_over_its_input(tmp_path, capsys):
    spec = write(tmp_path / "m.dl", SMALL)
    assert dslc(capsys, "compile", spec, "--target", "onnx", "-o", tmp_path / "m.onnx")[0] == 0
    rows = np.random.default_rng(0).random((3, 64))
    np.savetxt(tmp_path / "x.csv", rows, delimiter=",")
    before = (tmp_path / "x.csv").read_text()
    code, _, err = dslc(capsys, "run", tmp_path / "m.onnx", "--input", tmp_path / "x.csv",
                        "--output", tmp_path / "x.csv")
    assert code == 2 and "is the input file" in err
    assert (tmp_path / "x.csv").read_text() == before
    # CSV rows are samples even when the model's sample is 2-D ([8, 8] here)
    code, out, _ = dslc(capsys, "run", tmp_path / "m.onnx", "--input", tmp_path / "x.csv")
    assert code == 0 and len([ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]) == 3


def test_batch_full_on_the_command_line(tmp_path, capsys):
    spec = write(tmp_path / "m.dl", SMALL)
    code, text, _ = dslc(capsys, "train", spec, "--out", tmp_path / "run", "--batch", "full")
    assert code == 0 and "batch full" in text
    with pytest.raises(SystemExit):
        main(["train", str(spec), "--batch", "half"])
    assert "not a whole number or `full`" in capsys.readouterr().err
