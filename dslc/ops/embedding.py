"""Token embeddings and position encodings: ids → vectors, positions added to sequences."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

from pydantic import Field

from dslc.ir.graph import ParamSpec, TensorType
from dslc.ops.registry import Init, Op, OpAttrs, ShapeError, fmt, register

ID_DTYPES = frozenset({"i32", "i64"})


@register
class Embedding(Op):
    """Looks up integer ids in a trained table: `[...]` ids → `[..., dim]` vectors."""

    name = "embedding"
    layout = "embeddings `[vocab, dim]`"
    positional = ("vocab", "dim")
    input_dtypes = ID_DTYPES

    # Keras's Embedding: `uniform` is its RandomUniform(-0.05, 0.05). With mask_zero, id 0 is
    # padding: the layer's output carries the mask `ids != 0` (dslc/passes/masks.py).
    class Attrs(OpAttrs):
        vocab: int = Field(gt=0)
        dim: int = Field(gt=0)
        mask_zero: bool = False
        embeddings_init: Init = "uniform"

    def infer(self, a, inputs):
        # Any rank: a scalar id per sample gives one vector, `[T]` a sequence of vectors.
        return TensorType(shape=(*inputs[0].shape, a.dim))

    def params(self, a, inputs):
        return {"embeddings": ParamSpec(shape=(a.vocab, a.dim), init=a.embeddings_init)}

    def id_limit(self, a):
        return a.vocab

    def masking(self, a):
        return "make" if a.mask_zero else "none"


def _sequence(op: str, inputs: list[TensorType]) -> tuple[int | None, int]:
    shape = inputs[0].shape
    if len(shape) != 2:
        raise ShapeError(f"{op} expects `[time, features]`, got {fmt(shape)}",
                         "e.g. after `embedding(vocab, dim)` on `i64[T]` ids")
    if shape[1] is None:
        raise ShapeError(f"{op} needs a known feature axis, got {fmt(shape)}")
    return shape[0], shape[1]


@register
class PositionEmbedding(Op):
    """Adds a learned vector per position to a sequence: `x + embeddings[:T]`."""

    name = "position_embedding"
    layout = "embeddings `[max_len, features]`"
    positional = ("max_len",)

    # keras-hub's PositionEmbedding(sequence_length=max_len) gives `embeddings[:T]` to be added
    # by the user; this op adds it (one layer, the usual use). T longer than max_len is refused
    # (keras-hub would interpolate hierarchically instead).
    class Attrs(OpAttrs):
        max_len: int = Field(gt=0)
        embeddings_init: Init = "glorot_uniform"

    def infer(self, a, inputs):
        steps, _ = _sequence(self.name, inputs)
        if steps is not None and steps > a.max_len:
            raise ShapeError(f"position_embedding has {a.max_len} positions (max_len), the "
                             f"sequence has {steps}",
                             f"use `position_embedding({steps})` or more")
        return inputs[0]

    def params(self, a, inputs):
        return {"embeddings": ParamSpec(shape=(a.max_len, inputs[0].shape[1]),
                                        init=a.embeddings_init)}

    def masking(self, a):
        return "keep"


@register
class SinusoidalPosition(Op):
    """Adds the fixed sin/cos position table of Vaswani et al. to a sequence (no parameters)."""

    name = "sinusoidal_position"

    # keras-hub's SinePositionEncoding(max_wavelength) returns the table; this op adds it.
    # Feature i of position p: sin(p * w_i) for even i, cos(p * w_i) for odd i, where
    # w_i = (1 / max_wavelength) ** (2 * (i // 2) / features).
    class Attrs(OpAttrs):
        max_wavelength: float = Field(default=10000.0, gt=1.0)

    def infer(self, a, inputs):
        _sequence(self.name, inputs)
        return inputs[0]

    def masking(self, a):
        return "keep"
