"""Activations as ops (`relu(x)`, a sequential `relu`). `activation=` on a layer uses the same names."""

from __future__ import annotations

from pydantic import Field

from dslc.ops.registry import Op, OpAttrs, register


class Elementwise(Op):
    category = "activation"

    def infer(self, a, inputs):
        return inputs[0]


def _simple(op_name: str, doc: str) -> type[Op]:
    cls = type(op_name.title().replace("_", ""), (Elementwise,), {"name": op_name, "__doc__": doc})
    return register(cls)


_simple("relu", "`max(x, 0)`.")
_simple("sigmoid", "`1 / (1 + exp(-x))`.")
_simple("tanh", "Hyperbolic tangent.")
_simple("linear", "The identity.")
_simple("gelu", "Gaussian error linear unit, exact (erf) form.")


@register
class Softmax(Elementwise):
    """`exp(x) / sum(exp(x))` over the last axis."""

    name = "softmax"


@register
class LeakyRelu(Elementwise):
    """`x` if `x > 0` else `alpha * x`; `alpha` defaults to 0.01 (PyTorch's), pinned for all backends."""

    name = "leaky_relu"
    positional = ("alpha",)

    class Attrs(OpAttrs):
        alpha: float = Field(default=0.01, ge=0.0)


# The slope `activation=leaky_relu` uses on a layer.
LEAKY_RELU_ALPHA = 0.01
