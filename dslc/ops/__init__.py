"""Ops: one registry, one file per op family. Importing this package registers them all."""

from dslc.ops import activation, conv, core, merge, pool, recurrent, spatial  # noqa: F401
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
    register,
)

__all__ = ["OPS", "Op", "OpAttrs", "Part", "ShapeError", "activation_names", "all_ops",
           "ending_activation", "find_op", "get_op", "node_activation", "register"]
