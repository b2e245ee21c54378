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
    commands["eval"] = cmd_eval

    p = sub.add_parser("export", help="ONNX with trained weights")
    p.add_argument("spec", help="the .dl spec the weights were trained from")
    p.add_argument("--weights", required=True, help="trained weights (.safetensors)")
    p.add_argument("-o", "--out", required=True, help="the .onnx file to write")
    p.add_argument("--model", help="which model of the spec (default: the only or trained one)")
    p.add_argument("--force", action="store_true", help="replace the .onnx file if it exists")
    commands["export"] = cmd_export

    p = sub.add_parser("run", help="run a .onnx model with onnxruntime")
    p.add_argument("model", help="the .onnx file (e.g. from `dslc export`)")
    p.add_argument("--input", required=True, help=".npy, .npz, .csv or an image")
    p.add_argument("--output", help="save outputs (.npy, .npz or .csv)")
    p.add_argument("--force", action="store_true", help="replace the --output file if it exists")
    p.add_argument("--allow-nan", action="store_true",
                   help="run inputs holding NaN or infinity (a warning, not an error)")
    p.add_argument("--bench", action="store_true", help="print latency and throughput")
    commands["run"] = cmd_run

    p = sub.add_parser("verify", help="same weights, same batch: every backend against the "
                                      "reference interpreter and each other")
    p.add_argument("spec", help="the .dl file")
    p.add_argument("--weights", help="a weights.safetensors file (default: seeded initial "
                                     "weights)")
    p.add_argument("--atol", "--tol", dest="atol", type=float, default=1e-5,
                   help="absolute tolerance (as numpy.allclose)")
    p.add_argument("--rtol", type=float, default=1e-6,
                   help="relative tolerance, times |reference| (as numpy.allclose)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the batch and initial weights")
    p.add_argument("--batch", type=int, default=8, help="samples in the random batch")
    p.add_argument("--model", help="which model of the spec (default: the only or trained one)")
    commands["verify"] = cmd_verify

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

    return train_command(args)


def cmd_eval(args) -> int:
    from dslc.train.run import eval_command

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


def cmd_fmt(args) -> int:
    from dslc.fmt import fmt_command

    return fmt_command(args)
