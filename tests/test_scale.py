"""Scale (docs/scale.md): mixed precision, torch.compile, DistributedDataParallel over torchrun
(2 CPU processes, gloo on loopback) against one process, and the CUDA paths (skipped without
a GPU). Small specs; the DDP and compile tests are the slow ones (seconds, not minutes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dslc.cli import main  # noqa: E402
from dslc.train.distributed import shard  # noqa: E402
from dslc.weights import read_weights  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none on this machine)")

MLP = """
model mlp {
    input x: f32[64]
    dense(32, activation=relu)
    dense(10, activation=softmax)
}
train mlp {
    data       = digits(test=0.2)
    preprocess = [standardize]
    loss       = sparse_categorical_crossentropy
    optimizer  = adam(lr=1e-3)
    metrics    = [accuracy]
    epochs     = 1
    batch      = 30
    validation = 0.1
    seed       = 0
}
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "mlp.dl"
    path.write_text(MLP)
    return path


def train(spec, out, *flags) -> dict[str, np.ndarray]:
    assert main(["train", str(spec), "--out", str(out), *flags]) == 0
    return read_weights(out / "weights.safetensors")[0]


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_shard_splits_every_batch_contiguously():
    for size in (1, 2, 7, 30, 31):
        for world in (1, 2, 3):
            parts = [shard(size, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == size
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(h - lo for lo, h in parts) - min(h - lo for lo, h in parts) <= 1


# --- precision ----------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu_trains_close_to_fp32(spec, tmp_path, precision):
    fp32 = train(spec, tmp_path / "fp32")
    low = train(spec, tmp_path / precision, "--precision", precision)
    diff = max_diff(low, fp32)
    # bf16 keeps 8 significant bits, fp16 11: after an epoch the weights differ, a little.
    assert 0 < diff < (0.05 if precision == "bf16" else 0.01)
    import json

    metrics = json.loads((tmp_path / precision / "metrics.json").read_text())
    assert metrics["precision"] == precision and metrics["test"]["accuracy"] > 0.3  # chance is 0.1


def test_fp16_resume_keeps_the_loss_scale(spec, tmp_path):
    out = tmp_path / "run"
    train(spec, out, "--precision", "fp16", "--epochs", "1")
    from dslc.train.outputs import load_checkpoint

    _, opt, _ = load_checkpoint(out / "checkpoint.safetensors")
    assert float(np.ravel(opt["amp.scale"])[0]) > 0
    train(spec, out, "--precision", "fp16", "--epochs", "2", "--resume")


def test_keras_bf16_trains(spec, tmp_path):
    pytest.importorskip("keras")
    fp32 = train(spec, tmp_path / "k32", "--backend", "keras")
    bf16 = train(spec, tmp_path / "kbf", "--backend", "keras", "--precision", "bf16")
    assert 0 < max_diff(bf16, fp32) < 0.05


def test_compile_is_torch_only(spec, tmp_path, capsys):
    pytest.importorskip("keras")
    assert main(["train", str(spec), "--out", str(tmp_path / "k"), "--backend", "keras",
                 "--compile"]) == 2
    assert "--compile is for the torch backend" in capsys.readouterr().err


# --- torch.compile ------------------------------------------------------------------------------

def _compiler_works() -> str | None:
    """Why torch.compile cannot run here (Inductor needs a C++ compiler), or None."""
    if shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
        return "torch.compile's CPU backend needs a C++ compiler (g++), and there is none"
    return None


@pytest.mark.skipif(_compiler_works() is not None, reason=str(_compiler_works()))
def test_compile_matches_eager_and_never_recompiles(spec, tmp_path, monkeypatch):
    # 1294 training samples at batch 30: the last batch is short (4 samples) and runs eagerly.
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    eager = train(spec, tmp_path / "eager", "--epochs", "2")
    compiled = train(spec, tmp_path / "compiled", "--compile", "--epochs", "2")
    assert max_diff(compiled, eager) < 1e-5


# --- DistributedDataParallel --------------------------------------------------------------------

def run_dslc(*args, timeout=300, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "dslc", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def test_two_processes_equal_one_with_the_same_global_batch(spec, tmp_path):
    one = train(spec, tmp_path / "one", "--epochs", "2")
    done = run_dslc("train", str(spec), "--out", str(tmp_path / "two"), "--epochs", "2",
                    "--nproc", "2")
    assert done.returncode == 0, done.stderr
    two = read_weights(tmp_path / "two" / "weights.safetensors")[0]
    # Same batches, gradients averaged by all-reduce: equal up to float summation order.
    assert max_diff(two, one) < 1e-5
    import json

    a = json.loads((tmp_path / "one" / "metrics.json").read_text())
    b = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert b["processes"] == 2 and b["batch"] == a["batch"] == 30
    for key, value in a["test"].items():
        assert b["test"][key] == pytest.approx(value, abs=1e-5)
    assert b["final_epoch"]["loss"] == pytest.approx(a["final_epoch"]["loss"], abs=1e-5)
    # Only rank 0 wrote, and said so once.
    assert done.stdout.count("wrote ") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())
    # --resume under DDP continues the run.
    done = run_dslc("train", str(spec), "--out", str(tmp_path / "two"), "--epochs", "3",
                    "--nproc", "2", "--resume")
    assert done.returncode == 0, done.stderr
    assert "resuming after epoch 2" in done.stdout + done.stderr


def test_a_failing_worker_ends_the_run_with_an_error(spec, tmp_path):
    # Rank 1 dies before its first step; rank 0 must not wait for it forever.
    done = run_dslc("train", str(spec), "--out", str(tmp_path / "bad"), "--nproc", "2",
                    env={"DSLC_TEST_FAIL_RANK": "1", "DSLC_DIST_TIMEOUT": "30"})
    assert done.returncode == 2
    assert "training on 2 processes failed" in done.stderr


def test_distributed_outside_torchrun_says_how(spec, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["train", str(spec), "--out", str(tmp_path / "x"), "--distributed"]) == 2
    assert "--nproc" in capsys.readouterr().err


# --- CUDA (skipped without a GPU) ---------------------------------------------------------------

CNN = """
model cnn {
    input image: f32[8, 8, 1]
    conv2d(8, kernel=3, activation=relu)
    flatten
    dense(10, activation=softmax)
}
train cnn {
    data      = digits(test=0.2)
    loss      = sparse_categorical_crossentropy
    optimizer = adam(lr=1e-3)
    epochs    = 1
    batch     = 64
    seed      = 0
}
"""


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training(tmp_path, precision):
    (tmp_path / "cnn.dl").write_text(CNN)
    cpu = train(tmp_path / "cnn.dl", tmp_path / "cpu")
    gpu = train(tmp_path / "cnn.dl", tmp_path / "gpu", "--device", "cuda", "--precision",
                precision)
    assert max_diff(gpu, cpu) < (1e-3 if precision == "fp32" else 0.05)


@needs_cuda
def test_cuda_channels_last_filters():
    from dslc.backends.torch.runtime import build
    from dslc.compiler import compile_text
    from dslc.weights import init_weights

    graph = compile_text(CNN, "cnn.dl").model()
    runtime = build(graph, init_weights(graph, 0), "cuda")
    assert runtime.module.conv2d_1.weight.is_contiguous(memory_format=torch.channels_last)


# --- verify --precision, run --device -----------------------------------------------------------

@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_verify_at_mixed_precision_states_its_tolerance(spec, capsys, precision):
    assert main(["verify", str(spec), "--precision", precision]) == 0
    out = capsys.readouterr().out
    from dslc.verify import PRECISION_TOLERANCE

    tol = PRECISION_TOLERANCE[precision]
    assert f"tolerance at {precision}: atol {tol.atol:g}, rtol {tol.rtol:g}" in out
    assert "onnx: not run (runs at fp32 only" in out and "torch vs reference" in out
    # The low precision shows: not bit-equal to the float64 reference, yet within bounds.
    assert "torch vs reference  max abs diff 0.000e+00" not in out


def test_verify_at_bf16_fails_a_tight_tolerance(spec, capsys):
    assert main(["verify", str(spec), "--precision", "bf16", "--atol", "1e-6",
                 "--rtol", "0"]) == 1


def test_run_on_cuda_without_the_provider_falls_back_and_says_so(spec, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed: no fallback to see")
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(tmp_path)]) == 0
    model = next(tmp_path.glob("*.onnx"))
    np.save(tmp_path / "x.npy", np.zeros((2, 64), np.float32))
    assert main(["run", str(model), "--input", str(tmp_path / "x.npy"), "--device", "cuda"]) == 0
    err = capsys.readouterr().err
    assert "no CUDA provider" in err and "running on the CPU" in err


@needs_cuda
def test_verify_on_cuda(spec, capsys):
    for precision in ("fp32", "bf16"):
        assert main(["verify", str(spec), "--device", "cuda", "--precision", precision]) == 0


# --- Keras: MirroredStrategy --------------------------------------------------------------------

def test_keras_two_mirrored_cpu_devices_equal_one(spec, tmp_path):
    # Two logical CPU devices (TensorFlow splits the CPU only before it starts: a fresh process).
    pytest.importorskip("keras")
    for name, flags in (("one", []), ("two", ["--devices", "2"])):
        done = run_dslc("train", str(spec), "--out", str(tmp_path / name), "--backend", "keras",
                        *flags)
        assert done.returncode == 0, done.stderr
    assert "2 devices (MirroredStrategy)" in done.stdout + done.stderr
    one = read_weights(tmp_path / "one" / "weights.safetensors")[0]
    two = read_weights(tmp_path / "two" / "weights.safetensors")[0]
    assert max_diff(two, one) < 1e-5


def test_devices_is_for_keras(spec, tmp_path, capsys):
    assert main(["train", str(spec), "--out", str(tmp_path / "t"), "--devices", "2"]) == 2
    assert "--nproc" in capsys.readouterr().err


# --- Keras: MultiWorkerMirroredStrategy (one TF_CONFIG a worker) -------------------------------

def _keras_weights(spec, out, *flags, env=None) -> dict[str, np.ndarray]:
    done = run_dslc("train", str(spec), "--out", str(out), "--backend", "keras", *flags,
                    env=env)
    assert done.returncode == 0, done.stderr
    return read_weights(out / "weights.safetensors")[0]


def test_keras_one_worker_equals_one_process(spec, tmp_path):
    pytest.importorskip("keras")
    one = _keras_weights(spec, tmp_path / "one", "--epochs", "2")
    worker = _keras_weights(spec, tmp_path / "w1", "--epochs", "1", "--nproc", "1")
    # --resume under the strategy continues the run (the worker reads the checkpoint).
    worker = _keras_weights(spec, tmp_path / "w1", "--epochs", "2", "--nproc", "1", "--resume")
    # One replica: the same arithmetic as without a strategy (0.0 measured).
    assert max_diff(worker, one) < 1e-6
    import json

    metrics = json.loads((tmp_path / "w1" / "metrics.json").read_text())
    assert metrics["processes"] == 1 and metrics["epochs"] == 2


def test_keras_two_workers_equal_one(spec, tmp_path):
    # Two TensorFlow processes on loopback gRPC: 13 s on a shared 2-core machine.
    pytest.importorskip("keras")
    one = _keras_weights(spec, tmp_path / "one", "--epochs", "2")
    done = run_dslc("train", str(spec), "--out", str(tmp_path / "two"), "--backend", "keras",
                    "--epochs", "2", "--nproc", "2")
    assert done.returncode == 0, done.stderr
    assert "2 processes (MultiWorkerMirroredStrategy, 30 samples a step" in done.stdout
    two = read_weights(tmp_path / "two" / "weights.safetensors")[0]
    # Each worker computes 15 of every 30 samples; gradients summed by all-reduce: equal up
    # to float summation order (4.5e-8 measured).
    assert max_diff(two, one) < 1e-5
    assert done.stdout.count("wrote ") == 1  # only worker 0 writes and prints
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())


def test_a_failing_keras_worker_ends_the_run_with_an_error(spec, tmp_path):
    pytest.importorskip("keras")
    done = run_dslc("train", str(spec), "--out", str(tmp_path / "bad"), "--backend", "keras",
                    "--nproc", "2", env={"DSLC_TEST_FAIL_RANK": "1"}, timeout=120)
    assert done.returncode == 2
    assert "training on 2 keras workers failed (worker 1 exit status 3)" in done.stderr
    assert not (tmp_path / "bad" / "weights.safetensors").exists()


def test_a_keras_worker_without_its_peers_stops_waiting(spec, tmp_path):
    # Started by hand with a cluster of two, and the other never comes.
    pytest.importorskip("keras")
    from dslc.backends.keras.multiworker import free_ports

    addresses = [f"127.0.0.1:{p}" for p in free_ports(2)]
    import json

    config = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker",
                                                                    "index": 0}})
    done = run_dslc("train", str(spec), "--out", str(tmp_path / "alone"), "--backend", "keras",
                    "--distributed", env={"TF_CONFIG": config, "DSLC_DIST_TIMEOUT": "5"},
                    timeout=120)
    assert done.returncode != 0
    assert "keras worker 0 of 2: the other workers did not join within 5 s" in done.stderr


def test_keras_distributed_without_tf_config_says_how(spec, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["train", str(spec), "--out", str(tmp_path / "x"), "--backend", "keras",
                 "--distributed"]) == 2
    err = capsys.readouterr().err
    assert "TF_CONFIG is not set" in err and "--nproc" in err


def test_a_bad_tf_config_is_a_clear_error(spec, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["h:1"]}, '
                                    '"task": {"type": "worker", "index": 3}}')
    assert main(["train", str(spec), "--out", str(tmp_path / "x"), "--backend", "keras",
                 "--distributed"]) == 2
    assert "task worker 3 is not one of its cluster's" in capsys.readouterr().err
