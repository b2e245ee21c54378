"""Attention. Canonical form: Keras's MultiHeadAttention (EinsumDense projections per head)."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

from pydantic import Field

from dslc.ir.graph import ParamSpec, TensorType
from dslc.ops.registry import Init, Op, OpAttrs, ShapeError, fmt, register


@register
class MultiHeadAttention(Op):
    """Multi-head dot-product attention of `query` `[Tq, d]` over `value` `[Tv, dv]` (`key`: `value` unless given), as Keras's MultiHeadAttention."""

    name = "multi_head_attention"
    layout = ("query_kernel `[dq, heads, key_dim]`, query_bias `[heads, key_dim]`, key_kernel "
              "`[dk, heads, key_dim]`, key_bias `[heads, key_dim]`, value_kernel `[dv, heads, "
              "value_dim]`, value_bias `[heads, value_dim]`, output_kernel `[heads, value_dim, "
              "out]`, output_bias `[out]` (biases if `use_bias`)")
    positional = ("heads", "key_dim")
    min_inputs = 2
    max_inputs = 3

    # Keras's defaults. `value_dim` defaults to `key_dim`, `output_dim` to the query's features.
    # `causal`: query i attends to keys 0..i (Keras's `use_causal_mask`, also when Tq != Tk).
    # `dropout` drops attention probabilities while training.
    class Attrs(OpAttrs):
        heads: int = Field(gt=0)
        key_dim: int = Field(gt=0)
        value_dim: int | None = Field(default=None, gt=0)
        output_dim: int | None = Field(default=None, gt=0)
        causal: bool = False
        use_bias: bool = True
        dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
        kernel_init: Init = "glorot_uniform"
        bias_init: Init = "zeros"

    # Padding masks as Keras's: a padded query step attends to nothing, nor does any step to
    # a padded value (or key) step; the output keeps the query's mask.
    def masking(self, attrs):
        return "use_keep"

    def mask_carriers(self, attrs, count):
        return (0,)

    def infer(self, a, inputs):
        names = ("query", "value", "key")
        for name, t in zip(names, inputs, strict=False):
            shape = t.shape
            if len(shape) != 2:
                hint = ("declare it as `[time, features]`, e.g. `f32[10, 8]`"
                        if len(shape) == 1 else None)
                raise ShapeError(f"multi_head_attention expects the {name} as `[time, features]`"
                                 f", got {fmt(shape)}", hint)
            if shape[1] is None:
                raise ShapeError(f"multi_head_attention needs the {name}'s feature axis known, "
                                 f"got {fmt(shape)}")
        if len(inputs) == 3 and inputs[1].shape[0] != inputs[2].shape[0]:
            raise ShapeError(
                f"multi_head_attention: value {fmt(inputs[1].shape)} and key "
                f"{fmt(inputs[2].shape)} must have the same length",
                hint="the key gives one score per value step")
        query = inputs[0].shape
        return TensorType(shape=(query[0], a.output_dim or query[1]))

    def params(self, a, inputs):
        dq, dv = inputs[0].shape[1], inputs[1].shape[1]
        dk = inputs[2].shape[1] if len(inputs) == 3 else dv
        vd = a.value_dim or a.key_dim
        out = a.output_dim or dq
        shapes = {
            "query": ((dq, a.heads, a.key_dim), (a.heads, a.key_dim)),
            "key": ((dk, a.heads, a.key_dim), (a.heads, a.key_dim)),
            "value": ((dv, a.heads, vd), (a.heads, vd)),
            "output": ((a.heads, vd, out), (out,)),
        }
        p = {}
        for role, (kernel, bias) in shapes.items():
            p[f"{role}_kernel"] = ParamSpec(shape=kernel, init=a.kernel_init)
            if a.use_bias:
                p[f"{role}_bias"] = ParamSpec(shape=bias, init=a.bias_init)
        return p

    def macs(self, node, inputs):
        a = node.attrs
        tq = inputs[0].shape[0] or 1
        tv = inputs[1].shape[0] or 1
        vd = a.value_dim or a.key_dim
        projections = (tq * node.params["query_kernel"].size + tv * node.params["key_kernel"].size
                       + tv * node.params["value_kernel"].size
                       + tq * node.params["output_kernel"].size)
        return projections + a.heads * tq * tv * (a.key_dim + vd)
