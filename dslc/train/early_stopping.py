"""Early stopping with best weights, one implementation for every backend.

After each epoch the loop gives `update` the epoch's row: the first value of `monitor` is the
best so far; a later one is better when it beats the best by more than `min_delta` (lower for
losses, mse and mae; higher for accuracy, precision, recall and F1; `mode` overrides). After
`patience` epochs in a row without a better value the run stops (Keras's EarlyStopping rule).
With `restore_best` the weights of the best epoch are kept and written at the end, whether or
not the run stopped early. The state (and the best weights) go into every checkpoint, so a
resumed run stops where the uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np

from dslc.ir.train import EarlyStopping
from dslc.train.schedules import epochs_text, improved, monitor_mode


class Stopper:
    def __init__(self, config: EarlyStopping):
        self.config = config
        self.mode = monitor_mode(config.monitor, config.mode)
        self.best: float | None = None
        self.best_epoch = 0     # 1-based, as in history.csv
        self.wait = 0
        self.stopped: dict | None = None  # {"epoch", "reason", "best_epoch", "best"}
        self.best_weights: dict[str, np.ndarray] | None = None

    def update(self, row: dict, weights) -> bool:
        """Take the epoch's row; `weights()` gives the current weights (read only when they
        are the best so far and restore_best is on). True: stop now."""
        c = self.config
        value = float(row[c.monitor])
        if improved(value, self.best, self.mode, c.min_delta):
            self.best, self.best_epoch, self.wait = value, int(row["epoch"]), 0
            if c.restore_best:
                self.best_weights = {k: np.array(v, copy=True) for k, v in weights().items()}
            return False
        self.wait += 1
        if self.wait < c.patience:
            return False
        by = f" by more than {c.min_delta:g}" if c.min_delta else ""
        self.stopped = {"epoch": int(row["epoch"]),
                        "reason": f"{c.monitor} has not improved{by} for {epochs_text(c.patience)}",
                        "best_epoch": self.best_epoch, "best": self.best}
        return True

    def message(self) -> str:
        s = self.stopped
        assert s is not None
        kept = (f"; keeping the weights of epoch {s['best_epoch']}" if self.config.restore_best
                else "")
        best = "n/a" if s["best"] is None else f"{s['best']:.4g}"
        return (f"early stopping after epoch {s['epoch']}: {s['reason']} (best "
                f"{self.config.monitor} {best} at epoch {s['best_epoch']}){kept}")

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped": self.stopped}

    def load(self, state: dict | None, best_weights: dict[str, np.ndarray] | None) -> None:
        if state:
            self.best = None if state["best"] is None else float(state["best"])
            self.best_epoch, self.wait = int(state["best_epoch"]), int(state["wait"])
            self.stopped = state.get("stopped")
        if best_weights:
            self.best_weights = best_weights
