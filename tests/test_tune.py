"""`dslc tune`: search spaces in the spec (`choice`, `range`), what the other commands do with
them, and Optuna studies on digits — pruning, the trial table, best.dl, resuming."""

from __future__ import annotations

import csv
import json

import pytest

from dslc.cli import main
from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.tune.space import fill, number_text

MODEL = """
model digits_mlp {
    input image: f32[8, 8, 1]
    flatten
    dense(width, activation=relu)
    dense(10, activation=softmax)
}
"""

# The spec's defaults: a learning rate too small for its few epochs, so a search can do better.
SPEC = """let width = choice(32, 16, 64)
let lr = range(1e-4, 3e-2, log=true, default=2e-4)
""" + MODEL + """
train digits_mlp {
    data       = digits(test=0.2)
    validation = 0.2
    preprocess = [scale(1/16)]
    loss       = sparse_categorical_crossentropy
    optimizer  = adam(lr=lr)
    metrics    = [accuracy]
    epochs     = 3
    batch      = choice(32, 64)
}
"""


def _write(tmp_path, text=SPEC, name="mlp.dl"):
    path = tmp_path / name
    path.write_text(text)
    return path


# the space --------------------------------------------------------------------------------

@pytest.mark.parametrize("line, name, default", [
    ("let width = choice(32, 16, 64)", "width", "32"),
    ("let width = choice(2 * 8, 64)", "width", "(2 * 8)"),
    ("let lr = range(1e-4, 1e-2, log=true)", "lr", "0.0001"),
    ("let lr = range(1e-4, 1e-2, log=true, default=2e-3)", "lr", "0.002"),
    ("let width = range(8, 64, step=8, default=32)", "width", "32"),
    ("let p = range(0.0, 0.5)", "p", "0.0"),
    ("let width = 2 * choice(8, 16)", "width", "8"),
])
def test_a_space_and_its_default(line, name, default):
    spec = compile_text(line + "\n" + MODEL.replace("width", "16"))
    [param] = spec.space
    assert (param.name, param.default_text) == (name, default)
    assert param.source in line


def test_spaces_in_train_settings_are_named_by_their_path():
    spec = compile_text(SPEC.replace("adam(lr=lr)", "adam(lr=range(1e-4, 1e-2, log=true))")
                        .replace("[scale(1/16)]", "[scale(choice(1/16, 1/8))]"))
    assert [p.name for p in spec.space] == ["width", "lr", "preprocess[0][0]", "optimizer.lr",
                                            "batch"]


def test_check_uses_the_defaults():
    spec = compile_text(SPEC)
    graph = spec.model()
    assert graph.node("dense_1").type.shape == (32,)
    cfg = spec.train_config()
    assert cfg.optimizer.lr == 2e-4 and cfg.batch == 32


@pytest.mark.parametrize("line, message", [
    ("let w = choice()", "`choice` needs at least one option"),
    ("let w = choice(1, 1)", "has the option `1` twice"),
    ("let w = choice(1, b=2)", "`choice` takes its options only"),
    ("let w = range(1)", "`range` takes a low and a high end"),
    ("let w = range(4, 1)", "`range` goes from low to high"),
    ("let w = range(0, 1, log=true)", "a `log` range needs a low end above 0"),
    ("let w = range(1, 4, log=1)", "`log` is `true` or `false`"),
    ("let w = range(1e-3, 1, log=true, step=0.1)", "`range` takes `log` or `step`, not both"),
    ("let w = range(1, 4, default=9)", "lies outside the range"),
    ("let w = range(1, 4, default=2.5)", "over whole numbers"),
    ("let w = range(0, 8, step=4, default=3)", "not `low` plus a multiple of `step`"),
    ("let w = range(1, 4, lo=2)", "`range` has no argument `lo`"),
    ("let w = range(a, 4)", "the ends of `range` must be numbers"),
    ("let w = choice(1, range(2, 3))", "search spaces do not nest"),
])
def test_space_errors_are_located(line, message):
    with pytest.raises(DslError) as err:
        compile_text(line + "\n" + MODEL.replace("width", "16"), "s.dl")
    d = err.value.diagnostics[0]
    assert message in d.message and d.span is not None and d.span.line == 1


def test_a_space_inside_a_model_is_refused():
    text = MODEL.replace("flatten", "let w = choice(8, 16)\n    flatten").replace("width", "16")
    with pytest.raises(DslError, match="goes in a top-level `let` or a train setting"):
        compile_text(text)


def test_a_space_in_a_for_loop_is_refused():
    text = MODEL.replace("flatten", "flatten\n    for w in [choice(8, 16)] { dense(w) }")
    with pytest.raises(DslError, match="goes in a top-level `let` or a train setting"):
        compile_text(text)
    text = MODEL.replace("flatten", "flatten\n    for w in [8] { let k = choice(8, 16) }")
    with pytest.raises(DslError, match="goes in a top-level `let` or a train setting"):
        compile_text(text)


def test_fill_gives_a_plain_spec():
    spec = compile_text(SPEC)
    text = fill(SPEC, spec.space, {"width": "64", "lr": "0.003", "batch": "64"})
    assert "choice" not in text and "range" not in text
    filled = compile_text(text)
    assert not filled.space
    assert filled.model().node("dense_1").type.shape == (64,)
    assert filled.train_config().optimizer.lr == 0.003 and filled.train_config().batch == 64


def test_number_text_keeps_floats_floats():
    assert [number_text(v) for v in (1.0, 0.000123456, 2e-3, 12345.6)] == \
        ["1.0", "0.000123", "0.002", "1.23e+04"]


def test_check_shows_the_space(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "search space" in out and "range(1e-4, 3e-2, log=true, default=2e-4)" in out
    assert main(["check", "--json", str(path)]) == 0
    space = json.loads(capsys.readouterr().out)["space"]
    assert space[0] == {"name": "width", "space": "choice(32, 16, 64)", "default": "32", "line": 1}


def test_train_and_eval_refuse_a_space(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "`dslc train` needs fixed values" in err and "dslc tune" in err
    assert f"{path}:1:13" in err
    assert not (tmp_path / "run").exists()


def test_tune_needs_a_space_and_a_validation_split(tmp_path, capsys):
    plain = _write(tmp_path, SPEC.replace("choice(32, 16, 64)", "32"), "plain.dl")
    plain.write_text(fill(plain.read_text(), compile_text(plain.read_text()).space,
                          {"lr": "0.001", "batch": "32"}))
    assert main(["tune", str(plain), "--trials", "2"]) == 2
    assert "has no search space" in capsys.readouterr().err
    no_val = _write(tmp_path, SPEC.replace("validation = 0.2", ""), "noval.dl")
    assert main(["tune", str(no_val), "--trials", "2"]) == 2
    assert "add `validation = 0.2`" in capsys.readouterr().err


# studies -----------------------------------------------------------------------------------

def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_tune_on_digits_beats_the_defaults_writes_best_and_resumes(tmp_path, capsys):
    pytest.importorskip("optuna")
    pytest.importorskip("torch")
    path = _write(tmp_path)
    out = tmp_path / "study"
    assert main(["tune", str(path), "--trials", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trial  state" in printed and "the spec's defaults" in printed
    outcome = json.loads((out / "tune.json").read_text())
    defaults, best = outcome["defaults"], outcome["best"]
    assert defaults["trial"] == 0
    # The done-when of issue 15: better than the defaults, or said that it was not.
    assert outcome["beat_defaults"] == (best["value"] > defaults["value"])
    assert outcome["beat_defaults"], outcome["verdict"]
    assert outcome["verdict"] in printed
    rows = _rows(out / "trials.csv")
    assert [r["trial"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert rows[0]["width"] == "32" and rows[0]["lr"] == "0.0002" and rows[0]["batch"] == "32"
    assert {r["state"] for r in rows} <= {"complete", "pruned"}
    assert "* best" in next(r for r in rows if r["trial"] == str(best["trial"]))["note"]
    # best.dl is a plain spec with the best trial's values, and `dslc check` accepts it
    best_text = (out / "best.dl").read_text()
    assert "choice" not in best_text.split("\n", 2)[2] and "range(" not in best_text
    assert f"let width = {best['values']['width']}" in best_text
    assert main(["check", str(out / "best.dl")]) == 0
    trial_dir = out / "trials" / f"{best['trial']:03d}"
    assert (trial_dir / "spec.dl").read_text() in best_text
    history = _rows(trial_dir / "history.csv")
    assert float(history[-1]["val_accuracy"]) == pytest.approx(best["value"], abs=1e-5)
    capsys.readouterr()
    # Running again continues the study: --trials counts them all.
    assert main(["tune", str(path), "--trials", "6", "--out", str(out)]) == 0
    assert "5 of 6 trials done, 1 to go" in capsys.readouterr().out
    rows = _rows(out / "trials.csv")
    assert [r["trial"] for r in rows] == [str(i) for i in range(6)]
    assert "the spec's defaults" in rows[0]["note"] and "defaults" not in rows[5]["note"]
    assert main(["tune", str(path), "--trials", "6", "--out", str(out)]) == 0
    assert "has 6 finished trials already" in capsys.readouterr().out
    # A changed spec does not continue a study whose trials would not compare.
    path.write_text(SPEC.replace("epochs     = 3", "epochs     = 4")
                    .replace("test=0.2", "test=0.25"))
    assert main(["tune", str(path), "--trials", "7", "--out", str(out)]) == 2
    assert "changed since the study" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_with_keras(tmp_path, capsys):
    pytest.importorskip("optuna")
    pytest.importorskip("keras")
    path = _write(tmp_path, SPEC.replace("epochs     = 3", "epochs     = 1"))
    out = tmp_path / "study"
    assert main(["tune", str(path), "--trials", "2", "--backend", "keras", "--no-prune",
                 "--out", str(out)]) == 0
    rows = _rows(out / "trials.csv")
    assert [r["state"] for r in rows] == ["complete", "complete"]
    assert main(["check", str(out / "best.dl")]) == 0


def test_a_trial_whose_values_make_no_model_fails_with_its_reason(tmp_path):
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("torch")
    import argparse

    from dslc.tune.study import Tuner

    text = SPEC.replace("    flatten", "    conv2d(4, kernel=k)\n    flatten")
    text = "let k = choice(3, 20)\n" + text
    path = _write(tmp_path, text)
    spec = compile_text(text, path)
    args = argparse.Namespace(metric=None, seed=None, out=str(tmp_path / "s"), backend="torch",
                              device="cpu", epochs=1, no_prune=True)
    tuner = Tuner(args, spec, text, spec.model(), spec.train_config())
    trial = optuna.trial.FixedTrial({"k": "20", "width": "16", "lr": 1e-3, "batch": "64"})
    with pytest.raises(DslError):
        tuner.objective(trial)
    assert trial.user_attrs["note"] == ("line 7: layer `conv2d_1` (conv2d): conv2d window 20x20 "
                                        "does not fit the input [8, 8, 1]")
    trial = optuna.trial.FixedTrial({"k": "3", "width": "16", "lr": 1e-3, "batch": "64"})
    assert 0.0 <= tuner.objective(trial) <= 1.0
    assert trial.user_attrs["values"] == {"k": "3", "width": "16", "lr": "0.001", "batch": "64"}


@pytest.mark.slow
def test_an_interrupted_study_continues_and_still_trains_the_defaults(tmp_path, capsys,
                                                                    monkeypatch):
    pytest.importorskip("optuna")
    pytest.importorskip("torch")
    from dslc.train import loop

    real_fit = loop.fit

    def interrupted(*args, **kwargs):
        raise loop.Interrupted(0)

    path = _write(tmp_path, SPEC.replace("epochs     = 3", "epochs     = 1"))
    out = tmp_path / "study"
    monkeypatch.setattr(loop, "fit", interrupted)
    assert main(["tune", str(path), "--trials", "2", "--out", str(out)]) == 130
    assert "keeps 0 finished trials; the same command continues it" in capsys.readouterr().err
    monkeypatch.setattr(loop, "fit", real_fit)
    assert main(["tune", str(path), "--trials", "2", "--out", str(out)]) == 0
    rows = _rows(out / "trials.csv")
    assert [(r["trial"], r["state"]) for r in rows] == [("0", "fail"), ("1", "complete"),
                                                        ("2", "complete")]
    assert rows[0]["note"] == "the spec's defaults; interrupted"
    assert "the spec's defaults" in rows[1]["note"] and rows[1]["width"] == "32"
    assert json.loads((out / "tune.json").read_text())["defaults"]["trial"] == 1
