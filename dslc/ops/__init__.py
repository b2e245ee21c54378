"""Ops: one registry, one file per op family. Importing this package registers them all."""

from dslc.ops import (  # noqa: F401
    activation,
    attention,
    conv,
    core,
    embedding,
    merge,
    norm,
    pool,
    recurrent,
    shape,
    spatial,
)
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
