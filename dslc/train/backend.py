"""What the shared training loop needs from a backend. `dslc.backends.<name>.make_trainer`
returns one of these; everything else (data, shuffling, augmentation, metrics, progress,
checkpoints, resume, NaN handling, outputs) lives once in dslc/train/ and dslc/data/."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np


class Trainer(Protocol):
    device: str

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load canonical weights (dslc/weights.py layout)."""

    def get_weights(self) -> dict[str, np.ndarray]:
        """Canonical weights, float32 numpy, keyed `<layer>.<param>`."""

    def train_epoch(self, x: np.ndarray, y: np.ndarray, batch_size: int,
                    on_batch: Callable[[int, float], None]) -> float:
        """One pass over `x`, `y` (already shuffled and augmented by the loop), one optimizer
        step per batch of `batch_size`, in order. Calls `on_batch(samples, loss)` after each
        step. Returns the mean training loss over the epoch (sample-weighted)."""

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Inference-mode outputs (softmax/sigmoid applied as in the spec)."""

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's state as named float arrays (for --resume)."""

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        ...
