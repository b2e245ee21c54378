"""The same spec, seed and data trained by the torch and keras trainers through the shared
loop: SGD ends with the same weights (1e-5); Adam within a small drift, because PyTorch adds
epsilon after the bias correction and Keras before it (see dslc/backends/torch/trainer.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from dslc.backends import get_backend  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402
from dslc.data.loaders import load_dataset  # noqa: E402
from dslc.train.loop import fit  # noqa: E402
from dslc.train.progress import Silent  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name,epochs,tol", [
    ("linear_regression", 3, 1e-5),
    ("logistic_regression", 3, 1e-5),
    ("digits_mlp", 2, 5e-3),
])
def test_torch_and_keras_train_to_the_same_weights(name, epochs, tol):
    spec = compile_file(ROOT / "specs" / f"{name}.dl")
    graph, cfg = spec.model(), spec.train_config()
    data = load_dataset(cfg, graph.inputs[0].type.shape, spec.path.parent, cfg.seed)
    results = {}
    for backend in ("torch", "keras"):
        trainer = get_backend(backend).make_trainer(graph, cfg, "cpu", cfg.seed)
        with tempfile.TemporaryDirectory() as out:
            run = fit(trainer, graph, cfg, data, out=Path(out), backend=backend, epochs=epochs,
                      batch=cfg.batch, seed=cfg.seed, progress=Silent())
        results[backend] = (trainer.get_weights(), run.history)
    (wt, ht), (wk, hk) = results["torch"], results["keras"]
    for key in wt:
        np.testing.assert_allclose(wt[key], wk[key], atol=tol, err_msg=key)
    for a, b in zip(ht, hk, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=max(tol, 1e-5))
