"""The PyTorch side of the shared training loop (`dslc.backends.base.Trainer`).

The model is the generated module itself (imported from its source). Losses and optimizers
follow the IR's pinned values:

- softmax/sigmoid outputs trained with cross-entropy call `forward(x, logits=True)` and use
  the fused, numerically stable `cross_entropy` / `binary_cross_entropy_with_logits`;
  inference keeps the activation. `from_logits=true` models output logits already. Where the
  generated module has no such form (a dropout after the softmax, a recurrent layer's own
  activation), the loss takes the clipped probabilities, as Keras does.
- label smoothing as Keras and PyTorch define it: `t * (1 - s) + s / classes` (binary: `s / 2`).
- losses are means over every element (Keras's and PyTorch's `reduction="mean"`).
- optimizers: sgd/gd (momentum, nesterov), adam, adamw, rmsprop with the IR's lr, betas, rho
  and epsilon (1e-7, not PyTorch's 1e-8). `weight_decay` is an L2 term added to the gradient
  for sgd/gd/adam/rmsprop (PyTorch's meaning) and decoupled for adamw — as the Keras backend.
  Where the frameworks' formulas still differ (Adam's epsilon is added after the bias
  correction in PyTorch, before it in Keras; RMSprop's `sqrt(v) + eps` vs `sqrt(v + eps)`),
  PyTorch's built-in optimizer is used: training curves agree closely, not bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dslc.backends.base import Trainer
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph
from dslc.ir.train import TrainConfig
from dslc.ops.registry import SMALL_BATCH_MACS, graph_macs
from dslc.train.targets import shape_targets
from dslc.weights import init_weights

from .runtime import Model

CE = {"binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"}
_STATE_KEYS = {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer",
               "square_avg", "grad_avg"}
_CLIP = 1e-7  # Keras's epsilon, for cross-entropy on probabilities (no fused form available)


def make_optimizer(params, opt) -> torch.optim.Optimizer:
    wd = opt.weight_decay
    if opt.name in ("sgd", "gd"):
        # PyTorch refuses nesterov without momentum; Keras treats it as plain SGD.
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum,
                               nesterov=opt.nesterov and opt.momentum > 0, weight_decay=wd)
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, betas=(opt.beta1, opt.beta2),
                                eps=opt.epsilon, weight_decay=wd)
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=opt.lr, betas=(opt.beta1, opt.beta2),
                                 eps=opt.epsilon, weight_decay=wd)
    if opt.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=opt.lr, alpha=opt.rho, eps=opt.epsilon,
                                   momentum=opt.momentum, weight_decay=wd)
    raise DslError(f"optimizer `{opt.name}` is not supported by backend torch", opt.span)


def make_loss(loss, fused: str | None) -> tuple[Callable, bool]:
    """The loss function of (outputs, targets) and whether it wants logits from the model
    (`forward(x, logits=True)`)."""
    ls = loss.label_smoothing
    name = loss.name
    if name == "mse":
        return F.mse_loss, False
    if name == "mae":
        return F.l1_loss, False
    want = "sigmoid" if name == "binary_crossentropy" else "softmax"
    use_logits = loss.from_logits or fused == want
    if name == "binary_crossentropy":
        def bce(z, t):
            if ls:
                t = t * (1.0 - ls) + 0.5 * ls
            if use_logits:
                return F.binary_cross_entropy_with_logits(z, t)
            p = z.clamp(_CLIP, 1.0 - _CLIP)
            return -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()
        return bce, fused == want and not loss.from_logits

    sparse = name == "sparse_categorical_crossentropy"

    def cce(z, t):
        classes = z.shape[-1]
        z = z.reshape(-1, classes)
        t = t.reshape(-1) if sparse else t.reshape(-1, classes)
        if use_logits:
            return F.cross_entropy(z, t, label_smoothing=ls)
        # Probabilities from a model without a fusable softmax, as Keras (and numpy_loss) take
        # them: sparse labels clip, log and renormalise with a log-softmax, so a row that
        # dropout zeroed costs log(classes); one-hot targets renormalise first.
        if sparse and not ls:
            logp = torch.log_softmax(torch.log(z.clamp(_CLIP, 1.0 - _CLIP)), -1)
        else:
            logp = torch.log((z / z.sum(-1, keepdim=True)).clamp(_CLIP, 1.0 - _CLIP))
        if sparse:
            t = F.one_hot(t, classes).to(z.dtype)
        if ls:
            t = t * (1.0 - ls) + ls / classes
        return -(t * logp).sum(-1).mean()
    return cce, fused == want and not loss.from_logits


def choose_threads(graph: Graph, batch: int | None, n: int, device: str) -> None:
    if device != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    # Deterministic per spec, so a seed still gives the same weights; OMP_NUM_THREADS wins.
    if graph_macs(graph) * (batch or n) < SMALL_BATCH_MACS:
        torch.set_num_threads(1)


class TorchTrainer(Trainer):
    """Module, loss and optimizer for one run, starting from `init_weights(graph, seed)`."""

    def __init__(self, graph: Graph, config: TrainConfig, device: str = "cpu", seed: int = 0):
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise DslError(f"training needs one input and one output; `{graph.name}` has "
                           f"{len(graph.inputs)} and {len(graph.outputs)}")
        torch.manual_seed(seed)
        self.graph, self.config, self.device, self.seed = graph, config, device, seed
        self.model = Model(graph, init_weights(graph, seed), device)
        self.module = self.model.module
        self.out_shape = tuple(graph.type_of(graph.outputs[0]).shape)
        self.loss_fn, self.logits = make_loss(config.loss, self.model.fused)
        self.optimizer = make_optimizer(self.module.parameters(), config.optimizer)
        self.param_names = [name for name, _ in self.module.named_parameters()]
        self._threads_set = False

    # weights -------------------------------------------------------------------------
    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.model.load(weights)

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.model.canonical()

    # training ------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        """Reseed dropout from (seed, epoch), so a resumed run draws what the full run drew."""
        torch.manual_seed(int(np.random.SeedSequence([self.seed % 2**63, epoch, 7])
                              .generate_state(1)[0]))

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def train_epoch(self, x: np.ndarray, y: np.ndarray, batch_size: int | None,
                    on_batch: Callable[[int, float], None]) -> float:
        n = len(x)
        batch_size = batch_size or n  # None: full batch (gradient descent)
        if not self._threads_set:
            choose_threads(self.graph, batch_size, n, self.device)
            self._threads_set = True
        xt = self._tensor(np.asarray(x, dtype=np.float32))
        yt = self._tensor(shape_targets(y, self.config.loss, self.out_shape))
        module, opt, loss_fn, logits = self.module, self.optimizer, self.loss_fn, self.logits
        module.train()
        total = 0.0
        for start in range(0, n, batch_size):
            xb, yb = xt[start:start + batch_size], yt[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            out = module(xb, logits=True) if logits else module(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            value = loss.item()
            total += value * len(xb)
            on_batch(len(xb), value)
        return total / n if n else float("nan")

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self.module.eval()
        outs = []
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                xb = self._tensor(np.asarray(x[start:start + batch_size], dtype=np.float32))
                outs.append(self.module(xb).float().cpu().numpy())
        if not outs:
            return np.zeros((0, *(d or 0 for d in self.out_shape)), np.float32)
        return np.concatenate(outs)

    # optimizer state for --resume ----------------------------------------------------
    def optimizer_state(self) -> dict[str, np.ndarray]:
        out = {}
        for idx, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    out[f"{self.param_names[idx]}.{key}"] = value.detach().cpu().numpy().copy()
                elif isinstance(value, int | float):
                    out[f"{self.param_names[idx]}.{key}"] = np.asarray(value, np.float64)
        return out

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        index = {name: i for i, name in enumerate(self.param_names)}
        params = dict(self.module.named_parameters())
        restored: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            name, _, field = key.rpartition(".")
            if name not in index or field not in _STATE_KEYS:
                raise DslError(f"the checkpoint's optimizer state has `{key}`, which this torch "
                               f"{self.config.optimizer.name} optimizer does not know",
                               hint="resume with the backend and optimizer the run started with")
            tensor = torch.from_numpy(np.array(value))
            if field != "step" and tuple(tensor.shape) != tuple(params[name].shape):
                raise DslError(f"optimizer state `{key}` has shape {list(tensor.shape)}, the "
                               f"parameter has {list(params[name].shape)}")
            restored.setdefault(index[name], {})[field] = tensor
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": restored, "param_groups": groups})

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
