"""The contract every backend keeps. A backend is one folder under dslc/backends/ whose
`__init__.py` defines a `Backend` subclass (without importing its framework) and one line in
`dslc/backends/__init__.py`. Callers ask the contract what a backend can do — never
`hasattr`, never `if name == ...`.

Capabilities:
- `emits`: what `dslc compile --target NAME` writes — `"source"` (a standalone Python module)
  or `"model"` (a model file); None when it cannot compile.
- `runs`: `build(graph, weights)` gives a `Runtime` for inference.
- `trains`: `make_trainer(...)` gives a `Trainer` for dslc/train's loop, and `gradients(...)`
  differentiates the model (the op test matrix compares them across frameworks).
- `precisions`: the number formats `build(..., precision=)` and `TrainOptions.precision` take
  (fp32 always; bf16/fp16 as mixed precision: float32 weights, low-precision arithmetic).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from dslc.diagnostics import DslError

if TYPE_CHECKING:
    import numpy as np

    from dslc.backends.lowering import LoweringTable
    from dslc.ir.graph import Graph
    from dslc.ir.train import TrainConfig

# One array (one input), a list or tuple of arrays in the spec's input order, or a dict by
# input name; arrays are channels-last float32 `[N, ...]`.
Feed = Any


PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainOptions:
    """How a trainer runs, beyond the spec (`dslc train` flags; docs/scale.md).

    - `precision`: mixed precision (`bf16`, `fp16`): weights and optimizer state stay float32,
      the forward and backward passes compute in the low format; fp16 scales the loss.
    - `compile`: torch.compile the training step (torch only).
    - `distributed`: one process of a torch.distributed group (DistributedDataParallel); the
      process group is already initialised (dslc/train/distributed.py).
    - `devices`: replicas of a tf.distribute.MirroredStrategy in this process (Keras): local
      GPUs, or logical CPU devices without them."""

    precision: str = "fp32"
    compile: bool = False
    distributed: bool = False
    devices: int = 1  # Keras: MirroredStrategy over this many local devices


class Runtime(Protocol):
    """A built model in inference mode."""

    def predict(self, x: Feed) -> np.ndarray:
        """The first output."""
        ...

    def predict_all(self, x: Feed) -> list[np.ndarray]:
        """Every output, in the spec's order."""
        ...


class Trainer:
    """What the shared training loop (dslc/train/loop.py) needs from a backend. Everything
    else — data, shuffling, augmentation, metrics, progress, checkpoints, resume, NaN
    handling, outputs — lives once in dslc/train/ and dslc/data/."""

    device: str

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load canonical weights (docs/weights.md layout)."""
        raise NotImplementedError

    def get_weights(self) -> dict[str, np.ndarray]:
        """Canonical weights, float32 numpy, keyed `<layer>.<param>`."""
        raise NotImplementedError

    def begin_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based): reseed the framework's own randomness (dropout)
        so a resumed run continues exactly."""

    def train_epoch(self, x: np.ndarray, y: np.ndarray, batch_size: int,
                    on_batch: Callable[[int, float], None]) -> float:
        """One pass over `x`, `y` (already shuffled and augmented by the loop), one optimizer
        step per batch of `batch_size`, in order. Calls `on_batch(samples, loss)` after each
        step. Returns the mean training loss over the epoch (sample-weighted)."""
        raise NotImplementedError

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Inference-mode outputs (softmax/sigmoid applied as in the spec)."""
        raise NotImplementedError

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's state as named float arrays (for --resume)."""
        raise NotImplementedError

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def set_lr(self, lr: float) -> None:
        """Set the optimizer's learning rate for the next steps (the loop calls it before each
        epoch when the spec has a `schedule`; dslc/train/schedules.py computes the rate)."""
        raise NotImplementedError


class Backend:
    """One backend. Subclasses set the class attributes and override what they can do."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    # Modules the backend imports to build, train or export (checked by `require`), and the
    # pip extra that installs them.
    frameworks: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""
    emits: ClassVar[Literal["source", "model"] | None] = None
    runs: ClassVar[bool] = False
    trains: ClassVar[bool] = False
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    compiles: ClassVar[bool] = False  # TrainOptions.compile
    distributes: ClassVar[bool] = False  # TrainOptions.distributed
    mirrors: ClassVar[bool] = False  # TrainOptions.devices

    @property
    def lowerings(self) -> LoweringTable:
        """The backend's lowering table (importing it imports no framework)."""
        raise NotImplementedError

    def require(self) -> None:
        """A clear error when the framework is not installed, before anything imports it."""
        for module in self.frameworks:
            if importlib.util.find_spec(module) is None:
                raise DslError(f"backend `{self.name}` needs `{module}`, which is not installed",
                               hint=f"pip install 'dslc[{self.extra or self.name}]'")

    def _cannot(self, what: str) -> DslError:
        return DslError(f"backend `{self.name}` cannot {what}")

    def generate(self, spec: Any, graph: Graph) -> str:
        """Standalone source of `graph` (backends that emit source)."""
        raise self._cannot("write source")

    def compile(self, spec: Any, graph: Graph, out: Path, seed: int = 0,
                force: bool = False) -> Path:
        """Write what `dslc compile` writes for `graph` under `out`; returns the file. A source
        backend writes `generate`'s module as `OUT/<model>.py` (`<model>_model.py` when the
        name is an importable module's), replacing a file dslc did not write only with
        `force`; a model backend overrides this."""
        if self.emits != "source":
            raise self._cannot("compile")
        from dslc.backends.pysource import write_module

        return write_module(out, graph.name, self.generate(spec, graph), self.name, force)

    def build(self, graph: Graph, weights: dict[str, np.ndarray], device: str = "cpu",
              precision: str = "fp32") -> Runtime:
        raise self._cannot("run a model")

    def make_trainer(self, graph: Graph, config: TrainConfig, device: str = "cpu",
                     seed: int = 0, options: TrainOptions | None = None) -> Trainer:
        raise self._cannot("train")

    def check_options(self, options: TrainOptions | None, precision: str = "fp32") -> None:
        """A clear error for what this backend cannot do (before it imports its framework)."""
        precision = options.precision if options is not None else precision
        if precision not in self.precisions:
            raise DslError(f"backend `{self.name}` runs at {', '.join(self.precisions)}, not "
                           f"{precision}")
        if options is not None and options.compile and not self.compiles:
            raise DslError(f"--compile is for the torch backend; `{self.name}` does not compile",
                           hint="drop --compile")
        if options is not None and options.distributed and not self.distributes:
            raise DslError(f"backend `{self.name}` does not train on several processes",
                           hint="keras trains on several devices of one process with "
                                "--devices N (docs/scale.md)")
        if options is not None and options.devices > 1 and not self.mirrors:
            raise DslError(f"--devices is Keras's MirroredStrategy; backend `{self.name}` "
                           "trains on several devices with --nproc N (one process each)")

    def gradients(self, graph: Graph, weights: dict[str, np.ndarray], xs: list[np.ndarray],
                  cotangents: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The gradient of `sum(output_k * cotangent_k)` over every output, in inference mode:
        by canonical weight key (canonical layout) and by `input:<name>` for each input."""
        raise self._cannot("differentiate")
