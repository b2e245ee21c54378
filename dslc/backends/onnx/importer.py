"""`dslc import`: an ONNX model → a `.dl` spec and its weights in the canonical layout.

The walk over the graph is in `import_walk.py`, one rule per ONNX op in `import_rules.py`;
this module writes the spec text, checks it, and is the command.

NCHW models (what `torch.onnx.export` writes) become channels-last specs: an image input of
the ONNX model is `[N, C, H, W]`, the spec's is `[N, H, W, C]` with the same values, and a
Flatten of NCHW feature maps before a dense layer is a plain `flatten` whose dense kernel's
rows are permuted to channels-last order. `Imported.inputs` / `.outputs` say how each boundary
tensor maps (`Boundary.to_spec`, `Boundary.to_onnx`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dslc.diagnostics import DslError
from dslc.ir.graph import Shape

from . import import_rules  # noqa: F401  (fills RULES)
from .import_walk import BATCH, Boundary, Importer, Layer, derived_name, valid_name

if TYPE_CHECKING:
    from onnx import ModelProto

    from dslc.ir.graph import Graph


@dataclass
class Imported:
    """The result of an import: the spec text, its checked graph and canonical weights."""

    name: str
    text: str
    graph: Graph
    weights: dict[str, np.ndarray]
    inputs: list[Boundary]
    outputs: list[Boundary]


# -- the spec text ----------------------------------------------------------------------------

def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple | list):
        if len(v) == 2 and v[0] == v[1]:
            return _literal(v[0])
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    return str(v)  # a name: padding=same, activation=relu


def call_text(layer: Layer, with_inputs: bool) -> str:
    from pydantic_core import PydanticUndefined

    from dslc.ops.registry import get_op

    op = get_op(layer.op)
    fields = op.Attrs.model_fields
    args = list(layer.inputs) if with_inputs else []

    def given(key: str) -> bool:
        if key not in layer.attrs:
            return False
        default = fields[key].default
        if default is PydanticUndefined:
            return True
        v, d = layer.attrs[key], default
        if isinstance(v, tuple | list) and not isinstance(d, tuple | list):
            d = (d, d)
        return bool(v != d)

    done = set()
    for key in op.positional:
        if not given(key):
            break
        args.append(_literal(layer.attrs[key]))
        done.add(key)
    for key in fields:
        if key not in done and given(key):
            args.append(f"{key}={_literal(layer.attrs[key])}")
    return f"{layer.op}({', '.join(args)})" if args else layer.op


def spec_text(name: str, header: list[str], inputs: list[tuple[str, Shape]],
              layers: list[Layer], outputs: list[str], dtypes: list[str] | None = None) -> str:
    lines = [f"# {line}" if line else "#" for line in header]
    lines.append(f"model {name} {{")
    for (inp, shape), dtype in zip(inputs, dtypes or ["f32"] * len(inputs)):
        dims = ", ".join("?" if d is None else str(d) for d in shape)
        lines.append(f"    input {inp}: {dtype}[{dims}]")
    prev = inputs[0][0] if len(inputs) == 1 else None
    for ly in layers:
        implicit = ly.inputs == [prev]
        line = f"    {ly.name} = {call_text(ly, not implicit)}"
        if len(line) > 100:
            call = call_text(ly, True)
            head, args = call.split("(", 1)
            line = f"    {ly.name} = {head}(\n" + "".join(
                f"        {a.strip()},\n" for a in _split_args(args[:-1])) + "    )"
        lines.append(line)
        prev = ly.name
    if outputs != [prev]:
        lines.append(f"    output {', '.join(outputs)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _split_args(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for c in text:
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += c == "["
        depth -= c == "]"
        cur += c
    return [*parts, cur]


def _comment(text: str) -> str:
    """Text from the ONNX file made safe for one comment line."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:200]


def _shape_text(dims: list[Any]) -> str:
    return "[" + ", ".join("N" if d == BATCH else "?" if d is None else str(d)
                           for d in dims) + "]"


def _header(imp: Importer, source: str, weights_name: str | None) -> list[str]:
    m = imp.model
    made = _comment(f"{m.producer_name} {m.producer_version}".strip()) or "an unnamed producer"
    lines = [f"Imported by `dslc import` from {_comment(source)} ({made}, opset {imp.opset})."]
    if weights_name:
        lines.append(f"Weights: {_comment(weights_name)} (canonical layout, docs/weights.md).")
    for b, (dims, shape) in zip(imp.inputs, imp.input_shapes):
        if b.identity:
            continue
        onnx_dims = [BATCH if a == 0 else d for a, d in zip(b.axes, dims)]
        spec_dims = [BATCH, *shape]
        lines.append(f"Input `{b.name}` is the ONNX input `{_comment(b.onnx)}` "
                     f"{_shape_text(onnx_dims)} as {_shape_text(spec_dims)} (channels-last).")
    for b in imp.outputs:
        if not b.identity:
            lines.append(f"Output `{b.name}` is the ONNX output `{_comment(b.onnx)}` with its "
                         "axes in the spec's order (channels-last, size-1 axes dropped).")
        elif b.onnx != b.name:
            lines.append(f"Output `{b.name}` is the ONNX output `{_comment(b.onnx)}`.")
    return lines


# -- the entry points -------------------------------------------------------------------------

def read_model(path: Path) -> ModelProto:
    """The ONNX model in `path`, or a DslError that says why it is not one."""
    import onnx
    from google.protobuf.message import DecodeError

    from dslc.data.files import require_regular

    require_regular(path, "ONNX model")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DslError(f"{path}: cannot read: {exc.strerror or exc}") from None
    hint = "dslc import reads .onnx files (a serialized ONNX ModelProto)"
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise DslError(f"{path}: not an ONNX model ({_comment(str(exc)) or 'cannot decode'})",
                       hint=hint) from None
    if not model.HasField("graph") or not model.graph.node or not model.opset_import:
        raise DslError(f"{path}: not an ONNX model (no graph of nodes)", hint=hint)
    try:
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, str(path.resolve().parent))
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, OSError, ValueError) as exc:
        raise DslError(f"{path}: not a valid ONNX model: {_comment(str(exc))}") from None
    return model


def import_model(model: ModelProto, source: str = "<model>", weights_name: str | None = None,
                 spec_path: str | Path | None = None) -> Imported:
    """Convert `model`; errors name the ONNX node (op type, name, index) they are about.
    `spec_path` is where the spec will be written: the name its own checks report."""
    from dslc.compiler import compile_text

    from .preprocess import describe, strip_preprocessing

    model, record = strip_preprocessing(model)  # what `dslc export` put before the layers
    imp = Importer(model, source)
    imp.run()
    layers = imp.finish()
    if not layers:
        raise DslError(f"{source}: the model computes nothing dslc can express as a layer")
    # dslc names the graph after the model; other exporters' graph names say little
    # (PyTorch's is `main_graph`), the file's name more.
    candidates = [model.graph.name] if imp.from_dslc else []
    candidates += [derived_name(Path(source).stem, ""), model.graph.name, "imported"]
    name = next(c for c in candidates if valid_name(c))
    inputs = [(b.name, shape) for b, (_, shape) in zip(imp.inputs, imp.input_shapes)]
    header = _header(imp, source, weights_name)
    if record is not None:
        steps = _comment(describe(record)) or "its preprocessing"
        header.append(f"The ONNX file applied {steps} to its input itself; this spec takes "
                      "the input as its layers see it.")
    text = spec_text(name, header, inputs, layers, [b.name for b in imp.outputs],
                     imp.input_dtypes)
    spec = compile_text(text, spec_path or f"{name}.dl")  # e.g. a model past dslc's limits
    graph = spec.model(name)
    weights = {f"{ly.name}.{k}": np.ascontiguousarray(v, dtype=np.float32)
               for ly in layers for k, v in ly.params.items()}
    expected = graph.param_specs()
    if set(expected) != set(weights) or any(tuple(weights[k].shape) != p.shape
                                             for k, p in expected.items()):
        raise RuntimeError("dslc import made weights that do not fit its spec: "
                           f"{sorted(weights)} vs {sorted(expected)}")
    return Imported(name, text, graph, weights, imp.inputs, imp.outputs)


def import_file(path: str | Path, weights_name: str | None = None,
                spec_path: str | Path | None = None) -> Imported:
    path = Path(path)
    return import_model(read_model(path), path.name, weights_name, spec_path)


def import_command(args: Any) -> int:
    """`dslc import MODEL.onnx -o SPEC.dl [--weights W.safetensors] [--force]`."""
    from dslc.weights import atomic_write_bytes, save_weights

    from .record import check_output_path

    src, out = Path(args.model), Path(args.out)
    weights = Path(args.weights) if args.weights else out.with_suffix(".safetensors")
    if out.suffix != ".dl":
        raise DslError(f"{out}: the output of `dslc import` is a .dl spec",
                       hint=f"use -o {out.with_suffix('.dl')}")
    if weights.suffix != ".safetensors":
        raise DslError(f"{weights}: weights are written as a .safetensors file",
                       hint=f"use --weights {weights.with_suffix('.safetensors')}")
    if _same(out, weights):
        raise DslError(f"{out}: -o and --weights name the same file")
    for p, what in ((out, "-o"), (weights, "--weights")):
        if _same(p, src):
            raise DslError(f"{p}: {what} names the ONNX model; refusing to overwrite it")
    check_output_path(out, "spec", args.force)
    check_output_path(weights, "weights file", args.force, flag="--weights")
    try:
        rel = str(weights.resolve().relative_to(out.resolve().parent))
    except ValueError:
        rel = str(weights)
    imported = import_file(src, rel, out)
    check_output_path(out, "spec", args.force)  # again: it may have appeared meanwhile
    check_output_path(weights, "weights file", args.force, flag="--weights")
    save_weights(weights, imported.weights, metadata={"imported_from": _comment(src.name)})
    atomic_write_bytes(out, imported.text.encode("utf-8"))
    layers = len(imported.graph.nodes)
    params = imported.graph.param_count
    print(f"wrote {out} (model {imported.name}, {layers} layers, {params:,} parameters) "
          f"and {weights}")
    return 0


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


__all__ = ["Boundary", "Imported", "import_command", "import_file", "import_model",
           "read_model"]
