"""Padding masks, Keras's semantics: `embedding(mask_zero=true)` marks the positions whose id
is 0 as padding, and the mask flows on through the layers that work position by position.

`padding_masks(graph)` says, for every masked tensor, which id tensors make its mask: the
mask is `ids != 0` for each of them, ANDed (two masked branches merged by `add` or `concat`
carry both, as Keras's merge layers AND their masks). Ops declare what they do with a mask
(`Op.masking`): `make` (embedding with mask_zero), `keep` (the output carries the inputs'
mask), `use` (the op consumes it; its output is unmasked), `use_keep` (consumes it and
passes it on), `none` (the op cannot honour one: `check` refuses the masked input, rather
than let padding leak into the numbers silently).

A masked tensor may be a model output: every backend returns values at padded steps too,
as Keras does (the caller knows where its padding is). Backends read the mask of an op's
input through their lowering context's `mask_of(name)`.
"""

from __future__ import annotations

from dslc.diagnostics import Collector
from dslc.ir.graph import Graph
from dslc.ops import get_op

Masks = dict[str, tuple[str, ...]]


def padding_masks(graph: Graph) -> Masks:
    """tensor name → the id tensors whose `!= 0` (ANDed) is its padding mask; tensors
    without a mask are absent."""
    return _walk(graph)[0]


def mask_makers(graph: Graph) -> dict[str, tuple[str, ...]]:
    """tensor name → the layers (`embedding(mask_zero=true)`) whose mask it carries."""
    return _walk(graph)[1]


def _walk(graph: Graph) -> tuple[Masks, dict[str, tuple[str, ...]]]:
    masks: Masks = {}
    makers: dict[str, tuple[str, ...]] = {}
    for node in graph.nodes:
        op = get_op(node.op)
        how = op.masking(node.attrs)
        if how == "make":
            masks[node.name], makers[node.name] = (node.inputs[0],), (node.name,)
        elif how in ("keep", "use_keep"):
            carriers = [node.inputs[k] for k in op.mask_carriers(node.attrs, len(node.inputs))]
            ids = _union(masks.get(i, ()) for i in carriers)
            if ids:
                masks[node.name] = ids
                makers[node.name] = _union(makers.get(i, ()) for i in carriers)
    return masks, makers


def _union(groups) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for group in groups:
        out.update(dict.fromkeys(group))
    return tuple(out)


def check(graph: Graph, errors: Collector) -> None:
    """A located error for each layer whose op cannot honour a mask on a masked input."""
    masks = padding_masks(graph)
    makers = mask_makers(graph)
    for node in graph.nodes:
        op = get_op(node.op)
        if op.masking(node.attrs) not in ("none", "make"):
            continue
        masked = [i for i in dict.fromkeys(node.inputs) if i in masks]
        if not masked:
            continue
        who = ", ".join(f"`{m}`" for m in makers[masked[0]])
        what = "its input" if len(node.inputs) == 1 else f"its input `{masked[0]}`"
        hint = (f"`{node.op}` does not support padding masks (yet): set `mask_zero=false` on "
                f"{who} to treat id 0 as an ordinary token")
        if node.op == "concat":
            hint = "concat keeps a padding mask along the last axis only (`axis=-1`)"
        errors.error(f"layer `{node.name}` ({node.op}) cannot honour the padding mask that "
                     f"{who} (mask_zero=true) {'put' if len(makers[masked[0]]) > 1 else 'puts'} "
                     f"on {what}", node.span, hint)
