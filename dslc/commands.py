"""The commands beyond `check`. Each imports its backend only when it runs."""

from __future__ import annotations

from dslc.backends import backend_names


def seed(text: str) -> int:
    """argparse type: the seeds every framework takes (numpy's and Keras's limits)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..4294967295")
    return value


def batch_size(text: str) -> int | str:
    """argparse type: a whole number, or `full` (the whole training split, as `batch = full`)."""
    if text in ("full", "all"):
        return "full"
    try:
        return int(text)
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(f"not a whole number or `full`: {text!r}") from None


def memory_size(text: str) -> str:
    """argparse type: a size such as 512M or 8G (dslc/data/lazy.py)."""
    import argparse

    from dslc.data.lazy import parse_size

    try:
        parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


MAX_MEMORY_HELP = ("features of .npy/.npz data larger than this (as float32) stay on disk, "
                   "memory-mapped and read a batch at a time, e.g. 512M, 8G (default: "
                   "$DSLC_MAX_MEMORY, else half the machine's memory)")


def use_max_memory(args) -> None:
    """--max-memory reaches the data loaders as DSLC_MAX_MEMORY (they run in any command)."""
    import os

    from dslc.data.lazy import ENV

    if getattr(args, "max_memory", None):
        os.environ[ENV] = args.max_memory


def register(sub, commands: dict) -> None:
    # Each flag offers the backends that can do what it asks (see dslc/backends/base.py).
    targets, trainers, runners = (backend_names(emits=True), backend_names(trains=True),
                                  backend_names(runs=True))
    p = sub.add_parser(
        "compile", help="write standalone source (torch, keras) or a .onnx file",
        description="Write the model as standalone source: OUT/<model>.py for torch and keras "
                    "(OUT/<model>_model.py when <model> is the name of an importable module, "
                    "such as torch, keras, numpy or json, so that the file cannot shadow it), "
                    "or a .onnx file OUT with initial weights for onnx.")
    p.add_argument("spec", help="the .dl file")
    p.add_argument("--target", required=True, choices=targets, help="the backend to write for")
    p.add_argument("-o", "--out", required=True, help="output folder (torch, keras) or .onnx file")
    p.add_argument("--model", help="which model of the spec (default: the only or trained one)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the initial weights (onnx)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing .onnx file, or a <model>.py dslc did not write")
    commands["compile"] = cmd_compile

    p = sub.add_parser(
        "train", help="train per the spec's train block",
        description="Train the model per the spec's `train` block. The run's folder gets "
                    "weights.safetensors, checkpoint.safetensors (each epoch), history.csv, "
                    "metrics.json, curves.png and a copy of the spec and the files it uses.")
    p.add_argument("spec", help="the .dl file")
    p.add_argument("--backend", default="torch", choices=trainers,
                   help="the framework that trains (default torch)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="where to train; auto: a CUDA GPU if there is one (default cpu)")
    p.add_argument("--epochs", type=int, help="epochs in all, counting resumed ones "
                                              "(default: the spec's)")
    p.add_argument("--batch", type=batch_size, help="samples a step, or `full` "
                                                    "(default: the spec's)")
    p.add_argument("--seed", type=seed, help="seed of the split, shuffles and initial weights "
                                             "(default: the spec's)")
    p.add_argument("--out", default=None, help="output folder (default runs/<model>)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--force", action="store_true", help="replace a finished run in --out")
    p.add_argument("--model", help="which model of the spec (default: the only or trained one)")
    p.add_argument("--diagnose", action="store_true",
                   help="each epoch, per layer: weight and gradient norms, dead ReLU units; on "
                        "a NaN, the first layer whose output is not finite (diagnostics.csv, "
                        "diagnostics.json)")
    p.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard event files (scalars, weight histograms, the graph) "
                        "to OUT/tensorboard")
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE", help=MAX_MEMORY_HELP)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="mixed precision: float32 weights, bf16/fp16 arithmetic (torch "
                        "autocast, fp16 with a gradient scaler; Keras's mixed policies); "
                        "default fp32")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (torch; compiles once, so it pays "
                        "off on long runs; the short last batch runs eagerly)")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train on N local processes: torch DistributedDataParallel "
                        "(torchrun; gloo on CPU, nccl on CUDA), keras "
                        "MultiWorkerMirroredStrategy (a TF_CONFIG each); the spec's batch is "
                        "the global batch")
    p.add_argument("--devices", type=int, default=1, metavar="N",
                   help="keras: a tf.distribute MirroredStrategy over N local devices (GPUs, "
                        "or N logical CPU devices without them); the batch is split among them")
    p.add_argument("--distributed", action="store_true",
                   help="this process is one of a torchrun group (`torchrun ... -m dslc "
                        "train SPEC --distributed`), or with keras one worker of the TF_CONFIG "
                        "cluster; several nodes: docs/scale.md")
    commands["train"] = cmd_train

    p = sub.add_parser("eval", help="loss and metrics on the test split")
    p.add_argument("spec", help="the .dl file the weights were trained from")
    p.add_argument("--weights", required=True, help="a weights.safetensors file")
    p.add_argument("--backend", default="torch", choices=runners,
                   help="the framework that runs the model (default torch)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="where to run; auto: a CUDA GPU if there is one (default cpu)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--model", help="which model of the spec (default: the only or trained one)")
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE", help=MAX_MEMORY_HELP)
    commands["eval"] = cmd_eval

    p = sub.add_parser("export", help="ONNX with trained weights")
    p.add_argument("spec", help="the .dl spec the weights were trained from")
    p.add_argument("--weights", required=True, help="trained weights (.safetensors)")
    p.add_argument("-o", "--out", required=True, help="the .onnx file to write")
    p.add_argument("--model", help="which model of the spec (default: the only or trained one)")
    p.add_argument("--force", action="store_true",
                   help="replace the .onnx file if it exists; with --quantize or --precision, "
                        "also write a model that loses more than --max-loss")
    p.add_argument("--no-preprocessing", action="store_true",
                   help="leave the spec's preprocessing (scale, standardize) out of the graph: "
                        "the file then takes preprocessed inputs (`dslc run` applies it from "
                        "the metadata); by default the graph applies it and takes raw data")
    p.add_argument("--quantize", choices=("int8",),
                   help="static int8 quantization (QDQ, onnxruntime), calibrated on the "
                        "training split; prints accuracy, size and speed against fp32")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="number format of the weights and activations (fp16: float32 inputs "
                        "and outputs; compared with fp32 as for --quantize)")
    p.add_argument("--calibrate", type=int, default=256, metavar="N",
                   help="training samples that calibrate --quantize int8 (default 256)")
    p.add_argument("--max-loss", type=float, default=0.5, metavar="POINTS",
                   help="largest test accuracy drop against fp32 allowed for --quantize or "
                        "--precision, in percentage points (regression: increase of the test "
                        "loss, in percent); default 0.5")
    commands["export"] = cmd_export

    p = sub.add_parser("run", help="run a .onnx model with onnxruntime")
    p.add_argument("model", help="the .onnx file (e.g. from `dslc export`)")
    p.add_argument("--input", required=True, help=".npy, .npz, .csv or an image")
    p.add_argument("--output", help="save outputs (.npy, .npz or .csv)")
    p.add_argument("--force", action="store_true", help="replace the --output file if it exists")
    p.add_argument("--allow-nan", action="store_true",
                   help="run inputs holding NaN or infinity (a warning, not an error)")
    p.add_argument("--bench", action="store_true",
                   help="print onnxruntime's batch-1 latency and throughput at --bench-batch; "
                        "with --spec and --weights, against torch eager (the generated module, "
                        "same weights) in the same run")
    p.add_argument("--bench-batch", type=int, default=64, metavar="N",
                   help="the batch --bench measures throughput at (default 64)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="with --bench: intra-op threads of onnxruntime and torch alike "
                        "(default: each framework's own choice)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="onnxruntime's CUDA provider for cuda/auto when installed "
                        "(onnxruntime-gpu), else the CPU with a note saying so (default cpu)")
    p.add_argument("--spec", help="with --bench: the .dl spec the model was exported from")
    p.add_argument("--weights", help="with --bench: the weights it was exported with")
    commands["run"] = cmd_run

    p = sub.add_parser("verify", help="same weights, same batch: every backend against the "
                                      "reference interpreter and each other")
    p.add_argument("spec", help="the .dl file")
    p.add_argument("--weights", help="a weights.safetensors file (default: seeded initial "
                                     "weights)")
    p.add_argument("--atol", "--tol", dest="atol", type=float, default=None,
                   help="absolute tolerance (as numpy.allclose; default 1e-5 at fp32, 5e-3 at "
                        "fp16, 4e-2 at bf16)")
    p.add_argument("--rtol", type=float, default=None,
                   help="relative tolerance, times |reference| (as numpy.allclose; default "
                        "1e-6 at fp32, 5e-3 at fp16, 4e-2 at bf16)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="run the frameworks in mixed precision (torch autocast, Keras mixed "
                        "policies; onnx runs fp32 only and is skipped); default fp32")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="where the frameworks run (the reference runs on the CPU); "
                        "default cpu")
    p.add_argument("--seed", type=seed, default=0, help="seed of the batch and initial weights")
    p.add_argument("--batch", type=int, default=8, help="samples in the random batch")
    p.add_argument("--model", help="which model of the spec (default: the only or trained one)")
    commands["verify"] = cmd_verify

    p = sub.add_parser(
        "lsp", help="a Language Server for editors, over stdin/stdout",
        description="Serve the Language Server Protocol over stdin/stdout: the diagnostics of "
                    "`dslc check` as you type, hover (output shapes, parameters, op docs), "
                    "completion, go to definition and formatting. Editors start it; see "
                    "editors/vscode. Needs pygls (pip install 'dslc[lsp]').")
    p.add_argument("--stdio", action="store_true",
                   help="accepted for clients that pass it; stdio is the only transport")
    commands["lsp"] = cmd_lsp

    p = sub.add_parser(
        "graph", help="draw the model: an SVG picture or an HTML page with pan, zoom and details",
        description="Draw the checked model top-down: each layer with its op, output shape and "
                    "parameters, the data flow between them, block instances as labelled groups. "
                    "Runs of repeated layers or blocks are folded into one box or group `× N` "
                    "(--expand draws them all). The .html form adds pan, zoom and a panel "
                    "with a layer's attributes and spec line.")
    p.add_argument("spec", help="the .dl file")
    p.add_argument("-o", "--out", help="the .svg or .html file to write (default: <model>.svg "
                                       "in the current folder)")
    p.add_argument("--model", help="which model of the spec (default: the only or trained one)")
    p.add_argument("--expand", action="store_true",
                   help="draw every layer, without folding repeated runs")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    commands["graph"] = cmd_graph

    p = sub.add_parser(
        "import", help="an ONNX model as a .dl spec and its weights",
        description="Write an ONNX model (e.g. from torch.onnx.export or `dslc export`) as a .dl "
                    "spec and its weights in the canonical layout. An NCHW image input becomes "
                    "the spec's channels-last (NHWC) input with the same values; the converted "
                    "weights give the same outputs.")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("-o", "--out", required=True, help="the .dl spec to write")
    p.add_argument("--weights", help="the .safetensors file to write (default: the spec's name "
                                     "with .safetensors)")
    p.add_argument("--force", action="store_true", help="replace the spec or weights if they "
                                                        "exist")
    commands["import"] = cmd_import_onnx

    p = sub.add_parser(
        "fmt", help="rewrite .dl files in the canonical layout, keeping every comment",
        description="Rewrite .dl files in the one layout dslc uses: 4-space indents, one "
                    "statement a line, aligned `train` settings, calls wider than 100 columns "
                    "wrapped one argument a line; every comment is kept where it was. Files "
                    "are replaced atomically; one that does not parse is reported and left "
                    "as it is.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="a .dl file, a folder (its .dl files), or - (standard input to "
                        "standard output)")
    p.add_argument("--check", action="store_true",
                   help="change nothing: print a diff of each file that would change, and "
                        "exit 1 if any would")
    commands["fmt"] = cmd_fmt

    p = sub.add_parser(
        "tune", help="search the spec's choice(...)/range(...) values with Optuna",
        description="Search the values a spec leaves open (`let width = choice(32, 64)`, "
                    "`adam(lr=range(1e-4, 1e-2, log=true))`): each trial trains the spec with "
                    "its values filled in and is judged on the validation split; trials that "
                    "fall behind are pruned. Trial 0 trains the spec's defaults. OUT gets the "
                    "study (study.db: the same command continues it), trials.csv, a folder per "
                    "trial and best.dl, the best trial's spec as a plain spec. Needs optuna "
                    "(pip install 'dslc[tune]').")
    p.add_argument("spec", help="the .dl file with a search space")
    p.add_argument("--trials", type=int, required=True,
                   help="finished trials in all, counting the study's earlier ones")
    p.add_argument("--backend", default="torch", choices=trainers,
                   help="the framework that trains (default torch)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="where to train (default cpu)")
    p.add_argument("--epochs", type=int, help="epochs of each trial (default: the spec's)")
    p.add_argument("--metric", help="the validation figure to optimise, e.g. val_loss "
                                    "(default val_accuracy when the spec has accuracy, else "
                                    "val_loss)")
    p.add_argument("--seed", type=seed, help="seed of the split, the trials' training and the "
                                             "sampler (default: the spec's)")
    p.add_argument("--out", default=None, help="the study's folder (default runs/<model>-tune)")
    p.add_argument("--no-prune", action="store_true", help="train every trial to the end")
    p.add_argument("--force", action="store_true", help="start the study in --out afresh")
    p.add_argument("--model", help="which model of the spec (default: the only or trained one)")
    commands["tune"] = cmd_tune


def _spec_and_graph(args):
    from dslc.compiler import compile_file

    spec = compile_file(args.spec)
    return spec, spec.model(getattr(args, "model", None))


def cmd_compile(args) -> int:
    from dslc.codegen import write_compiled

    spec, graph = _spec_and_graph(args)
    path = write_compiled(spec, graph, args.target, args.out, seed=args.seed, force=args.force)
    print(f"wrote {path}")
    return 0


def cmd_train(args) -> int:
    from dslc.train.run import train_command

    use_max_memory(args)
    return train_command(args)


def cmd_eval(args) -> int:
    from dslc.train.run import eval_command

    use_max_memory(args)
    return eval_command(args)


def cmd_export(args) -> int:
    from dslc.backends.onnx.cli import export_command

    return export_command(args)


def cmd_run(args) -> int:
    from dslc.backends.onnx.cli import run_command

    return run_command(args)


def cmd_verify(args) -> int:
    from dslc.verify import verify_command

    return verify_command(args)


def cmd_lsp(args) -> int:
    from dslc.diagnostics import DslError

    try:
        from dslc.lsp.server import serve
    except ImportError as exc:
        if exc.name not in ("pygls", "lsprotocol") and not str(exc.name).startswith("pygls."):
            raise
        raise DslError("`dslc lsp` needs pygls, which is not installed",
                       hint="pip install 'dslc[lsp]'") from None
    serve()
    return 0


def cmd_graph(args) -> int:
    from dslc.diagram import graph_command

    return graph_command(args)


def cmd_import_onnx(args) -> int:  # `import` is a Python keyword
    from dslc.backends.onnx.importer import import_command

    return import_command(args)


def cmd_fmt(args) -> int:
    from dslc.fmt import fmt_command

    return fmt_command(args)


def cmd_tune(args) -> int:
    from dslc.tune.study import tune_command

    return tune_command(args)
