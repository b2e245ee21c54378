"""Ops: one registry, one file per op family. A family's module loads when an op of it is
first asked for (`find_op`, `get_op`); `all_ops()` loads them all."""

from dslc.ops.registry import (
    OPS,
    Op,
    OpAttrs,
    Part,
    ShapeError,
    activation_names,
    all_ops,
    ending_activation,
    find_op,
    get_op,
    node_activation,
    op_names,
    register,
)

__all__ = ["OPS", "Op", "OpAttrs", "Part", "ShapeError", "activation_names", "all_ops", "op_names",
           "ending_activation", "find_op", "get_op", "node_activation", "register"]
