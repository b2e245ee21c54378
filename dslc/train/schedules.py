"""The learning rate of every epoch, computed once here for every backend (each trainer only
applies it through `Trainer.set_lr`), so torch and keras follow the same sequence.

Granularity is the epoch: the rate is set before an epoch and holds for all its steps.
With `E` epochs (the run's, `--epochs` included), base rate `L` (the optimizer's `lr`) and
0-based epoch `e`:

- `cosine(warmup=W, min_lr=m)`: `L * (e + 1) / (W + 1)` for the W warmup epochs, then
  `m + (L - m) * (1 + cos(pi * (e - W) / (E - W))) / 2` (PyTorch's CosineAnnealingLR with
  `T_max = E - W`: the first epoch after warmup runs at `L`, the last one above `m`).
- `step(every, gamma)`: `L * gamma ** (e // every)`; `exponential(gamma)`: `L * gamma ** e`.
- `one_cycle(max_lr, pct_start, div_factor, final_div_factor)`: from `max_lr / div_factor`
  up to `max_lr` over the first `round(pct_start * E)` epochs (at least one), then down to
  `max_lr / div_factor / final_div_factor` at the last epoch, cosine both ways (PyTorch's
  OneCycleLR per epoch, without its momentum cycling). `max_lr` defaults to `L`.
- `reduce_on_plateau(monitor, factor, patience, min_delta, min_lr, cooldown, mode)`: after
  each epoch; when `monitor` has not improved by more than `min_delta` for `patience` epochs
  (Keras's count: patience 1 drops after the first epoch without improvement), the rate
  becomes `max(rate * factor, min_lr)`, and the next `cooldown` epochs do not count (PyTorch's
  meaning). Its state goes into the checkpoint, so `--resume` continues it.

cosine and one_cycle span the run's epochs: resuming with more `--epochs` than the run
started with changes the rest of the curve.
"""

from __future__ import annotations

import math

from dslc.ir.train import Schedule

MAXIMISED = {"accuracy", "precision", "recall", "f1"}


def monitor_mode(monitor: str, mode: str) -> str:
    """`min` or `max`: `auto` maximises accuracy, precision, recall and F1 (and their `val_`
    forms) and minimises everything else (losses, mse, mae)."""
    if mode != "auto":
        return mode
    return "max" if monitor.removeprefix("val_") in MAXIMISED else "min"


def improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    """Better than `best` by more than `min_delta` (the first value always is; NaN never)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def scheduled_lr(s: Schedule, base: float, epoch: int, epochs: int) -> float:
    """The rate of a stateless schedule at 0-based `epoch` of `epochs`."""
    if s.name == "cosine":
        if epoch < s.warmup:
            return base * (epoch + 1) / (s.warmup + 1)
        t = (epoch - s.warmup) / max(1, epochs - s.warmup)
        return s.min_lr + (base - s.min_lr) * (1 + math.cos(math.pi * min(t, 1.0))) / 2
    if s.name == "step":
        return base * s.gamma ** (epoch // s.every)
    if s.name == "exponential":
        return base * s.gamma ** epoch
    if s.name == "one_cycle":
        top = s.max_lr or base
        start = top / s.div_factor
        end = start / s.final_div_factor
        up = min(max(1, round(s.pct_start * epochs)), max(epochs - 1, 1))
        if epoch < up:
            return _anneal(start, top, epoch / up)
        return _anneal(top, end, min(1.0, (epoch - up) / max(1, epochs - 1 - up)))
    raise ValueError(f"`{s.name}` is not a stateless schedule")


def _anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


class LrSchedule:
    """The lr of each epoch for one run: `lr(epoch)` before it, `end_epoch(row)` after it
    (reduce_on_plateau watches the row), `state()`/`load(state)` for the checkpoint."""

    def __init__(self, schedule: Schedule | None, base: float, epochs: int):
        self.schedule, self.base, self.epochs = schedule, base, epochs
        self.current = base
        self.best: float | None = None
        self.wait = 0
        self.cooldown = 0

    def lr(self, epoch: int) -> float:
        s = self.schedule
        if s is None or s.name == "reduce_on_plateau":
            return self.current
        return scheduled_lr(s, self.base, epoch, self.epochs)

    def end_epoch(self, row: dict) -> str | None:
        """Update reduce_on_plateau from the epoch's row; a message when the rate drops."""
        s = self.schedule
        if s is None or s.name != "reduce_on_plateau":
            return None
        value = float(row[s.monitor])
        cooling = self.cooldown > 0  # the epochs right after a drop do not count
        if cooling:
            self.cooldown -= 1
        if improved(value, self.best, monitor_mode(s.monitor, s.mode), s.min_delta):
            self.best, self.wait = value, 0
        elif not cooling:
            self.wait += 1
            if self.wait >= s.patience:
                self.wait = 0
                if self.current > s.min_lr:
                    self.current = max(self.current * s.factor, s.min_lr)
                    self.cooldown = s.cooldown
                    return (f"{s.monitor} has not improved for {epochs_text(s.patience)}: lr "
                            f"{self.current:.3g} from epoch {row['epoch'] + 1}")
        return None

    def state(self) -> dict:
        return {"lr": self.current, "best": self.best, "wait": self.wait,
                "cooldown": self.cooldown}

    def load(self, state: dict | None) -> None:
        if state:
            self.current = float(state["lr"])
            self.best = None if state["best"] is None else float(state["best"])
            self.wait, self.cooldown = int(state["wait"]), int(state["cooldown"])


def epochs_text(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"
