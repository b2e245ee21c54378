"""Reference tables generated from the registries, so the README cannot drift.
`python -m dslc.docs` rewrites the marked sections of README.md; a test checks them."""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from pathlib import Path

from dslc.data.catalog import AUGMENT, PREPROCESS, SOURCES
from dslc.ops.registry import activation_names, all_ops

README = Path(__file__).resolve().parent.parent / "README.md"


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("|", "\\|")


def _attrs(op) -> str:
    parts = []
    for name, field in op.Attrs.model_fields.items():
        if field.is_required():
            parts.append(f"`{name}`")
        else:
            default = field.get_default()
            if isinstance(default, bool):
                default = str(default).lower()
            parts.append(f"`{name}={default}`" if default is not None else f"`{name}` (optional)")
    return ", ".join(parts) or "—"


def op_table() -> str:
    rows = ["| op | inputs | positional | attributes (defaults) | parameters | what it does |",
            "|---|---|---|---|---|---|"]
    for name, op in all_ops().items():
        n_in = str(op.min_inputs) if op.max_inputs == op.min_inputs else f"{op.min_inputs}+"
        if op.max_inputs is not None and op.max_inputs > op.min_inputs:
            n_in = f"{op.min_inputs}-{op.max_inputs}"
        pos = ", ".join(op.positional) or "—"
        rows.append(f"| `{name}` | {n_in} | {pos} | {_attrs(op)} | {op.layout or '—'} | "
                    f"{op.summary()} |")
    return "\n".join(rows)


def activation_list() -> str:
    names = ", ".join(f"`{name}`" for name in activation_names())
    return f"`activation=` on a layer takes {names}: the activation ops in the table below."


def data_table() -> str:
    rows = ["| kind | name | arguments (defaults) | what it does |", "|---|---|---|---|"]
    for kind, table in (("data", SOURCES), ("preprocess", PREPROCESS), ("augment", AUGMENT)):
        for name, info in table.items():
            args = ", ".join(f"`{k}`" if v is None else f"`{k}={str(v).lower() if isinstance(v, bool) else v}`"
                             for k, v in info.args.items())
            rows.append(f"| {kind} | `{name}` | {args or '—'} | {info.doc} |")
    return "\n".join(rows)


SECTIONS: dict[str, Callable[[], str]] = {
    "activations": activation_list, "ops": op_table, "data": data_table,
}


def _fill(text: str, key: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {key}:begin -->\n).*?(<!-- {key}:end -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def render_readme(text: str) -> str:
    for key, fn in SECTIONS.items():
        text = _fill(text, key, fn())
    return text


if __name__ == "__main__":
    from dslc.ops.registry import write_index

    write_index()
    README.write_text(render_readme(README.read_text(encoding="utf-8")), encoding="utf-8")
