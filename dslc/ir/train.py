"""The checked `train` block: every default pinned here, not left to a framework."""

from __future__ import annotations

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
    # Regularisation (dslc/train/regularisation.py): gradient clipping and class weights.
    clip_norm: float | None = Field(default=None, gt=0.0)
    clip_value: float | None = Field(default=None, gt=0.0)
    class_weight: Literal["balanced"] | list[float] | None = None
    span: Span | None = None
