"""`dslc train` and `dslc eval`: compile the spec, load its data, run the chosen backend
through the shared loop, write the run's folder / print the test split's figures."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import numpy as np

from dslc.backends import get_backend
from dslc.compiler import compile_file
from dslc.diagnostics import DslError
from dslc.train import outputs
from dslc.train.loop import Diverged, Interrupted, epoch_metrics, fit
from dslc.train.metrics import (
    compute_metrics,
    confusion_matrix,
    numpy_loss,
    output_classes,
    predicted_labels,
    true_labels,
)
from dslc.train.progress import Progress, Silent
from dslc.tune.space import refuse as refuse_space
from dslc.weights import load_weights, read_weights, save_weights

CE = {"binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"}
CLASS_METRICS = ["accuracy", "precision", "recall", "f1"]


def _load(args):
    spec = compile_file(args.spec)
    refuse_space(spec, getattr(args, "command", None) or "train")  # choice()/range(): dslc tune
    graph = spec.model(getattr(args, "model", None))
    return spec, graph, spec.train_config(graph.name)


def run_digest(graph, cfg) -> str:
    """What a resumed run must share with its start: the model and every training setting but
    `epochs` (extending a run is what --resume is for). Spans are left out, so edits to
    comments and layout do not count."""
    import hashlib

    steps = {"__all__": {"span"}}
    text = graph.model_dump_json(exclude={"span": True, "inputs": steps, "nodes": steps})
    # Settings left unset drop out, so runs started before they existed still resume.
    later = {k: True if getattr(cfg, k) is None else {"span"}
             for k in ("schedule", "early_stopping")}
    text += cfg.model_dump_json(exclude={"span": True, "epochs": True, "data": {"span"},
                                         "loss": {"span"}, "optimizer": {"span"},
                                         "preprocess": steps, "augment": steps, **later})
    return hashlib.sha256(text.encode()).hexdigest()


def _dataset(spec, graph, cfg, seed: int):
    from dslc.data.loaders import load_dataset

    data = load_dataset(cfg, tuple(graph.inputs[0].type.shape), spec.path.parent, seed,
                        graph.inputs[0].type.dtype)
    if len(data.x_test) == 0:
        raise DslError(f"the test split is empty ({len(data.x_train)} training samples)",
                       cfg.data.span, "dslc reports its figures on the test split: give `test` "
                       "a fraction such as 0.2, and enough samples")
    _check_label_range(data, graph, cfg)
    _check_id_range(data, graph, cfg)
    return data


def _check_label_range(data, graph, cfg) -> None:
    """Class indices beyond the model's outputs would fail deep inside a framework."""
    classes = graph.type_of(graph.outputs[0]).shape[-1]
    if cfg.loss.name != "sparse_categorical_crossentropy" or classes is None:
        return
    top = max(int(y.max()) for y in (data.y_train, data.y_val, data.y_test)
              if y is not None and len(y))
    if top >= classes:
        raise DslError(f"the labels go up to class {top}, but the model's output has "
                       f"{classes} classes (0..{classes - 1})", cfg.data.span,
                       f"end the model with `dense({top + 1}, activation=softmax)`, or fix the "
                       "labels")


def _check_id_range(data, graph, cfg) -> None:
    """Ids outside an embedding's table: torch fails deep inside, and Keras and ONNX's Gather
    count a negative id from the end of the table, a wrong number with no error."""
    from dslc.ops.registry import id_bound

    port = graph.inputs[0]
    if port.type.is_float or port.type.dtype == "bool":
        return
    splits = [x for x in (data.x_train, data.x_val, data.x_test) if x is not None and x.size]
    if not splits:
        return
    low, high = min(int(x.min()) for x in splits), max(int(x.max()) for x in splits)
    top = id_bound(graph, port.name)
    if low < 0 or (top is not None and high >= top[0]):
        bound = f"0..{top[0] - 1} (`{top[1]}` has vocab {top[0]})" if top else "0 or more"
        raise DslError(f"the input `{port.name}` holds ids {low}..{high}, but ids must be "
                       f"{bound}", cfg.data.span,
                       "fix the data, or give the embedding a larger vocab" if top else None)


def train_command(args) -> int:
    from dslc.train import distributed

    if getattr(args, "nproc", None) and not distributed.in_torchrun():
        # Check the spec and the backend here, once, before starting processes that would
        # each report the same error.
        from dslc.backends.base import TrainOptions

        _load(args)
        get_backend(args.backend).check_options(TrainOptions(
            precision=getattr(args, "precision", None) or "fp32", distributed=True,
            compile=bool(getattr(args, "compile", False))))
        argv = getattr(args, "argv", None) or _argv(args)
        if args.backend == "keras":  # MultiWorkerMirroredStrategy, one TF_CONFIG a worker
            from dslc.backends.keras import multiworker

            return multiworker.launch(argv, args.nproc)
        return distributed.launch(argv, args.nproc)
    group = _join(args) if distributed.wanted(args) else None
    torch_group = group is not None and group.framework == "torch"
    try:
        status = _train(args, group)
    except BaseException:
        if torch_group:
            distributed.shutdown()
        raise
    if torch_group:
        # Leave together: rank 0 may still be writing files while the others would tear their
        # side down, and a gloo peer torn down mid-way can abort ("terminate called without an
        # active exception", seen once in CI on --resume).
        distributed.barrier()
        distributed.shutdown()
    return status


def _join(args):
    """This process's place in a torchrun group, or in a keras TF_CONFIG cluster."""
    if args.backend == "keras":
        from dslc.backends.keras import multiworker

        return multiworker.setup(args.device)
    from dslc.train import distributed

    return distributed.setup(args.device)


def _argv(args) -> list[str]:
    """The train command line of `args` (when the CLI's own argv is not at hand)."""
    argv = ["train", args.spec]
    for flag in ("backend", "device", "epochs", "batch", "seed", "out", "model", "precision",
                 "max_memory", "devices"):
        value = getattr(args, flag, None)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    for flag in ("resume", "force", "diagnose", "tensorboard", "compile"):
        if getattr(args, flag, False):
            argv.append(f"--{flag}")
    return argv


def _train(args, group) -> int:
    from dslc.backends.base import TrainOptions

    writes = group is None or group.writes  # under DDP only rank 0 writes and prints
    device = args.device if group is None else group.device
    options = TrainOptions(precision=getattr(args, "precision", None) or "fp32",
                           compile=bool(getattr(args, "compile", False)),
                           distributed=group is not None,
                           devices=getattr(args, "devices", None) or 1)
    spec, graph, cfg = _load(args)
    out = Path(args.out) if args.out else Path("runs") / graph.name
    seed = cfg.seed if args.seed is None else args.seed
    epochs = cfg.epochs if args.epochs is None else args.epochs
    batch = cfg.batch if args.batch is None else None if args.batch == "full" else args.batch
    if cfg.optimizer.name == "gd" and "batch" not in cfg.model_fields_set and args.batch is None:
        batch = None  # gradient descent is full batch unless the spec says otherwise
    if epochs <= 0 or (batch is not None and batch <= 0):
        raise DslError("--epochs and --batch must be positive")
    outputs.check_writable(out, "--out")
    previous = [n for n in outputs.run_files(spec) if (out / n).exists()]
    if previous and not args.resume and not getattr(args, "force", False):
        raise DslError(f"{out} already holds {', '.join(previous)}, which training would replace",
                       hint="continue a run with --resume, replace it with --force, or choose "
                            "another --out")
    if args.resume and getattr(args, "force", False):
        raise DslError("--resume continues the run in --out and --force replaces it: give one")
    if args.resume:
        _, _, state = outputs.load_checkpoint(out / outputs.CHECKPOINT)
        for flag, given, key in (("--seed", args.seed, "seed"), ("--batch", args.batch, "batch")):
            if given is None or key not in state:
                continue
            given = None if given == "full" else given
            if given != state[key]:
                was = "full" if state[key] is None else state[key]
                raise DslError(f"the run in {out} started with {key} {was}, not {given}",
                               hint=f"resume without {flag}, or start afresh with --force")
        batch = state.get("batch", batch)  # the batch size the run started with
        if state.get("run_digest", run_digest(graph, cfg)) != run_digest(graph, cfg):
            raise DslError(f"the spec changed since the run in {out} started; resuming would mix "
                           "two models' training", hint="start afresh with --force, or restore "
                           f"the spec the run used ({outputs.spec_copy(out, spec)})")
        seed = int(state.get("seed", seed))  # the split and shuffles of the first run
        if state.get("backend") != args.backend:  # before loading a framework for nothing
            raise DslError(f"{out / outputs.CHECKPOINT} was written by backend "
                           f"{state.get('backend')}, not {args.backend}",
                           hint=f"resume with `--backend {state.get('backend')}`")
    backend = get_backend(args.backend)
    backend.check_options(options)
    backend.require()  # a missing framework is found without importing it
    # The data first: its errors come in a moment, importing a framework takes seconds.
    data = _dataset(spec, graph, cfg, seed)
    # (keras: the MultiWorkerMirroredStrategy waits for every worker as the trainer starts)
    if group is not None and group.framework == "torch":
        from dslc.train.distributed import barrier

        barrier()  # every process has checked --out before rank 0 writes to it
    trainer = backend.make_trainer(graph, cfg, device, seed, options)
    on_epoch, diagnoser = (_watchers(args, backend, graph, cfg, data, out, seed, trainer)
                           if writes else (None, None))
    progress = Progress() if writes else Silent()
    n_val = 0 if data.x_val is None else len(data.x_val)
    progress.message(
        f"training {graph.name} ({graph.param_count:,} params) with {args.backend} on "
        f"{trainer.device}: {len(data.x_train)} train, {n_val} validation, {len(data.x_test)} "
        f"test samples; {epochs} epochs, batch {batch or 'full'}"
        + (f", {options.precision}" if options.precision != "fp32" else "")
        + (", torch.compile" if options.compile else "")
        + (f"; {group.world} processes ("
           f"{'DDP' if group.framework == 'torch' else 'MultiWorkerMirroredStrategy'}, "
           f"{batch or 'full'} samples a step in all)" if group is not None else "")
        + (f"; {options.devices} devices (MirroredStrategy)" if options.devices > 1 else ""))
    for line in regularisation_notes(graph, cfg, data):
        progress.message(line)
    from dslc.data.lazy import human, is_lazy, memory_cap

    if is_lazy(data.x_train):
        progress.message(f"features stay on disk (memory-mapped: {human(data.x_train.nbytes)} "
                         f"of training features, over the memory cap of {human(memory_cap())});"
                         " each batch is read as it trains")
    meta = {"model": graph.name, "spec_digest": spec.digest, "run_digest": run_digest(graph, cfg),
            "batch": batch}
    t0 = time.perf_counter()
    try:
        result = fit(trainer, graph, cfg, data, out=out, backend=args.backend, epochs=epochs,
                     batch=batch, seed=seed, resume=args.resume, progress=progress, meta=meta,
                     on_epoch=on_epoch, write=writes)
    except Diverged as err:
        if diagnoser is not None:
            diagnoser.diverged(trainer, err)  # names the first layer whose output is not finite
        if writes:
            _write_after_divergence(out, spec, graph, err, seed, args.backend, data)
        raise
    except Interrupted as stop:
        raise KeyboardInterrupt(_how_to_resume(args, out, stop.epoch, epochs)) from None
    weights = trainer.get_weights()
    test = epoch_metrics(cfg, data.y_test, trainer.predict(data.x_test))
    history = result.history
    if not writes:
        return 0
    written = _write_run(out, spec, graph, weights, history, seed, args.backend, data)
    outputs.write_json(out / "metrics.json", {
        "test": test,
        "final_epoch": history[-1] if history else None,
        "model": graph.name, "backend": args.backend, "device": trainer.device, "seed": seed,
        "epochs": len(history), "batch": batch, "precision": options.precision,
        **({"compile": True} if options.compile else {}),
        **({"processes": group.world} if group is not None else {}),
        **({"devices": options.devices} if options.devices > 1 else {}),
        "samples": {"train": len(data.x_train), "validation": n_val, "test": len(data.x_test)},
        "train_seconds": round(result.seconds, 3),
        "total_seconds": round(time.perf_counter() - t0, 3),
        **({"stopped": result.stopped, "weights_epoch": result.weights_epoch}
           if cfg.early_stopping is not None else {}),
        **({"classes": data.classes} if data.classes else {}),
    })
    figures = "  ".join(f"{k} {v:.4f}" for k, v in test.items())
    print(f"test: {figures}")
    written.append("metrics.json")
    if epochs > result.resumed_from:  # else the checkpoint is the earlier run's
        written.append(outputs.CHECKPOINT)
    written.sort(key=outputs.run_files(spec).index)
    print(f"wrote {out}/: {', '.join(written)}")
    _watchers_summary(args, out, diagnoser)
    return 0


def _how_to_resume(args, out: Path, saved: int, epochs: int) -> str:
    """What Ctrl-C kept, and the command that continues the run from there."""
    if not saved:
        return "no epoch finished, so there is no checkpoint to resume from"
    command = ["dslc", "train", args.spec, "--out", str(out), "--resume"]
    for flag, value, default in (("--backend", args.backend, "torch"),
                                 ("--device", args.device, "cpu"),
                                 ("--epochs", args.epochs, None),
                                 ("--model", getattr(args, "model", None), None)):
        if value != default:
            command += [flag, str(value)]
    return (f"epoch {saved} of {epochs} is saved in {out / outputs.CHECKPOINT}; to continue: "
            f"{shlex.join(command)}")


def _weights_meta(spec, graph, seed: int, backend: str, data, epochs: int) -> dict[str, str]:
    return {"model": graph.name, "spec": spec.path.name, "spec_digest": spec.digest,
            "backend": backend, "seed": str(seed), "epochs": str(epochs),
            "preprocessing": json.dumps(data.preprocessing),
            **({"classes": json.dumps(data.classes)} if data.classes else {})}


def regularisation_notes(graph, cfg, data) -> list[str]:
    """What `dslc train` states about its classes and class weights."""
    from dslc.train.regularisation import class_weights, output_classes

    lines = []
    if data.classes:
        named = ", ".join(f"{i} {name}" for i, name in enumerate(data.classes))
        lines.append(f"classes ({data.classes_from}): {named}")
    if cfg.class_weight is not None:
        out_shape = tuple(graph.type_of(graph.outputs[0]).shape)
        weights = class_weights(cfg, data.y_train, output_classes(cfg.loss, out_shape))
        assert weights is not None
        how = "balanced on the training split" if cfg.class_weight == "balanced" else "given"
        names = data.classes or []
        shown = ", ".join(f"{names[i] if i < len(names) else i} {w:.4g}"
                          for i, w in enumerate(weights))
        lines.append(f"class weights ({how}): {shown}")
    return lines


def class_names(weights_meta: dict, data, weights_path) -> list[str] | None:
    """The class names the weights were trained with; they must be the data's, or an index
    would name another class."""
    recorded = weights_meta.get("classes")
    try:
        trained = json.loads(recorded) if recorded else None
    except json.JSONDecodeError:
        trained = None
    if trained is not None and data.classes is not None and trained != data.classes:
        raise DslError(f"{weights_path} was trained with classes {', '.join(trained)}; the data "
                       f"now has {', '.join(data.classes)}",
                       hint="class indices would name other classes: train again on this data")
    return trained or data.classes


def _write_run(out: Path, spec, graph, weights, history, seed, backend, data) -> list[str]:
    """Write the run's files; their names, relative to `out`."""
    save_weights(out / outputs.WEIGHTS, weights,
                 _weights_meta(spec, graph, seed, backend, data, len(history)))
    outputs.write_history(out / "history.csv", history)
    written = [outputs.WEIGHTS, "history.csv"]
    if history:
        outputs.plot_curves(out / "curves.png", history, f"{graph.name} ({backend})")
        written.append("curves.png")
    return written + [str(p) for p in outputs.copy_spec(out, spec)]


def _write_after_divergence(out, spec, graph, err: Diverged, seed, backend, data) -> None:
    """Keep what was good: the last checkpoint's weights (if an epoch completed) and history."""
    if not err.history:
        return
    weights, _, _ = outputs.load_checkpoint(out / outputs.CHECKPOINT)
    _write_run(out, spec, graph, weights, err.history, seed, backend, data)


# eval ------------------------------------------------------------------------------------

def evaluate(spec, graph, cfg, weights_path: str, backend_name: str, device: str) -> dict:
    weights = load_weights(weights_path, graph)
    _, meta = read_weights(weights_path)
    seed = int(meta["seed"]) if str(meta.get("seed", "")).lstrip("-").isdigit() else cfg.seed
    data = _dataset(spec, graph, cfg, seed)
    runtime = get_backend(backend_name).build(graph, weights, device=device)
    pred = predict_split(runtime.predict, data.x_test)
    classify = cfg.loss.name in CE
    names = list(dict.fromkeys(cfg.metrics + (CLASS_METRICS if classify else ["mse", "mae"])))
    report = {
        "model": graph.name, "backend": backend_name, "weights": str(weights_path),
        "samples": len(data.x_test),
        "loss": numpy_loss(cfg.loss, data.y_test, pred),
        "metrics": compute_metrics(names, data.y_test, pred, cfg.loss),
    }
    if classify:
        t = true_labels(data.y_test, pred, cfg.loss)
        p = predicted_labels(pred, cfg.loss)
        report["confusion_matrix"] = confusion_matrix(t, p, output_classes(pred, cfg.loss)).tolist()
        classes = class_names(meta, data, weights_path)
        if classes:
            report["classes"] = classes
    return report


def predict_split(predict, x) -> np.ndarray:
    """`predict(x)`; for data on disk, block by block (each well under the memory cap)."""
    from dslc.data.lazy import is_lazy, memory_cap

    if not is_lazy(x):
        return np.asarray(predict(x))
    rows = max(1, memory_cap() // 8 // max(1, x.nbytes // max(1, len(x))))
    return np.concatenate([np.asarray(predict(x[i:i + rows])) for i in range(0, len(x), rows)])


def eval_command(args) -> int:
    spec, graph, cfg = _load(args)
    report = evaluate(spec, graph, cfg, args.weights, args.backend, args.device)
    if args.json:
        print(outputs.json_text(report), end="")
        return 0
    print(f"{graph.name} on the test split ({report['samples']} samples, {args.backend}):")
    print(f"  loss       {report['loss']:.4f}")
    for name, value in report["metrics"].items():
        print(f"  {name:<10} {value:.4f}")
    cm = report.get("confusion_matrix")
    if cm:
        width = max(len(str(v)) for row in cm for v in row) + 1
        width = max(width, len(str(len(cm))) + 1)
        print("confusion matrix (rows: true class, columns: predicted):")
        if report.get("classes"):
            _print_named_matrix(cm, report["classes"])
            return 0
        print("     " + "".join(f"{j:>{width}}" for j in range(len(cm))))
        for i, row in enumerate(cm):
            print(f"  {i:>2} " + "".join(f"{v:>{width}}" for v in row))
    return 0


def _print_named_matrix(cm: list[list[int]], classes: list[str]) -> None:
    """The confusion matrix with class names on its rows and columns (an index where the
    outputs outnumber the names)."""
    names = [classes[i] if i < len(classes) else str(i) for i in range(len(cm))]
    first = max(len(n) for n in names) + 2
    widths = [max(len(n), *(len(str(row[j])) for row in cm)) + 1 for j, n in enumerate(names)]
    print(" " * first + "".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True)))
    for name, row in zip(names, cm, strict=True):
        print(f"  {name:<{first - 2}}" + "".join(f"{v:>{w}}" for v, w in
                                                zip(row, widths, strict=True)))


# --diagnose, --tensorboard -------------------------------------------------------------------

def _watchers(args, backend, graph, cfg, data, out: Path, seed: int, trainer):
    """The loop's `on_epoch` hook for --diagnose and --tensorboard (None without them), and
    the diagnoser (None without --diagnose)."""
    hooks, diagnoser = [], None
    if getattr(args, "diagnose", False):
        from dslc.train.diagnose import Diagnoser

        diagnoser = Diagnoser(backend, graph, cfg, data, out, seed, trainer.device, args.resume)
        hooks.append(diagnoser.hook(trainer))
    if getattr(args, "tensorboard", False):
        from dslc.train.tensorboard import TensorBoard

        hooks.append(TensorBoard(out, graph, trainer, resume=args.resume).on_epoch)
    if not hooks:
        return None, diagnoser

    def on_epoch(epoch: int, row: dict) -> None:
        for hook in hooks:
            hook(epoch, row)
    return on_epoch, diagnoser


def _watchers_summary(args, out: Path, diagnoser) -> None:
    if diagnoser is not None:
        print(diagnoser.summary())
    if getattr(args, "tensorboard", False):
        print(f"tensorboard: {out / 'tensorboard'} (view with `tensorboard --logdir "
              f"{shlex.quote(str(out / 'tensorboard'))}`)")
