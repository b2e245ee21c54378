"""Activations as ops (`relu(x)`, a sequential `relu`). `activation=` on a layer takes the
same names: `Activation` below is built from the ops registered here, so adding an
activation op adds it to every layer's `activation=` as well."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from dslc.ops.registry import Op, OpAttrs, activation_names, register


class Elementwise(Op):
    category = "activation"

    def infer(self, a, inputs):
        return inputs[0]

    def masking(self, a):
        return "keep"  # per position (softmax too: over the last axis)


def _simple(op_name: str, doc: str, passes_values: bool = False) -> type[Op]:
    cls = type(op_name.title().replace("_", ""), (Elementwise,),
               {"name": op_name, "__doc__": doc, "passes_values": passes_values})
    return register(cls)


_simple("linear", "The identity.", passes_values=True)
_simple("relu", "`max(x, 0)`.")
_simple("sigmoid", "`1 / (1 + exp(-x))`.")
_simple("tanh", "Hyperbolic tangent.")
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


@register
class Elu(Elementwise):
    """`x` if `x > 0` else `alpha * (exp(x) - 1)`; `alpha` defaults to 1.0 (every framework's)."""

    name = "elu"
    positional = ("alpha",)

    class Attrs(OpAttrs):
        alpha: float = Field(default=1.0, ge=0.0)


# Keras 3's definitions (keras/src/activations); torch and ONNX agree with each.
_simple("selu", "`scale * elu(x, alpha)` with SELU's constants (alpha ~1.6733, scale ~1.0507).")
_simple("softplus", "`log(1 + exp(x))`.")
_simple("softsign", "`x / (1 + abs(x))`.")
_simple("silu", "`x * sigmoid(x)` (Keras also calls it swish).")
_simple("hard_sigmoid", "`clip(x / 6 + 0.5, 0, 1)`: Keras 3's (Keras 2 had slope 0.2).")
_simple("relu6", "`min(max(x, 0), 6)`.")


@register
class LogSoftmax(Elementwise):
    """`x - log(sum(exp(x)))` over the last axis: log-probabilities, not probabilities."""

    name = "log_softmax"


# The values of every layer's `activation=`: the activation ops above, in their order (a
# plain str to the type checker, which cannot read a Literal built at run time).
if TYPE_CHECKING:
    Activation = str
else:
    Activation = Literal[activation_names()]
