"""`dslc export` (a spec and trained weights → a checked .onnx file) and `dslc run` (a .onnx
file and an input file → outputs printed or saved, optionally timed)."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dslc.diagnostics import DslError

from .inputs import IMAGE_SUFFIXES, Signature, read_input
from .metadata import (
    META_CLASSES,
    META_ID_LIMITS,
    META_PIXEL_MAX,
    META_PREPROCESSING,
    META_TASKS,
    static_preprocessing,
    training_input_range,
)
from .preprocess import in_graph
from .ranges import META_INPUT_RANGE, InputRange
from .record import check_output_path, check_pixel_max, check_preprocessing

PREPROCESSING_FILES = ("preprocessing.json", "metrics.json")


# -- export -----------------------------------------------------------------------------------

def find_preprocessing(weights_path: Path) -> tuple[Any, str | None]:
    """The preprocessing record of the training run: in the weights file's metadata (as
    `dslc train` writes it) or in a JSON file beside the weights. Not yet checked: see
    `record.check_preprocessing`; the second item names where it came from."""
    from dslc.weights import read_weights

    _, meta = read_weights(weights_path)
    if meta.get("preprocessing"):
        try:
            record = json.loads(meta["preprocessing"])
        except json.JSONDecodeError:
            raise DslError(f"{weights_path}: its `preprocessing` metadata is not JSON") from None
        return record, f"{weights_path}: its `preprocessing` metadata"
    for name in PREPROCESSING_FILES:
        path = weights_path.parent / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DslError(f"{path}: cannot read the preprocessing record: {exc}") from None
        if name == "preprocessing.json":  # there to hold a record: it must be one
            if isinstance(data, dict) and "preprocessing" in data:
                data = data["preprocessing"]
            return data, str(path)
        # metrics.json: the record is one of its entries, if `dslc train` put it there
        if isinstance(data, dict):
            record = data.get("preprocessing", data if "steps" in data else None)
            if record is not None:
                return record, str(path)
    return None, None


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def export_command(args) -> int:
    from dslc.compiler import compile_file
    from dslc.weights import load_weights

    from .export import export_model, write_model

    out = Path(args.out)
    weights_path = Path(args.weights)
    for other, what in ((weights_path, "weights"), (Path(args.spec), "spec")):
        if _same_file(out, other):
            raise DslError(f"{out}: -o names the {what} file; refusing to overwrite it",
                           hint="give another name for the .onnx file")
    if out.suffix != ".onnx":
        raise DslError(f"{out}: the output of `dslc export` is a .onnx file",
                       hint=f"use -o {out.with_suffix('.onnx')}")
    kind = _kind(args)
    check_output_path(out, ".onnx file", args.force)
    spec = compile_file(args.spec)
    graph = spec.model(getattr(args, "model", None))
    weights = load_weights(weights_path, graph)
    record, source = find_preprocessing(weights_path)
    input_range = _input_range(spec, graph, weights_path)
    if source is not None:
        for inp in graph.inputs:
            check_preprocessing(record, source, tuple(inp.type.shape))
        source = source.removesuffix(": its `preprocessing` metadata")
        if source == str(weights_path):
            source = f"{weights_path.name} metadata"
    else:
        record = static_preprocessing(spec, graph)
        cfg = spec.trains.get(graph.name)
        if record is None and cfg is not None and cfg.preprocess:
            print(f"note: no preprocessing record beside {weights_path}; the model takes "
                  "inputs as its first layer sees them, and `dslc run` feeds them as given",
                  file=sys.stderr)
    embed = not getattr(args, "no_preprocessing", False)
    classes = trained_classes(graph, weights_path)
    model = export_model(spec, graph, weights, record, input_range, embed and kind == "fp32",
                         classes)
    note = ""
    if record is not None and record.get("steps"):
        where = "in the graph" if embed else "in the metadata only (`dslc run` applies it)"
        note = f", preprocessing {_describe(record)} {where}"
        note += f" (from {source})" if source else ""
    note += f", classes {', '.join(classes)}" if classes else ""
    if input_range is not None:
        note += f", training data {input_range.describe()}"
    if kind != "fp32":
        model = _convert(args, kind, spec, graph, weights_path, model, record, embed, out)
    write_model(out, model, args.force)
    print(f"wrote {out} ({kind + ', ' if kind != 'fp32' else ''}model {graph.name}, "
          f"weights {weights_path}{note})")
    return 0


def _kind(args) -> str:
    quantize, precision = getattr(args, "quantize", None), getattr(args, "precision", "fp32")
    if quantize and precision not in (None, "fp32"):
        raise DslError(f"--quantize {quantize} and --precision {precision} each choose the "
                       "number format; give one of them")
    if getattr(args, "calibrate", 1) < 1:
        raise DslError("--calibrate needs at least one sample")
    max_loss = getattr(args, "max_loss", 0.0)
    if not max_loss >= 0 or max_loss == float("inf"):
        raise DslError(f"--max-loss {max_loss:g}: give a finite number of points, 0 or more")
    return quantize or precision or "fp32"


def _convert(args, kind: str, spec, graph, weights_path: Path, model, record, embed: bool,
             out: Path):
    """`model` (its preprocessing not embedded yet) as int8 or fp16, measured against it;
    refused past --max-loss unless --force. Both get the preprocessing afterwards, when
    `embed`: it stays float32 and out of the calibration."""
    from onnx import ModelProto, helper

    from dslc.weights import read_weights

    from .export import check
    from .metadata import task_of
    from .preprocess import embed_into
    from .quantize import compare, convert, deploy_data, loss_of, quantization_meta, report

    cfg = spec.trains.get(graph.name)
    recorded = str(read_weights(weights_path)[1].get("seed", ""))
    seed = int(recorded) if recorded.isdigit() else (cfg.seed if cfg is not None else 0)
    data = deploy_data(spec, graph, seed, args.calibrate, record, raw=embed)
    converted = convert(model, kind, data)
    if embed and record is not None:
        fp32 = ModelProto()
        fp32.CopyFrom(model)
        embed_into(fp32, record)
        embed_into(converted, record)
        model = fp32
    label = f"{kind} (QDQ)" if kind == "int8" else kind
    cmp = compare({"fp32": model.SerializeToString(), label: converted.SerializeToString()},
                  data, task_of(graph, graph.outputs[0]))
    calibrated = f", calibrated on {len(data.calibration):,} training samples" \
        if kind == "int8" else ""
    print(f"{kind} against fp32 on the {data.source} test split{calibrated}:")
    for line in report(cmp, kind, label):
        print(line if line.startswith("note:") else f"  {line}")
    base, new = cmp.scores["fp32"], cmp.scores[label]
    lost = loss_of(base, new)
    what = f"{lost:.2f} accuracy points ({base.show()} -> {new.show()})" \
        if base.metric == "accuracy" else \
        f"{lost:.2f} % of its test loss ({base.show()} -> {new.show()})"
    if lost > args.max_loss:
        if not args.force:
            raise DslError(f"{kind} loses {what}, more than --max-loss {args.max_loss:g}; not "
                           f"writing {out}",
                           hint="calibrate on more samples (--calibrate N), allow more "
                                "(--max-loss), or pass --force to write it anyway")
        print(f"warning: {kind} loses {what}, more than --max-loss {args.max_loss:g}; writing "
              "it anyway (--force)", file=sys.stderr)
    meta = {p.key: p.value for p in converted.metadata_props}
    meta.update(quantization_meta(kind, len(data.calibration), cmp, label))
    del converted.metadata_props[:]
    helper.set_model_props(converted, meta)
    check(converted)
    return converted


def trained_classes(graph, weights_path: Path) -> list[str] | None:
    """The class names `dslc train` recorded in the weights' metadata, checked against the
    model's output."""
    from dslc.weights import read_weights

    from .metadata import check_classes

    recorded = read_weights(weights_path)[1].get("classes")
    if not recorded:
        return None
    try:
        classes = json.loads(recorded)
    except json.JSONDecodeError:
        raise DslError(f"{weights_path}: its `classes` metadata is not JSON") from None
    return check_classes(graph, classes, f"{weights_path}: its `classes` metadata")


def _input_range(spec, graph, weights_path: Path) -> InputRange | None:
    """The training data's value range, on the split of the run that wrote the weights."""
    from dslc.weights import read_weights

    cfg = spec.trains.get(graph.name)
    if cfg is None:
        return None
    seed = cfg.seed
    if InputRange.known(cfg.data.kind) is None:  # measured: on the split of that run's seed
        recorded = str(read_weights(weights_path)[1].get("seed", ""))
        seed = int(recorded) if recorded.isdigit() else seed
    found, why = training_input_range(spec, graph, seed)
    if found is None:
        print(f"note: not recording the training data's value range: {why}; `dslc run` will "
              "not check inputs against it", file=sys.stderr)
    return found


# -- run --------------------------------------------------------------------------------------

def _all_tensors(graph):
    """Every TensorProto of a graph: initializers, constants and those of subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def check_external_data(model, model_path: Path) -> None:
    """Refuse tensors whose external data lies outside the model's folder."""
    from onnx import TensorProto

    folder = model_path.resolve().parent
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if not location:
            raise DslError(f"{model_path}: tensor `{tensor.name}` has external data without a "
                           "location")
        target = Path(location)
        resolved = (folder / target).resolve()
        if target.is_absolute() or ".." in target.parts or not resolved.is_relative_to(folder):
            raise DslError(f"{model_path}: refusing external data `{location}` of tensor "
                           f"`{tensor.name}`: it lies outside the model's folder",
                           hint="keep external data files beside the .onnx file")


def load_session(path: Path, device: str = "cpu"):
    import onnx
    from google.protobuf.message import DecodeError

    if path.is_dir():
        raise DslError(f"{path} is a folder, not a model file",
                       hint="give the .onnx file, e.g. one that `dslc export` wrote")
    if not path.is_file():
        raise DslError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise DslError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node and not model.graph.output:
        raise DslError(f"{path}: not a valid ONNX model (no graph)")
    check_external_data(model, path)
    from .runtime import make_session

    try:
        return make_session(str(path), device)
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DslError(f"{path}: onnxruntime cannot load the model: {first}") from None


def run_command(args) -> int:
    path = Path(args.model)
    if not getattr(args, "bench", False) and (getattr(args, "spec", None) or
                                               getattr(args, "weights", None)):
        raise DslError("--spec and --weights name the torch side of --bench",
                       hint="add --bench, or leave them out")
    if getattr(args, "bench_batch", 1) < 1:
        raise DslError("--bench-batch needs at least one sample")
    if getattr(args, "threads", 0) < 0:
        raise DslError("--threads needs 0 (each framework's choice) or more")
    if getattr(args, "threads", 0) and not getattr(args, "bench", False):
        raise DslError("--threads sets the threads of --bench", hint="add --bench")
    if args.output:
        for given, what in ((args.input, "input"), (args.model, "model")):
            if Path(args.output).resolve() == Path(given).resolve():
                raise DslError(f"--output {args.output} is the {what} file; writing the outputs "
                               "there would destroy it", hint="choose another --output")
        check_output_path(Path(args.output), "outputs", args.force, "--output")
    session = load_session(path, getattr(args, "device", None) or "cpu")
    meta = dict(session.get_modelmeta().custom_metadata_map)
    sig = Signature.of(session)
    if not sig.inputs:
        raise DslError(f"{path}: the model has no inputs; `dslc run` feeds it an input file")
    preprocessing = _json_meta(meta, META_PREPROCESSING, path)
    if preprocessing is not None:
        samples = [p.sample for p in sig.inputs]
        for sample in samples:
            check_preprocessing(preprocessing, f"{path}: metadata `{META_PREPROCESSING}`",
                                sample if all(isinstance(d, int) for d in sample) else None)
    input_range = None
    if META_PIXEL_MAX in meta:  # what files written before dslc.input_range have
        input_range = InputRange(0.0, check_pixel_max(meta[META_PIXEL_MAX], str(path)))
    if META_INPUT_RANGE in meta:
        input_range = InputRange.from_json(meta[META_INPUT_RANGE], str(path))
    tasks = _tasks(meta, path)
    classes = _classes(meta, path)
    feed = read_input(Path(args.input), sig, input_range, args.allow_nan)
    empty = [k for k, v in feed.items() if len(v) == 0]
    if empty:
        raise DslError(f"{args.input}: no samples (input `{empty[0]}` has shape "
                       f"{list(feed[empty[0]].shape)})", hint="give at least one sample")
    _check_range(Path(args.input), feed, input_range)
    _check_ids(Path(args.input), feed, _json_meta(meta, META_ID_LIMITS, path), path)
    embedded = in_graph(meta, str(path))
    if preprocessing and preprocessing.get("steps") and embedded:
        print(f"note: the model applies its preprocessing itself: {_describe(preprocessing)}",
              file=sys.stderr)
    elif preprocessing and preprocessing.get("steps"):
        from dslc.data.preprocess import apply_preprocessing

        try:
            feed = {k: apply_preprocessing(v, preprocessing) for k, v in feed.items()}
        except DslError as exc:
            raise DslError(f"{path}: metadata `{META_PREPROCESSING}` does not fit the input: "
                           f"{exc}") from None
        print(f"note: applied the model's preprocessing: {_describe(preprocessing)}",
              file=sys.stderr)
    try:
        outputs = session.run(None, feed)
    except Exception as exc:  # shapes were checked; this is a model problem
        raise DslError(f"{path}: onnxruntime failed: {str(exc).strip().splitlines()[0]}") from None
    names = [o.name for o in session.get_outputs()]
    if args.output:
        n = save_outputs(Path(args.output), names, outputs, args.force)
        print(f"wrote {args.output} ({n} rows)")
    else:
        print_outputs(names, outputs, tasks, classes)
    if args.bench:
        run_bench(args, path, session, feed, meta, preprocessing, embedded)
    return 0


def _check_range(input_path: Path, feed: dict[str, np.ndarray],
                 input_range: InputRange | None) -> None:
    """For an image, say what the model expects and warn about the other polarity; for other
    inputs, warn about values far outside the training data's range (rules: ranges.py)."""
    name = input_path.name
    if input_path.suffix.lower() in IMAGE_SUFFIXES:
        (image,) = feed.values()
        if input_range is None:
            print(f"note: the model records no training value range; feeding {name}'s pixels "
                  "as 0..255", file=sys.stderr)
            return
        mapped = f"fed {name}'s pixels 0..255 as they are" if \
            (input_range.min, input_range.max) == (0, 255) else \
            f"mapped {name}'s pixels 0..255 onto {input_range.min:g}..{input_range.max:g}"
        print(f"note: the model expects {input_range.describe()}; {mapped}", file=sys.stderr)
        warning = input_range.image_warning(name, image)
    elif input_range is None or len(feed) != 1:
        return
    else:
        warning = input_range.values_warning(name, next(iter(feed.values())))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _check_ids(input_path: Path, feed: dict[str, np.ndarray], limits: Any, path: Path) -> None:
    """Ids at or above a layer's vocabulary (metadata `dslc.id_limits`) are refused by name."""
    if limits is None:
        return
    if not isinstance(limits, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("limit"), int) and not
            isinstance(v.get("limit"), bool) and isinstance(v.get("layer"), str)
            for v in limits.values()):
        raise DslError(f"{path}: metadata `{META_ID_LIMITS}` is not a map of input names to "
                       "{\"limit\": ids below, \"layer\": name}")
    for name, x in feed.items():
        bound = limits.get(name)
        if bound is None or x.dtype.kind not in "iu" or not x.size:
            continue
        limit, layer = bound["limit"], bound["layer"]
        if int(x.max()) >= limit:
            at = [int(i) for i in np.argwhere(x >= limit)[0]]
            raise DslError(f"{input_path}: input `{name}` takes ids below {limit} (the vocabulary "
                           f"of layer `{layer}`), got {int(x[tuple(at)])} at index {at}",
                           hint=f"map tokens the model has no id for to an id below {limit}")


def _json_meta(meta: dict, key: str, path: Path):
    if key not in meta:
        return None
    try:
        return json.loads(meta[key])
    except (json.JSONDecodeError, RecursionError):
        raise DslError(f"{path}: metadata `{key}` is not valid JSON") from None


def _tasks(meta: dict, path: Path) -> dict:
    """Output name → task; metadata that is not such a map only loses the class column."""
    tasks = _json_meta(meta, META_TASKS, path)
    if tasks is None:
        return {}
    if not isinstance(tasks, dict) or not all(isinstance(v, str) for v in tasks.values()):
        print(f"note: {path}: ignoring metadata `{META_TASKS}` (not a map of output names to "
              "tasks); printing raw values", file=sys.stderr)
        return {}
    return tasks


def _classes(meta: dict, path: Path) -> dict[str, list[str]]:
    """Output name → class names; metadata that is not such a map only loses the names."""
    classes = _json_meta(meta, META_CLASSES, path)
    if classes is None:
        return {}
    if not isinstance(classes, dict) or not all(
            isinstance(v, list) and all(isinstance(c, str) for c in v) for v in classes.values()):
        print(f"note: {path}: ignoring metadata `{META_CLASSES}` (not a map of output names to "
              "class names); printing class indices", file=sys.stderr)
        return {}
    return classes


def _describe(record: dict) -> str:
    parts = []
    for step in record.get("steps", []):
        if step.get("name") == "scale":
            parts.append(f"scale({step['factor']:.6g})")
        else:
            parts.append(str(step.get("name")))
    return ", ".join(parts)


def print_outputs(names: list[str], outputs: list[np.ndarray], tasks: dict,
                  classes: dict | None = None) -> None:
    """Class and probability per row for classifier outputs (the class's name when the model
    records them), raw values otherwise."""
    for i, (name, y) in enumerate(zip(names, outputs, strict=True)):
        if len(names) > 1:
            print(f"{'' if i == 0 else chr(10)}output {name}:")
        y = np.asarray(y)
        kind = tasks.get(name)
        labels = (classes or {}).get(name) or []

        def label(c: int, labels: list[str] = labels) -> str:
            return labels[c] if c < len(labels) else str(c)

        w = max([5, *(len(n) for n in labels)])
        if kind == "classifier" and y.ndim == 2:
            print(f"{'row':>5}  {'class':>{w}}  {'probability':>11}")
            for r, row in enumerate(y):
                c = int(np.argmax(row))
                print(f"{r:>5}  {label(c):>{w}}  {row[c]:>11.6f}")
        elif kind == "binary" and y.ndim == 2 and y.shape[1] == 1:
            print(f"{'row':>5}  {'class':>{w}}  {'probability':>11}")
            for r, p in enumerate(y[:, 0]):
                c = int(p >= 0.5)
                print(f"{r:>5}  {label(c):>{w}}  {(p if c else 1 - p):>11.6f}")
        else:
            print(f"{'row':>5}  {name}")
            for r, row in enumerate(y.reshape(len(y), -1) if y.ndim else y.reshape(1, 1)):
                print(f"{r:>5}  " + "  ".join(f"{v:.6g}" for v in row))


def write_npz(buf: io.BytesIO, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez(buf, **arrays)`, for any names: an output called `file` or `allow_pickle`
    would clash with savez's own arguments."""
    with zipfile.ZipFile(buf, "w") as zf:
        for name, y in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(y), allow_pickle=False)


def save_outputs(path: Path, names: list[str], outputs: list[np.ndarray],
                 force: bool = False) -> int:
    from dslc.weights import atomic_write_bytes

    suffix = path.suffix.lower()
    buf = io.BytesIO()
    if suffix == ".npy":
        if len(outputs) > 1:
            raise DslError(f"the model has {len(outputs)} outputs ({', '.join(names)}); "
                           ".npy holds one", hint="save to a .npz file")
        np.save(buf, outputs[0], allow_pickle=False)
    elif suffix == ".npz":
        write_npz(buf, dict(zip(names, outputs, strict=True)))
    elif suffix == ".csv":
        outputs = [np.asarray(y) for y in outputs]
        scalar = [n for n, y in zip(names, outputs, strict=True) if y.ndim == 0]
        if scalar:
            raise DslError(f"{path}: output `{scalar[0]}` is a single number, not one row per "
                           "sample; a .csv holds rows", hint="save to a .npz or .npy file")
        rows = {len(y) for y in outputs}
        if len(rows) > 1:
            raise DslError(f"{path}: the outputs have different numbers of rows "
                           f"({', '.join(f'{n}: {len(y)}' for n, y in zip(names, outputs))})",
                           hint="save to a .npz file")
        flat = [y.reshape(len(y), -1) for y in outputs]
        header = ",".join(f"{n}_{j}" if f.shape[1] > 1 else n
                          for n, f in zip(names, flat, strict=True) for j in range(f.shape[1]))
        np.savetxt(buf, np.concatenate(flat, axis=1), delimiter=",", header=header, comments="",
                   fmt="%.9g")
    else:
        raise DslError(f"{path}: cannot save outputs as `{suffix or path.name}`",
                       hint="use a .npy, .npz or .csv file")
    check_output_path(path, "outputs", force, "--output")  # again: it may have appeared
    atomic_write_bytes(path, buf.getvalue())
    first = np.asarray(outputs[0])
    return len(first) if first.ndim else 1


def run_bench(args, path: Path, session, feed: dict[str, np.ndarray], meta: dict,
              preprocessing: dict | None, embedded: bool) -> None:
    """onnxruntime's batch-1 latency and throughput at --bench-batch; with --spec and
    --weights, torch eager on the same weights and batches, in the same run (bench.py)."""
    from .bench import measure, ort_call, resize, timing_table

    batch = args.bench_batch
    threads = getattr(args, "threads", 0)
    if threads:
        from .runtime import make_session

        session = make_session(str(path), getattr(args, "device", None) or "cpu",
                               threads=threads)
    one = {k: v[:1] for k, v in feed.items()}
    big = {k: resize(v, batch) for k, v in feed.items()}
    calls_one = {"onnxruntime": ort_call(session, one)}
    calls_big = {"onnxruntime": ort_call(session, big)}
    agree = ""
    if args.spec or args.weights:
        module, prepared = _torch_side(args, path, meta, preprocessing if embedded else None)
        import torch  # _torch_side said so when it is not installed

        if threads:
            torch.set_num_threads(threads)

        from .bench import torch_call

        calls_one["torch eager"] = torch_call(module, [prepared(v) for v in one.values()])
        calls_big["torch eager"] = torch_call(module, [prepared(v) for v in big.values()])
        ours = session.run(None, big)[0]
        with torch.inference_mode():
            y = module(*[torch.from_numpy(prepared(v)) for v in big.values()])
        theirs = (y[0] if isinstance(y, tuple | list) else y).numpy()
        diff = float(np.abs(ours - theirs).max())
        agree = f"; their outputs agree to {diff:.1e}"
        if diff > 1e-4:
            print(f"warning: onnxruntime and torch eager differ by {diff:.2g} on the bench "
                  f"batch: is {args.weights} what {path.name} was exported with?",
                  file=sys.stderr)
    timings = measure(calls_one, calls_big, batch)
    used = f"onnxruntime {ort_threads(session)}"
    if "torch eager" in timings:
        import torch

        used += f", torch {torch.get_num_threads()} intra-op thread(s)"
    print(f"bench: {path.name}, calls taking turns ({used})")
    for line in timing_table(timings):
        print(f"  {line}")
    if "torch eager" in timings:
        o, t = timings["onnxruntime"], timings["torch eager"]
        print(f"onnxruntime / torch eager: {t.p50 / o.p50:.2f}x at batch 1 (p50), "
              f"{o.throughput / t.throughput:.2f}x at batch {batch}{agree}")
    else:
        print("(pass --spec and --weights to time torch eager on the same batches too)")


def ort_threads(session) -> str:
    n = session.get_session_options().intra_op_num_threads
    return "default intra-op threads" if n == 0 else f"{n} intra-op thread(s)"


def _torch_side(args, path: Path, meta: dict, record: dict | None):
    """The generated torch module with --weights, and how a raw batch becomes its input
    (the preprocessing the .onnx file applies itself, when it does)."""
    from dslc.backends import get_backend
    from dslc.compiler import compile_file
    from dslc.weights import load_weights

    from .metadata import META_HASH, META_MODEL

    if not (args.spec and args.weights):
        raise DslError("--bench compares with torch eager when given both --spec and --weights",
                       hint="give the spec and the weights the model was exported from")
    get_backend("torch").require()
    spec = compile_file(args.spec)
    graph = spec.model(meta.get(META_MODEL) or getattr(args, "model", None))
    if meta.get(META_HASH) and meta[META_HASH] != spec.digest:
        print(f"warning: {args.spec} is not the spec {path.name} was exported from (another "
              "hash); timing it anyway", file=sys.stderr)
    weights = load_weights(Path(args.weights), graph)
    from dslc.backends.torch.runtime import instantiate

    module = instantiate(graph, weights).eval()

    def prepared(x: np.ndarray) -> np.ndarray:
        if not record:
            return x
        from dslc.data.preprocess import apply_preprocessing

        return apply_preprocessing(x, record)
    return module, prepared
