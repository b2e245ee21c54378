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
  for sgd/gd/adam/rmsprop (PyTorch's meaning) and decoupled for adamw — as the Keras backend;
  kernels only (no decay on biases, gamma, beta). Class weights and gradient clipping: as
  dslc/train/regularisation.py states, identically on both backends.
  Where the frameworks' formulas still differ (Adam's epsilon is added after the bias
  correction in PyTorch, before it in Keras; RMSprop's `sqrt(v) + eps` vs `sqrt(v + eps)`),
  PyTorch's built-in optimizer is used: training curves agree closely, not bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dslc.backends.base import Trainer, TrainOptions
from dslc.data.lazy import is_lazy
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph
from dslc.ir.train import TrainConfig
from dslc.ops.registry import SMALL_BATCH_MACS, graph_macs
from dslc.train.distributed import shard
from dslc.train.prefetch import prefetch
from dslc.train.regularisation import class_weights, decays, output_classes, sample_weights
from dslc.train.targets import shape_targets
from dslc.weights import init_weights

from .runtime import Model, autocast, channels_last

CE = {"binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"}
_STATE_KEYS = {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer",
               "square_avg", "grad_avg"}
_CLIP = 1e-7  # Keras's epsilon, for cross-entropy on probabilities (no fused form available)


@dataclass
class Batch:
    x: torch.Tensor
    shard: tuple[int, int]  # this process's rows within the global batch


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
        def bce(z, t, w=None):
            if ls:
                t = t * (1.0 - ls) + 0.5 * ls
            if use_logits:
                if w is not None:
                    return _weighted(F.binary_cross_entropy_with_logits(z, t, reduction="none"), w)
                return F.binary_cross_entropy_with_logits(z, t)
            p = z.clamp(_CLIP, 1.0 - _CLIP)
            return _weighted(-(t * torch.log(p) + (1 - t) * torch.log(1 - p)), w)
        return bce, fused == want and not loss.from_logits

    sparse = name == "sparse_categorical_crossentropy"

    def cce(z, t, w=None):
        classes = z.shape[-1]
        z = z.reshape(-1, classes)
        t = t.reshape(-1) if sparse else t.reshape(-1, classes)
        if use_logits:
            if w is not None:
                return _weighted(F.cross_entropy(z, t, label_smoothing=ls, reduction="none"), w)
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
        return _weighted(-(t * logp).sum(-1), w)
    return cce, fused == want and not loss.from_logits


def _weighted(per: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """The mean of per-element losses; with class weights, Keras's rule: each sample's mean
    loss times its weight, summed, over the batch size (dslc/train/regularisation.py)."""
    if w is None:
        return per.mean()
    return (per.reshape(len(w), -1).mean(-1) * w).mean()


def param_groups(model: Model, wd: float) -> tuple[list[dict], list[str]]:
    """Kernels decay, biases and gamma/beta do not (dslc/train/regularisation.py); with the
    parameter names in the optimizer's order, for its state."""
    named = list(model.module.named_parameters())
    if not wd:
        return [{"params": [p for _, p in named]}], [n for n, _ in named]
    decayed = {p.target for p in model.weights.params if decays(p.key)}
    split = [([(n, p) for n, p in named if n in decayed], wd),
             ([(n, p) for n, p in named if n not in decayed], 0.0)]
    split = [(g, d) for g, d in split if g]
    return ([{"params": [p for _, p in g], "weight_decay": d} for g, d in split],
            [n for g, _ in split for n, _ in g])


def clip_gradients(params: Sequence[torch.Tensor], clip_value: float | None,
                   clip_norm: float | None) -> None:
    """In place, before the optimizer step (and so before weight decay)."""
    grads = [p.grad for p in params if p.grad is not None]
    if clip_value:
        for g in grads:
            g.clamp_(-clip_value, clip_value)
    if clip_norm and grads:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = clip_norm / torch.clamp(norm, min=clip_norm)
        for g in grads:
            g.mul_(scale)


def choose_threads(graph: Graph, batch: int | None, n: int, device: str) -> None:
    if device != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    # Deterministic per spec, so a seed still gives the same weights; OMP_NUM_THREADS wins.
    if graph_macs(graph) * (batch or n) < SMALL_BATCH_MACS:
        torch.set_num_threads(1)


class TorchTrainer(Trainer):
    """Module, loss and optimizer for one run, starting from `init_weights(graph, seed)`.

    `options` (dslc/backends/base.py `TrainOptions`): mixed precision through autocast (fp16
    with a gradient scaler), `torch.compile` of the training step, and DistributedDataParallel
    when the process belongs to a torch.distributed group (dslc/train/distributed.py)."""

    def __init__(self, graph: Graph, config: TrainConfig, device: str = "cpu", seed: int = 0,
                 options: TrainOptions | None = None):
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise DslError(f"training needs one input and one output; `{graph.name}` has "
                           f"{len(graph.inputs)} and {len(graph.outputs)}")
        options = options or TrainOptions()
        torch.manual_seed(seed)
        self.graph, self.config, self.device, self.seed = graph, config, device, seed
        self.options = options
        self.model = Model(graph, init_weights(graph, seed), device)
        self.module = self.model.module
        channels_last(self.module, graph, device)
        self.out_shape = tuple(graph.type_of(graph.outputs[0]).shape)
        self.loss_fn, self.logits = make_loss(config.loss, self.model.fused)
        groups, self.param_names = param_groups(self.model, config.optimizer.weight_decay)
        self.optimizer = make_optimizer(groups, config.optimizer)
        self._threads_set = False
        self.precision = options.precision
        kind = "cuda" if device.startswith("cuda") else "cpu"
        # fp16's narrow range needs loss scaling; bf16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler(kind) if self.precision == "fp16" else None
        self.rank, self.world = 0, 1
        self.step_module: torch.nn.Module = self.module
        if options.distributed:
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel

            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            ids = [torch.device(device).index or 0] if kind == "cuda" else None
            self.step_module = DistributedDataParallel(self.module, device_ids=ids)
        if options.compile:
            # Full batches run compiled (static shapes); the epoch's short last batch runs the
            # same parameters eagerly, so it never triggers a recompile.
            self.step_module = torch.compile(self.step_module, dynamic=False)  # type: ignore[assignment]

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

    def train_epoch(self, x: Any, y: np.ndarray, batch_size: int | None,
                    on_batch: Callable[[int, float], None]) -> float:
        n = len(x)
        batch_size = batch_size or n  # None: full batch (gradient descent)
        if not self._threads_set:
            choose_threads(self.graph, batch_size, n, self.device)
            self._threads_set = True
        yt = self._tensor(shape_targets(y, self.config.loss, self.out_shape))
        cw = class_weights(self.config, y, output_classes(self.config.loss, self.out_shape))
        sw = sample_weights(y, cw)
        wt = None if sw is None else self._tensor(sw)
        cfg, params = self.config, list(self.module.parameters())
        opt, loss_fn, logits, scaler = self.optimizer, self.loss_fn, self.logits, self.scaler
        self.module.train()
        total = 0.0
        for start, stop, xb in self._batches(x, batch_size):
            size = stop - start  # the global batch; this process's shard is rows lo:hi
            lo, hi = start + xb.shard[0], start + xb.shard[1]
            module = self.step_module if size == batch_size else self._eager()
            opt.zero_grad(set_to_none=True)
            with autocast(self.device, self.precision):
                out = module(xb.x, logits=True) if logits else module(xb.x)
            out = out.float()  # the loss in float32, whatever the precision
            if hi == lo:  # an empty shard still joins the gradient all-reduce
                loss = out.sum() * 0.0
            elif wt is None:
                loss = loss_fn(out, yt[lo:hi])
            else:
                loss = loss_fn(out, yt[lo:hi], wt[lo:hi])
            if self.world > 1:
                # DDP averages gradients over processes; weighting each shard's mean by its
                # share makes that average the gradient of the global batch's mean.
                loss = loss * ((hi - lo) * self.world / size)
            if scaler is None:
                loss.backward()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)  # clipping sees the true gradients
            if cfg.clip_value or cfg.clip_norm:
                clip_gradients(params, cfg.clip_value, cfg.clip_norm)
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)  # skipped when a gradient overflowed
                scaler.update()
            value = self._global_loss(loss)
            total += value * size
            on_batch(size, value)
        return total / n if n else float("nan")

    def _eager(self) -> torch.nn.Module:
        """The step module without torch.compile (same parameters, same DDP wrapper)."""
        module = self.step_module
        return getattr(module, "_orig_mod", module)

    def _global_loss(self, loss: torch.Tensor) -> float:
        """The global batch's mean loss: the shards' weighted losses averaged over processes."""
        if self.world == 1:
            return loss.item()
        import torch.distributed as dist

        value = loss.detach().clone()
        dist.all_reduce(value)
        return value.item() / self.world

    def _batches(self, x: Any, batch_size: int) -> Iterator[tuple[int, int, Batch]]:
        """(start, stop, this process's rows on the device) for each global batch, in order.
        Data on disk is read one batch at a time, the next while this one trains; on CUDA
        the batch goes through pinned memory with an asynchronous copy."""
        cuda = self.device.startswith("cuda")

        def read() -> Iterator[tuple[int, int, Batch]]:
            for start in range(0, len(x), batch_size):
                stop = min(start + batch_size, len(x))
                lo, hi = shard(stop - start, self.rank, self.world)
                xb = torch.from_numpy(np.ascontiguousarray(
                    np.asarray(x[start + lo:start + hi], self.graph.inputs[0].type.numpy_dtype)))
                yield start, stop, Batch(xb.pin_memory() if cuda else xb, (lo, hi))

        batches = prefetch(read()) if cuda or is_lazy(x) else read()
        for start, stop, b in batches:
            yield start, stop, Batch(b.x.to(self.device, non_blocking=cuda), b.shard)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Outputs for `x`. Under DDP each process predicts its shard of the rows and the
        shards are gathered in order, so every process holds all of them."""
        lo, hi = shard(len(x), self.rank, self.world)
        part = self._predict_rows(x, lo, hi, batch_size)
        if self.world == 1:
            return part
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, part)
        return np.concatenate(parts)

    def _predict_rows(self, x: Any, lo: int, hi: int, batch_size: int) -> np.ndarray:
        self.module.eval()
        outs = []
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(lo, hi, batch_size):
                xb = self._tensor(np.asarray(x[start:min(start + batch_size, hi)],
                                             dtype=self.graph.inputs[0].type.numpy_dtype))
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
        if self.scaler is not None:  # fp16's loss scale continues where it was
            scaler = self.scaler.state_dict()
            out["amp.scale"] = np.asarray(scaler["scale"], np.float64)
            out["amp.growth_tracker"] = np.asarray(scaler["_growth_tracker"], np.float64)
        return out

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        index = {name: i for i, name in enumerate(self.param_names)}
        params = dict(self.module.named_parameters())
        restored: dict[int, dict[str, torch.Tensor]] = {}
        amp = {k: v for k, v in state.items() if k.startswith("amp.")}
        state = {k: v for k, v in state.items() if not k.startswith("amp.")}
        if self.scaler is not None and amp:
            self.scaler.load_state_dict({**self.scaler.state_dict(),
                                         "scale": float(np.ravel(amp["amp.scale"])[0]),
                                         "_growth_tracker": int(np.ravel(amp["amp.growth_tracker"])[0])})
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
