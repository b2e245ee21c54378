"""What the editor shows about ops, their attributes and checked layers (Markdown), all read
from the op registry: a new op or attribute appears in hovers and completions by itself."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from dslc.ir.graph import Graph, Node
from dslc.ops import Op
from dslc.ops.registry import fmt


def value_text(value: Any) -> str:
    """A default as a .dl spec writes it: `true`, `same`, `[1, 1]`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(value)


def choices(annotation: Any) -> list[str]:
    """The values an attribute may take, where they are few: a Literal's, or true/false."""
    if annotation is bool:
        return ["true", "false"]
    if typing.get_origin(annotation) is typing.Literal:
        return [value_text(a) for a in typing.get_args(annotation)]
    return []


def type_text(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(value_text(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "none"
    origin = typing.get_origin(annotation)
    if origin is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_text(args[0])}"
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    return getattr(annotation, "__name__", str(annotation))


def attribute(op: Op, name: str) -> str:
    """`kernel`: int or [int, int] = `3`, one line."""
    field = op.Attrs.model_fields[name]
    text = f"`{name}`: {type_text(field.annotation)}"
    if field.is_required():
        return text + " (required)"
    return text + f" = `{value_text(field.get_default())}`"


def attribute_default(op: Op, name: str) -> str:
    field = op.Attrs.model_fields[name]
    return "required" if field.is_required() else f"= {value_text(field.get_default())}"


def signature(op: Op) -> str:
    """`conv2d(filters, kernel=3, strides=1, ...)`: positional first, then the defaults."""
    parts = []
    for name, field in op.Attrs.model_fields.items():
        if field.is_required():
            parts.append(name)
        else:
            parts.append(f"{name}={value_text(field.get_default())}")
    return f"{op.name}({', '.join(parts)})"


def _doc(op: Op) -> str:
    return inspect.cleandoc(type(op).__doc__ or "")


def op_markdown(op: Op) -> str:
    inputs = (str(op.min_inputs) if op.max_inputs == op.min_inputs
              else f"{op.min_inputs} or more")
    lines = [f"```dl\n{signature(op)}\n```", _doc(op), "",
             f"{op.category} · inputs: {inputs}"
             + (f" · positional: {', '.join(op.positional)}" if op.positional else "")]
    fields = op.Attrs.model_fields
    if fields:
        lines += ["", "attributes:"] + [f"- {attribute(op, name)}" for name in fields]
    if op.layout:
        lines += ["", f"parameters: {op.layout}"]
    return "\n".join(lines).strip()


def layer_markdown(graph: Graph, nodes: list[Node], op: Op) -> str:
    """The checked layers one call made (a block or `repeat` makes several)."""
    lines = []
    for node in nodes[:MAX_SHOWN]:
        shape = fmt(node.type.shape) if node.type is not None else "?"
        inputs = ", ".join(f"`{i}` {fmt(graph.type_of(i).shape)}" for i in node.inputs)
        lines.append(f"**layer `{node.name}`** in model `{graph.name}`: `{node.op}` → `{shape}`, "
                     f"{node.param_count:,} parameters")
        if node.params:
            lines.append("  " + ", ".join(f"{k} `{fmt(p.shape)}`" for k, p in node.params.items()))
        lines.append(f"  from {inputs}")
    if len(nodes) > MAX_SHOWN:
        lines.append(f"… and {len(nodes) - MAX_SHOWN} more layers from this line")
    return "\n\n".join(lines) + "\n\n---\n\n" + op_markdown(op)


MAX_SHOWN = 4
