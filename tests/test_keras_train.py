"""`dslc compile/train/eval` with the Keras backend, through the CLI as a user runs it.

Acceptance: digits_cnn ≥ 97 % test accuracy, digits_mlp ≥ 95 %, linear regression recovers
3 and 1; weights trained with keras give the same test figures in torch, and the other way
round; TensorFlow's start-up noise stays off stderr unless --verbose.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from conftest import run_dslc  # noqa: E402

from dslc.compiler import compile_file  # noqa: E402
from dslc.weights import read_weights  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
# What TensorFlow prints on import or first use when nothing silences it.
NOISE = re.compile(r"oneDNN|absl|cpu_feature_guard|I0000|W0000|E0000|tensorflow/core|"
                   r"TF_ENABLE_ONEDNN_OPTS|WARNING:tensorflow")

pytestmark = pytest.mark.slow


def _ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _eval(spec: str, weights: Path, backend: str) -> dict:
    done = _ok(run_dslc("eval", SPECS / spec, "--weights", weights, "--backend", backend,
                        "--json"))
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("keras_cnn") / "run"
    done = _ok(run_dslc("train", SPECS / "digits_cnn.dl", "--backend", "keras", "--out", out))
    return out, done


def test_compile_writes_a_module_that_builds(tmp_path):
    _ok(run_dslc("compile", SPECS / "cnn_mnist.dl", "--target", "keras", "-o", tmp_path))
    path = tmp_path / "cnn_mnist.py"
    spec = importlib.util.spec_from_file_location("compiled_cnn_mnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_cnn_mnist()
    assert model.count_params() == 225_034
    assert model.get_layer("conv2d_2").kernel.shape == (3, 3, 32, 64)


def test_digits_cnn_trains_to_97_percent_without_tf_noise(cnn_run):
    out, done = cnn_run
    assert _metrics(out)["test"]["accuracy"] >= 0.97
    for name in ("weights.safetensors", "history.csv", "metrics.json", "curves.png"):
        assert (out / name).exists(), name
    assert not NOISE.search(done.stderr), done.stderr
    assert not NOISE.search(done.stdout), done.stdout
    assert "with keras on cpu" in done.stdout
    _, meta = read_weights(out / "weights.safetensors")
    assert meta["backend"] == "keras"


def test_keras_weights_give_the_same_figures_in_torch(cnn_run):
    out, _ = cnn_run
    pytest.importorskip("torch")
    keras_report = _eval("digits_cnn.dl", out / "weights.safetensors", "keras")
    torch_report = _eval("digits_cnn.dl", out / "weights.safetensors", "torch")
    assert round(keras_report["metrics"]["accuracy"], 4) == \
        round(_metrics(out)["test"]["accuracy"], 4)
    for name, value in keras_report["metrics"].items():
        assert round(torch_report["metrics"][name], 4) == round(value, 4), name
    assert abs(torch_report["loss"] - keras_report["loss"]) < 1e-5


def test_torch_weights_give_the_same_figures_in_keras(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "torch_mlp"
    _ok(run_dslc("train", SPECS / "digits_mlp.dl", "--backend", "torch", "--out", out))
    torch_report = _eval("digits_mlp.dl", out / "weights.safetensors", "torch")
    keras_report = _eval("digits_mlp.dl", out / "weights.safetensors", "keras")
    for name, value in torch_report["metrics"].items():
        assert round(keras_report["metrics"][name], 4) == round(value, 4), name
    assert keras_report["confusion_matrix"] == torch_report["confusion_matrix"]


def test_digits_mlp_trains_to_95_percent(tmp_path):
    out = tmp_path / "mlp"
    _ok(run_dslc("train", SPECS / "digits_mlp.dl", "--backend", "keras", "--out", out))
    assert _metrics(out)["test"]["accuracy"] >= 0.95


def test_linear_regression_recovers_slope_and_intercept(tmp_path):
    out = tmp_path / "linear"
    _ok(run_dslc("train", SPECS / "linear_regression.dl", "--backend", "keras", "--out", out))
    weights, _ = read_weights(out / "weights.safetensors")
    assert abs(float(weights["dense_1.kernel"].item()) - 3.0) < 0.1
    assert abs(float(weights["dense_1.bias"].item()) - 1.0) < 0.1


def test_resume_continues_exactly(tmp_path):
    """Optimizer state and dropout seeds survive a stop: 2 + 2 epochs == 4 epochs."""
    spec = SPECS / "digits_cnn.dl"
    straight, split = tmp_path / "straight", tmp_path / "split"
    _ok(run_dslc("train", spec, "--backend", "keras", "--epochs", "4", "--out", straight))
    _ok(run_dslc("train", spec, "--backend", "keras", "--epochs", "2", "--out", split))
    done = _ok(run_dslc("train", spec, "--backend", "keras", "--epochs", "4", "--resume",
                        "--out", split))
    assert "resuming after epoch 2" in done.stdout
    a, _ = read_weights(straight / "weights.safetensors")
    b, _ = read_weights(split / "weights.safetensors")
    for key in a:
        np.testing.assert_allclose(b[key], a[key], atol=1e-5, err_msg=key)


def test_divergence_stops_with_a_message(tmp_path):
    text = (SPECS / "linear_regression.dl").read_text().replace("sgd(lr=0.1)", "sgd(lr=1e30)")
    spec = tmp_path / "diverge.dl"
    spec.write_text(text)
    done = run_dslc("train", spec, "--backend", "keras", "--out", tmp_path / "run")
    assert done.returncode == 2, done.stderr
    assert "the loss became" in done.stderr and "Traceback" not in done.stderr


def test_verbose_lets_tensorflow_speak(tmp_path):
    graph = compile_file(SPECS / "linear_regression.dl").model()
    assert graph.param_count == 2
    done = _ok(run_dslc("--verbose", "train", SPECS / "linear_regression.dl", "--backend",
                        "keras", "--epochs", "1", "--out", tmp_path / "run"))
    quiet = _ok(run_dslc("train", SPECS / "linear_regression.dl", "--backend", "keras",
                         "--epochs", "1", "--out", tmp_path / "run2"))
    assert not NOISE.search(quiet.stderr), quiet.stderr
    # This TensorFlow build announces oneDNN on import; with --verbose the user sees it.
    if "oneDNN" not in done.stderr and "absl" not in done.stderr:
        pytest.skip("this TensorFlow build prints nothing on import")
