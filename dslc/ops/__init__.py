"""Ops: one registry, one file per op family."""

from dslc.ops.registry import OPS, Op, OpAttrs, ShapeError, all_ops, get_op, register

__all__ = ["OPS", "Op", "OpAttrs", "ShapeError", "all_ops", "get_op", "register"]
