"""The shared training loop and the torch trainer: resume, NaN stop, full batch, losses,
optimizers, outputs, eval. Small specs, in process (fast)."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.torch import runtime as torch_runtime  # noqa: E402
from dslc.backends.torch.codegen import fused_activation  # noqa: E402
from dslc.compiler import compile_text  # noqa: E402
from dslc.data.loaders import Dataset  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402
from dslc.ir.train import Loss, Optimizer  # noqa: E402
from dslc.train import outputs  # noqa: E402
from dslc.train.loop import Diverged, fit  # noqa: E402
from dslc.train.metrics import numpy_loss  # noqa: E402
from dslc.train.progress import Progress, Silent  # noqa: E402
from dslc.train.run import eval_command, train_command  # noqa: E402
from dslc.weights import init_weights, read_weights  # noqa: E402

# Dropout, augmentation and Adam state: everything a resumed run must reproduce.
RESUMABLE = """
model small {
    input image: f32[8, 8, 1]
    conv2d(4, kernel=3, activation=relu)
    maxpool2d(2)
    flatten
    dense(16, activation=relu)
    dropout(0.3)
    dense(10, activation=softmax)
}
train small {
    data       = digits(test=0.2)
    preprocess = [scale(1/16)]
    augment    = [shift(0.1), noise(0.02)]
    loss       = sparse_categorical_crossentropy
    optimizer  = adam(lr=3e-3)
    metrics    = [accuracy]
    validation = 0.1
    epochs     = 3
    batch      = 64
    seed       = 5
}
"""


def _spec(tmp_path, text=RESUMABLE, name="small.dl"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _args(spec, out, **kw):
    base = dict(spec=str(spec), backend="torch", device="cpu", epochs=None, batch=None,
                seed=None, out=str(out), resume=False, model=None)
    return argparse.Namespace(**{**base, **kw})


def test_resume_ends_with_the_same_weights(tmp_path, capsys):
    spec = _spec(tmp_path)
    assert train_command(_args(spec, tmp_path / "full")) == 0
    assert train_command(_args(spec, tmp_path / "split", epochs=1)) == 0
    assert train_command(_args(spec, tmp_path / "split", resume=True)) == 0
    full, _ = read_weights(tmp_path / "full" / "weights.safetensors")
    split, _ = read_weights(tmp_path / "split" / "weights.safetensors")
    assert set(full) == set(split)
    for key in full:
        np.testing.assert_array_equal(full[key], split[key], err_msg=key)
    a = (tmp_path / "full" / "history.csv").read_text().splitlines()
    b = (tmp_path / "split" / "history.csv").read_text().splitlines()
    assert len(a) == len(b) == 4
    assert [r.split(",")[:3] for r in a] == [r.split(",")[:3] for r in b]  # epoch, loss, acc
    assert "resuming after epoch 1" in capsys.readouterr().out


def test_run_folder_contents(tmp_path, capsys):
    spec = _spec(tmp_path)
    out = tmp_path / "run"
    assert train_command(_args(spec, out, epochs=2)) == 0
    names = {p.name for p in out.iterdir()}
    assert {"weights.safetensors", "checkpoint.safetensors", "history.csv", "metrics.json",
            "curves.png", "small.dl"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"loss", "accuracy"}
    assert 0 <= metrics["test"]["accuracy"] <= 1
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "small.dl").read_text() == RESUMABLE
    _, meta = read_weights(out / "weights.safetensors")
    assert meta["seed"] == "5" and meta["backend"] == "torch"
    # plain lines, not a bar, when stdout is not a terminal
    text = capsys.readouterr().out
    assert "epoch 1/2  loss" in text and "epoch 2/2  loss" in text and "\x1b[" not in text

    capsys.readouterr()
    assert eval_command(argparse.Namespace(spec=str(spec), weights=str(out / "weights.safetensors"),
                                           backend="torch", device="cpu", json=True,
                                           model=None)) == 0
    report = json.loads(capsys.readouterr().out)
    n = report["samples"]
    assert n == 359  # 20% of 1,797
    assert math.isclose(report["metrics"]["accuracy"], metrics["test"]["accuracy"])
    assert math.isclose(report["loss"], metrics["test"]["loss"], rel_tol=1e-6)
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == n
    assert math.isclose(np.trace(cm) / n, report["metrics"]["accuracy"])


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(DslError, match="nothing to resume"):
        train_command(_args(_spec(tmp_path), tmp_path / "none", resume=True))


def test_a_finished_run_is_not_overwritten_without_force(tmp_path):
    spec = _spec(tmp_path)
    out = tmp_path / "run"
    assert train_command(_args(spec, out, epochs=1)) == 0
    before = (out / "weights.safetensors").read_bytes()
    with pytest.raises(DslError, match="already holds") as err:
        train_command(_args(spec, out, epochs=1, seed=9))
    hint = err.value.diagnostics[0].hint
    assert "--force" in hint and "--resume" in hint
    assert (out / "weights.safetensors").read_bytes() == before
    assert train_command(_args(spec, out, epochs=1, seed=9, force=True)) == 0
    assert (out / "weights.safetensors").read_bytes() != before


class _FakeTrainer:
    """Diverges in epoch `bad` (0-based): a backend-neutral check of the loop."""

    device = "cpu"

    def __init__(self, bad: int):
        self.bad, self.epoch, self.w = bad, 0, {"d.kernel": np.zeros((2, 1), np.float32)}

    def set_weights(self, w):
        self.w = {k: np.array(v) for k, v in w.items()}

    def get_weights(self):
        return dict(self.w)

    def begin_epoch(self, epoch):
        self.epoch = epoch

    def train_epoch(self, x, y, batch_size, on_batch):
        self.w["d.kernel"] = self.w["d.kernel"] + 1
        for _ in range(0, len(x), batch_size):
            on_batch(batch_size, float("nan") if self.epoch == self.bad else 0.5)
        return 0.5

    def predict(self, x, batch_size=256):
        return np.zeros((len(x), 1), np.float32)

    def optimizer_state(self):
        return {"d.kernel.step": np.asarray(float(self.epoch))}

    def set_optimizer_state(self, state):
        pass


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    graph = compile_text("model d0 { input x: f32[2]\n dense(1) }").model()
    graph.nodes[0].name = "d"
    cfg = compile_text("model d { input x: f32[2]\n dense(1) }\n"
                       "train d { data = linear(features=2)\n loss = mse\n optimizer = sgd\n"
                       " epochs = 5 }").train_config()
    data = Dataset(np.zeros((10, 2), np.float32), np.zeros((10, 1), np.float32), None, None,
                   np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32), None)
    with pytest.raises(Diverged) as info:
        fit(_FakeTrainer(bad=2), graph, cfg, data, out=tmp_path, backend="fake", epochs=5,
            batch=4, seed=0, progress=Silent())
    err = info.value
    assert "loss became nan at epoch 3, step 1" in str(err)
    assert "last good checkpoint (epoch 2)" in str(err)
    assert len(err.history) == 2
    weights, _, state = outputs.load_checkpoint(tmp_path / outputs.CHECKPOINT)
    assert state["epoch"] == 2
    np.testing.assert_array_equal(weights["d.kernel"], init_weights(graph, 0)["d.kernel"] + 2)


def test_nan_via_the_cli_exits_2(tmp_path, dslc):
    spec = _spec(tmp_path, """
model lin { input x: f32[1]
 dense(1) }
train lin { data = linear(n=200)
 loss = mse
 optimizer = sgd(lr=1e6)
 epochs = 3
 batch = 16 }
""", "lin.dl")
    res = dslc("train", spec, "--out", tmp_path / "run")
    assert res.returncode == 2, res.stderr
    assert "training stopped: the loss became" in res.stderr
    assert "Traceback" not in res.stderr


def test_full_batch_gradient_descent_takes_one_step_an_epoch(tmp_path):
    spec = compile_text("""
model lin { input x: f32[1]
 dense(1) }
train lin { data = linear(n=100)
 loss = mse
 optimizer = gd(lr=0.5)
 batch = full
 epochs = 2 }
""")
    graph, cfg = spec.model(), spec.train_config()
    assert cfg.batch is None
    trainer = get_backend("torch").make_trainer(graph, cfg, "cpu", 0)
    calls = []
    x = np.random.default_rng(0).normal(size=(100, 1)).astype(np.float32)
    trainer.train_epoch(x, 3 * x + 1, None, lambda n, loss: calls.append(n))
    assert calls == [100]


LOSS_CASES = [
    ("mse", False, 0.0, "linear"), ("mae", False, 0.0, "linear"),
    ("binary_crossentropy", False, 0.0, "sigmoid"), ("binary_crossentropy", True, 0.1, "linear"),
    ("binary_crossentropy", False, 0.2, "sigmoid"),
    ("categorical_crossentropy", False, 0.0, "softmax"),
    ("categorical_crossentropy", True, 0.1, "linear"),
    ("sparse_categorical_crossentropy", False, 0.0, "softmax"),
    ("sparse_categorical_crossentropy", False, 0.1, "softmax"),
    ("sparse_categorical_crossentropy", True, 0.0, "linear"),
]


@pytest.mark.parametrize("name,from_logits,smoothing,act", LOSS_CASES)
def test_training_loss_matches_the_numpy_loss(name, from_logits, smoothing, act):
    """The fused training loss equals dslc.train.metrics.numpy_loss on the inference output."""
    from dslc.backends.torch.trainer import make_loss
    from dslc.train.targets import shape_targets

    units = 1 if name in ("binary_crossentropy", "mse", "mae") else 4
    graph = compile_text(f"model m {{ input x: f32[3]\n dense({units}, activation={act}) }}").model()
    loss = Loss(name=name, from_logits=from_logits, label_smoothing=smoothing)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    if name == "sparse_categorical_crossentropy":
        y = rng.integers(0, units, 16)
    elif name == "categorical_crossentropy":
        y = np.eye(units, dtype=np.float32)[rng.integers(0, units, 16)]
    elif name == "binary_crossentropy":
        y = rng.integers(0, 2, 16)
    else:
        y = rng.normal(size=(16, 1)).astype(np.float32)
    module = torch_runtime.instantiate(graph, init_weights(graph, 2)).eval()
    fn, wants_logits = make_loss(loss, fused_activation(graph))
    assert wants_logits == (act in ("softmax", "sigmoid") and name not in ("mse", "mae"))
    xt = torch.from_numpy(x)
    with torch.no_grad():
        out = module(xt, logits=True) if wants_logits else module(xt)
        got = float(fn(out, torch.from_numpy(shape_targets(y, loss, (units,)))))
        want = numpy_loss(loss, y, module(xt).numpy())
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_optimizers_use_the_pinned_values():
    from dslc.backends.torch.trainer import make_optimizer

    p = [torch.nn.Parameter(torch.zeros(2))]
    adam = make_optimizer(p, Optimizer(name="adam"))
    assert adam.defaults["eps"] == 1e-7 and adam.defaults["betas"] == (0.9, 0.999)
    rms = make_optimizer(p, Optimizer(name="rmsprop", lr=0.01))
    assert rms.defaults["alpha"] == 0.9 and rms.defaults["eps"] == 1e-7
    sgd = make_optimizer(p, Optimizer(name="sgd", nesterov=True))  # no momentum: plain sgd
    assert sgd.defaults["nesterov"] is False
    nag = make_optimizer(p, Optimizer(name="sgd", momentum=0.9, nesterov=True, weight_decay=0.1))
    assert nag.defaults["nesterov"] and nag.defaults["weight_decay"] == 0.1
    adamw = make_optimizer(p, Optimizer(name="adamw", weight_decay=0.01))
    assert isinstance(adamw, torch.optim.AdamW)


@pytest.mark.parametrize("opt", ["sgd(lr=0.1, momentum=0.9, nesterov=true)", "adam", "adamw",
                                 "rmsprop(momentum=0.5)"])
def test_optimizer_state_round_trip(opt):
    spec = compile_text(f"""
model m {{ input x: f32[3]
 dense(2, activation=softmax) }}
train m {{ data = blobs(features=3)
 loss = sparse_categorical_crossentropy
 optimizer = {opt} }}
""")
    graph, cfg = spec.model(), spec.train_config()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype(np.float32), rng.integers(0, 2, 40)
    a = get_backend("torch").make_trainer(graph, cfg, "cpu", 0)
    a.train_epoch(x, y, 8, lambda n, loss: None)
    state = a.optimizer_state()
    assert state and all(isinstance(v, np.ndarray) for v in state.values())
    b = get_backend("torch").make_trainer(graph, cfg, "cpu", 0)
    b.set_weights(a.get_weights())
    b.set_optimizer_state(state)
    a.train_epoch(x, y, 8, lambda n, loss: None)
    b.train_epoch(x, y, 8, lambda n, loss: None)
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k])
    with pytest.raises(DslError, match="does not know"):
        b.set_optimizer_state({"nope.exp_avg": np.zeros(2)})


def test_mismatched_weights_name_the_key_and_both_shapes(tmp_path, dslc, root):
    from dslc.weights import save_weights

    path = tmp_path / "w.safetensors"
    graph = compile_text("model m { input x: f32[64]\n dense(64, activation=relu)\n"
                         " dense(10, activation=softmax) }").model()
    w = init_weights(graph, 0)
    w["dense_2.kernel"] = np.zeros((64, 9), np.float32)
    save_weights(path, w)
    res = dslc("eval", root / "specs" / "digits_mlp.dl", "--weights", path)
    assert res.returncode == 2
    assert "`dense_2.kernel` has shape [64, 9], the model expects [64, 10]" in res.stderr
    path.write_bytes(b"\x00" * 20)
    res = dslc("eval", root / "specs" / "digits_mlp.dl", "--weights", path)
    assert res.returncode == 2 and "not a valid safetensors file" in res.stderr


def test_missing_data_files_are_a_clear_error(dslc, root, tmp_path):
    # cnn_small reads idx files that are not there (as shipped it downloads MNIST)
    spec = tmp_path / "cnn_small.dl"
    spec.write_text((root / "specs" / "cnn_small.dl").read_text().replace("mnist()", 'idx("m/")'))
    res = dslc("train", spec, "--out", tmp_path / "run")
    assert res.returncode == 2
    assert "not found" in res.stderr and "Traceback" not in res.stderr


def test_progress_bar_on_a_terminal():
    import io

    stream = io.StringIO()
    p = Progress(stream=stream, live=True)
    p.start_epoch(0, 1, 10)
    p.update(10, 0.5)
    p.end_epoch({"epoch": 1, "loss": 0.5, "seconds": 0.1, "samples_per_s": 100.0})
    p.close()


def test_device_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DslError, match="no CUDA GPU"):
        torch_runtime.resolve_device("cuda")
    assert torch_runtime.resolve_device("auto") == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_and_inference(tmp_path, capsys):
    spec = _spec(tmp_path)
    out = tmp_path / "gpu"
    assert train_command(_args(spec, out, device="cuda", epochs=2)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"] == "cuda"
    graph = compile_text(RESUMABLE).model()
    w = init_weights(graph, 0)
    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(get_backend("torch").build(graph, w, "cuda").predict(x),
                               get_backend("torch").build(graph, w, "cpu").predict(x), atol=1e-5)


def test_gd_is_full_batch_unless_the_spec_sets_a_batch(tmp_path, capsys):
    text = """
model lin { input x: f32[1]
 dense(1) }
train lin { data = linear(n=100)
 loss = mse
 optimizer = gd(lr=0.5)
 epochs = 1%s }
"""
    spec = _spec(tmp_path, text % "", "gd.dl")
    assert train_command(_args(spec, tmp_path / "a")) == 0
    assert "batch full" in capsys.readouterr().out
    spec = _spec(tmp_path, text % "\n batch = 10", "gd10.dl")
    assert train_command(_args(spec, tmp_path / "b")) == 0
    assert "batch 10" in capsys.readouterr().out


PER_POSITION = """
model tagger {
    input seq: f32[4, 3]
    dense(16, activation=relu)
    dense(3, activation=softmax)
}
train tagger {
    data      = npz("seq.npz", test=0.2)
    loss      = categorical_crossentropy
    optimizer = adam(lr=1e-2)
    metrics   = [accuracy, f1]
    epochs    = 30
    batch     = 32
}
"""


def test_a_class_per_position_trains_and_evaluates_per_position(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "seq.npz", x=x, y=np.eye(3, dtype=np.float32)[x.argmax(-1)])
    spec = _spec(tmp_path, PER_POSITION, "tagger.dl")
    out = tmp_path / "run"
    assert train_command(_args(spec, out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] >= 0.95 and metrics["loss"] < 0.2
    capsys.readouterr()
    assert eval_command(argparse.Namespace(spec=str(spec), weights=str(out / "weights.safetensors"),
                                           backend="torch", device="cpu", json=True,
                                           model=None)) == 0
    cm = np.array(json.loads(capsys.readouterr().out)["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == 60 * 4  # every position of the 60 test samples
