"""The checked `train` block: every default pinned here, not left to a framework."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dslc.diagnostics import Span


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                              defer_build=True)


class DataSource(_Config):
    """Where samples come from: a built-in set, a generator or files (see dslc/data/catalog.py)."""

    kind: str
    args: dict[str, Any] = {}
    span: Span | None = None


class Step(_Config):
    """One preprocessing or augmentation step, e.g. `scale(1/255)` or `flip(horizontal)`."""

    name: str
    args: dict[str, Any] = {}
    span: Span | None = None


class Loss(_Config):
    name: Literal["mse", "mae", "binary_crossentropy", "categorical_crossentropy",
                  "sparse_categorical_crossentropy"]
    from_logits: bool = False
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    span: Span | None = None


class Optimizer(_Config):
    """Defaults pinned for every backend (Keras's epsilon 1e-7, not PyTorch's 1e-8)."""

    name: Literal["sgd", "gd", "adam", "adamw", "rmsprop"]
    lr: float = Field(default=1e-3, gt=0.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    beta2: float = Field(default=0.999, ge=0.0, lt=1.0)
    rho: float = Field(default=0.9, ge=0.0, lt=1.0)
    epsilon: float = Field(default=1e-7, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    span: Span | None = None


class Schedule(_Config):
    """The learning rate of each epoch (dslc/train/schedules.py); the optimizer's `lr` is the
    base rate. Monitors name a history column: `loss`, a metric, `val_loss`, `val_<metric>`."""

    name: Literal["cosine", "step", "exponential", "one_cycle", "reduce_on_plateau"]
    warmup: int = Field(default=0, ge=0)                     # cosine
    min_lr: float = Field(default=0.0, ge=0.0)               # cosine, reduce_on_plateau
    every: int = Field(default=1, gt=0)                      # step
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)        # step, exponential
    max_lr: float | None = Field(default=None, gt=0.0)       # one_cycle; None: the optimizer's
    pct_start: float = Field(default=0.3, gt=0.0, lt=1.0)    # one_cycle
    div_factor: float = Field(default=25.0, ge=1.0)          # one_cycle
    final_div_factor: float = Field(default=1e4, ge=1.0)     # one_cycle
    monitor: str = "val_loss"                                # reduce_on_plateau from here on
    factor: float = Field(default=0.1, gt=0.0, lt=1.0)
    patience: int = Field(default=10, ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"
    cooldown: int = Field(default=0, ge=0)
    span: Span | None = None


class EarlyStopping(_Config):
    """Stop when `monitor` has not improved for `patience` epochs (dslc/train/early_stopping.py)."""

    monitor: str = "val_loss"
    patience: int = Field(default=3, ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best: bool = True
    span: Span | None = None


class TrainConfig(_Config):
    model: str
    data: DataSource
    validation: float = Field(default=0.0, ge=0.0, lt=1.0)
    preprocess: list[Step] = []
    augment: list[Step] = []
    loss: Loss
    optimizer: Optimizer
    metrics: list[str] = []
    epochs: int = Field(default=10, gt=0)
    batch: int | None = Field(default=32, gt=0)  # None: full batch (gradient descent)
    seed: int = 0
    shuffle: bool = True
    schedule: Schedule | None = None
    early_stopping: EarlyStopping | None = None
    # Regularisation (dslc/train/regularisation.py): gradient clipping and class weights.
    clip_norm: float | None = Field(default=None, gt=0.0)
    clip_value: float | None = Field(default=None, gt=0.0)
    class_weight: Literal["balanced"] | list[float] | None = None
    span: Span | None = None
