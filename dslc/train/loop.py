"""The epoch loop shared by every backend.

A backend plugs in through `get_backend(name).make_trainer(graph, config, device, seed)`,
which returns a `Trainer` (dslc/backends/base.py). The loop owns everything else, once:
seeded shuffling and augmentation, validation, metrics, progress, checkpoints, `--resume`,
and the stop on a NaN/inf loss. What the loop relies on, beyond the protocol's docstrings:

- Batches are numpy: `train_epoch(x, y, batch_size, on_batch)` gets float32 features
  `[N, *input_shape]` (channels-last) already shuffled and augmented for this epoch — an
  array, or a `dslc.data.lazy.LazyArray` for data on disk: slice it one batch at a time
  (`x[start:stop]` reads that batch), never all at once — and the
  labels as `dslc.data.loaders.load_dataset` gives them (int64 class indices `[N]`, float32
  one-hot `[N, C]` or targets `[N, k]`); `dslc.train.targets.shape_targets` shapes them for a
  loss. `batch_size` may be `None`: full batch (gradient descent), one step per epoch.
- `on_batch(samples, loss)` must be called after every optimizer step with that batch's mean
  loss as a Python float. It raises `Diverged` when the loss is NaN/inf: let it propagate.
- `predict(x)` returns the model's outputs in inference mode (probabilities after a softmax or
  sigmoid; logits for `from_logits` models): the loop computes losses and metrics from them
  with `dslc.train.metrics`, so every backend reports the same figures the same way.
- `get_weights()`/`set_weights()` use the canonical layout; `optimizer_state()` is a flat
  dict of numpy arrays of any numeric dtype (stored as is in the checkpoint) that
  `set_optimizer_state()` takes back to continue exactly where the run stopped.
- `begin_epoch(epoch)` (a no-op by default): called before each epoch (0-based). Reseed the framework's
  own random state there (dropout) from `(seed, epoch)`, so `--resume` draws what the
  uninterrupted run drew and ends with the same weights.

Each epoch's row in history.csv: the mean training loss, the metrics on the training split
(inference mode, on up to `TRAIN_PROBE` samples), `val_loss` and `val_<metric>` when the spec
asks for a validation split, the epoch's seconds and training samples/s.

Per-epoch randomness of the loop itself comes from `numpy.random.default_rng([seed, epoch])`
for the same reason.

`schedule` (dslc/train/schedules.py) gives each epoch's learning rate — `set_lr` before the
epoch, the `lr` column of its row — and `early_stopping` (dslc/train/early_stopping.py) may end
the run after an epoch; both keep their state in the checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dslc.data.lazy import LazyArray, take
from dslc.data.loaders import Dataset, augment
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph
from dslc.ir.train import TrainConfig
from dslc.train.early_stopping import Stopper
from dslc.train.metrics import compute_metrics, numpy_loss
from dslc.train.outputs import CHECKPOINT, checkpoint_arrays, load_checkpoint, save_checkpoint
from dslc.train.progress import Progress
from dslc.train.schedules import LrSchedule
from dslc.weights import init_weights

TRAIN_PROBE = 10_000


class Diverged(DslError):
    """The loss became NaN or infinite. `epoch` is 0-based; `history` holds the good epochs."""

    def __init__(self, message: str, epoch: int, history: list[dict], hint: str | None = None):
        super().__init__(message, hint=hint)
        self.epoch = epoch
        self.history = history


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training. `epoch`: the last epoch whose checkpoint was written (0: none)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch


@dataclass
class LoopResult:
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0
    stopped: dict | None = None         # early stopping: {"epoch", "reason", "best_epoch", "best"}
    weights_epoch: int | None = None    # the epoch whose weights the trainer holds at the end


def check_weights(weights: dict[str, np.ndarray], graph: Graph, where: str) -> None:
    problems = []
    for key, p in graph.param_specs().items():
        if key not in weights:
            problems.append(f"missing `{key}` (expected shape {list(p.shape)})")
        elif tuple(weights[key].shape) != p.shape:
            problems.append(f"`{key}` has shape {list(weights[key].shape)}, the model expects "
                            f"{list(p.shape)}")
    if problems:
        raise DslError(f"{where} does not fit model `{graph.name}`: " + "; ".join(problems))


def epoch_metrics(cfg: TrainConfig, y: np.ndarray, pred: np.ndarray, prefix: str = "",
                  with_loss: bool = True) -> dict[str, float]:
    row = {}
    if with_loss:
        row[f"{prefix}loss"] = numpy_loss(cfg.loss, y, pred)
    for name, value in compute_metrics(cfg.metrics, y, pred, cfg.loss).items():
        row[f"{prefix}{name}"] = value
    return row


def fit(trainer, graph: Graph, cfg: TrainConfig, data: Dataset, *, out: Path, backend: str,
        epochs: int, batch: int | None, seed: int, resume: bool = False,
        progress: Progress | None = None, meta: dict | None = None,
        on_epoch: Callable[[int, dict], None] | None = None, write: bool = True) -> LoopResult:
    """Train `trainer` for `epochs` (in total, counting resumed ones), checkpointing each
    epoch to `out/checkpoint.safetensors`. Raises `Diverged` on a NaN/inf loss, leaving the
    last good checkpoint in place, and `Interrupted` on Ctrl-C. With early stopping the run may
    end sooner (`result.stopped`), and with `restore_best` the trainer holds the best epoch's
    weights on return (`result.weights_epoch`). `on_epoch(epoch, row)` runs
    after each epoch's checkpoint (0-based epoch, its history row). `write=False` (the other
    processes of a distributed run) writes no checkpoint and calls no `on_epoch`."""
    progress = progress or Progress()
    result = LoopResult()
    ckpt = out / CHECKPOINT
    schedule = LrSchedule(cfg.schedule, cfg.optimizer.lr, epochs)
    stopper = Stopper(cfg.early_stopping) if cfg.early_stopping is not None else None
    if resume:
        weights, opt_state, state = load_checkpoint(ckpt)
        if state.get("backend") != backend:
            raise DslError(f"{ckpt} was written by backend {state.get('backend')}, not {backend}",
                           hint=f"resume with `--backend {state.get('backend')}`")
        check_weights(weights, graph, str(ckpt))
        trainer.set_weights(weights)
        trainer.set_optimizer_state(opt_state)
        result.history = list(state.get("history", []))
        result.resumed_from = int(state["epoch"])
        seed = int(state.get("seed", seed))
        progress.message(f"resuming after epoch {result.resumed_from} from {ckpt}")
        schedule.load(state.get("schedule"))
        if stopper is not None:
            stopper.load(state.get("early_stopping"), checkpoint_arrays(ckpt, "best"))
            if stopper.stopped:  # the decision stands: no more epochs
                progress.message(stopper.message())
    else:
        trainer.set_weights(init_weights(graph, seed))

    n = len(data.x_train)
    # Training-split metrics each epoch come from an inference pass over at most this many
    # samples (a fixed seeded subset), so that large data sets do not pay a second epoch.
    probe = np.sort(np.random.default_rng([seed % 2**63, 3]).permutation(n)[:TRAIN_PROBE])
    t_start = time.perf_counter()
    saved = result.resumed_from
    try:
        for epoch in range(result.resumed_from, epochs):
            if stopper is not None and stopper.stopped:
                break
            lr = schedule.lr(epoch)
            if cfg.schedule is not None:
                trainer.set_lr(lr)
            rng = np.random.default_rng([seed % 2**63, epoch, 2])
            order = rng.permutation(n) if cfg.shuffle else np.arange(n)
            x, y = take(data.x_train, order), data.y_train[order]
            if cfg.augment:  # on disk: batch by batch, as the trainer reads them
                x = (x.augmented(cfg.augment, rng) if isinstance(x, LazyArray)
                     else augment(x, cfg.augment, rng))
            trainer.begin_epoch(epoch)
            steps = [0]

            def on_batch(samples: int, loss: float, epoch: int = epoch, steps=steps) -> None:
                steps[0] += 1
                if not math.isfinite(loss):
                    raise _diverged(loss, epoch, steps[0], result.history, ckpt)
                progress.update(samples, loss)

            progress.start_epoch(epoch, epochs, n)
            t0 = time.perf_counter()
            train_loss = trainer.train_epoch(x, y, batch, on_batch)
            train_seconds = time.perf_counter() - t0
            if not math.isfinite(train_loss):
                raise _diverged(train_loss, epoch, steps[0], result.history, ckpt)
            row: dict = {"epoch": epoch + 1, "loss": float(train_loss)}
            if cfg.metrics:
                pred = trainer.predict(take(data.x_train, probe))
                row.update(epoch_metrics(cfg, data.y_train[probe], pred, with_loss=False))
            if data.x_val is not None and data.y_val is not None:
                row.update(epoch_metrics(cfg, data.y_val, trainer.predict(data.x_val), "val_"))
            row["lr"] = lr
            row["seconds"] = time.perf_counter() - t0
            row["samples_per_s"] = n / max(train_seconds, 1e-9)
            result.history.append(row)
            progress.end_epoch(row)
            note = schedule.end_epoch(row)
            if note:
                progress.message(note)
            stop = stopper is not None and stopper.update(row, trainer.get_weights)
            more = {"schedule": schedule.state(),
                    "early_stopping": stopper.state() if stopper is not None else None}
            best = stopper.best_weights if stopper is not None else None
            if write:
                save_checkpoint(ckpt, trainer.get_weights(), trainer.optimizer_state(),
                                {**(meta or {}), "backend": backend, "epoch": epoch + 1,
                                 "seed": seed, "history": result.history, **more},
                                extra={"best": best} if best else None)
            saved = epoch + 1
            if on_epoch is not None and write:  # --diagnose, --tensorboard, dslc tune's pruning
                on_epoch(epoch, row)
            if stop and stopper is not None:
                progress.message(stopper.message())
    except KeyboardInterrupt:
        raise Interrupted(saved) from None
    finally:
        progress.close()
    result.seconds = time.perf_counter() - t_start
    result.weights_epoch = len(result.history)
    if stopper is not None:
        result.stopped = stopper.stopped
        if stopper.config.restore_best and stopper.best_weights is not None:
            trainer.set_weights(stopper.best_weights)
            result.weights_epoch = stopper.best_epoch
    return result


def _diverged(loss: float, epoch: int, step: int, history: list[dict], ckpt: Path) -> Diverged:
    kept = (f"the last good checkpoint (epoch {epoch}) is {ckpt}" if epoch
            else "no epoch completed, so there is no checkpoint")
    return Diverged(f"training stopped: the loss became {loss} at epoch {epoch + 1}, step {step}; "
                    f"{kept}", epoch, list(history),
                    hint="lower the learning rate, or check the data for extreme values")
