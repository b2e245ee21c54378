"""dslc compiles `.dl` specs of neural networks to PyTorch, Keras 3 and ONNX, trains them, and
checks that every backend gives the same numbers.

The command line is thin: each command parses its flags, calls the library and renders errors.
Backends are imported inside the commands that need them, so `dslc check` stays fast.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import warnings
from typing import NoReturn

from dslc import __version__
from dslc.diagnostics import DslError, render_all

USER_ERROR = 2
INTERNAL_ERROR = 1


def _summary(spec) -> dict:
    models = []
    for g in spec.models.values():
        layers = [{"name": i.name, "op": "input", "shape": list(i.type.shape), "params": 0,
                   "blocks": []} for i in g.inputs]
        # `blocks`: the block calls that made the layer, outermost first ([] for a layer the
        # model writes itself).
        layers += [{"name": n.name, "op": n.op, "shape": list(n.type.shape), "params": n.param_count,
                    "blocks": [{"instance": b.instance, "block": b.block} for b in n.blocks]}
                   for n in g.nodes]
        models.append({"name": g.name, "params": g.param_count,
                       "trainable_params": g.trainable_param_count, "layers": layers})
    if spec.space:  # `choice`/`range`: checked at their defaults; `dslc tune` searches them
        from dslc.tune.space import describe_space

        return {"models": models, "space": describe_space(spec.space)}
    return {"models": models}


def cmd_check(args) -> int:
    # A check is short, and the cycle collector's passes over the objects that pydantic's and
    # Lark's start-up make cost it ~6 ms while freeing nothing (peak memory is the same without
    # them, for the largest specs the caps allow too): off while it runs (docs/benchmarks.md).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _check(args)
    finally:
        if collecting:
            gc.enable()


def _check(args) -> int:
    from dslc.compiler import compile_file

    spec = compile_file(args.spec)
    summary = _summary(spec)
    if args.json:
        import json  # not on the plain `check` path: 1 ms of its start

        print(json.dumps(summary, indent=2))
        return 0
    for m in summary["models"]:
        rows: list[tuple[str, ...]] = [("layer", "op", "output shape", "params")]
        for layer in m["layers"]:
            shape = "[" + ", ".join("?" if d is None else str(d) for d in layer["shape"]) + "]"
            rows.append((layer["name"], layer["op"], shape, f"{layer['params']:,}"))
        print(f"model {m['name']}")
        print(_table(rows))
        print(f"total params: {m['params']:,}   trainable: {m['trainable_params']:,}\n")
    if "space" in summary:
        rows = [("search space", "values", "default")]
        rows += [(p["name"], p["space"], p["default"]) for p in summary["space"]]
        print(_table(rows))
        print("(checked at the defaults; `dslc tune` searches the space)\n")
    return 0


def _table(rows: list[tuple[str, ...]]) -> str:
    # A plain table: rich costs 20 ms of import, and `check` must start fast.
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1].rjust(widths[-1])]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


COMMANDS = {"check": cmd_check}


DESCRIPTION = """\
Compile `.dl` specs of neural networks to PyTorch, Keras 3 and ONNX; train them, evaluate them,
run them, and check that every backend gives the same numbers."""

EXAMPLES = """\
examples:
  check a spec: its layers, output shapes and parameters
    dslc check specs/digits_cnn.dl
  train it (per its `train` block), continue after Ctrl-C, evaluate it on the test split
    dslc train specs/digits_cnn.dl --out runs/digits_cnn
    dslc train specs/digits_cnn.dl --out runs/digits_cnn --resume
    dslc eval specs/digits_cnn.dl --weights runs/digits_cnn/weights.safetensors
  export the trained model to ONNX and run it on an image
    dslc export specs/digits_cnn.dl --weights runs/digits_cnn/weights.safetensors -o digits.onnx
    dslc run digits.onnx --input examples/digit.png
  write standalone PyTorch source; check every backend against the reference interpreter
    dslc compile specs/digits_cnn.dl --target torch -o build/
    dslc verify specs/digits_cnn.dl
  draw the model; lay out spec files; serve editors (diagnostics, hover, completion)
    dslc graph examples/tiny_resnet.dl -o tiny_resnet.html
    dslc fmt --check specs/
    dslc lsp
  bring a model from torch.onnx.export (or any dslc export) back as a spec and weights
    dslc import model.onnx -o model.dl

`dslc COMMAND --help` lists a command's flags. Exit status: 0 done, 2 an error in the input
(spec, data, flags, files), 1 a bug in dslc, 130 interrupted."""


def build_parser(check_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line; with `check_only`, `dslc check` alone (the other commands'
    flags import every backend package: 4 ms `dslc check` need not spend)."""
    parser = argparse.ArgumentParser(prog="dslc", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dslc {__version__}",
                        help="print dslc's version and exit")
    parser.add_argument("--verbose", action="store_true",
                        help="show framework log output, warnings as Python prints them, and "
                             "the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")
    p = sub.add_parser("check", help="parse, validate, infer shapes; print a summary",
                       description="Parse SPEC, check it and infer every shape; print a table "
                                   "of each model's layers and parameters.")
    p.add_argument("spec", help="the .dl file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    if not check_only:
        _register_backend_commands(sub)
    return parser


def _register_backend_commands(sub) -> None:
    """Each backend-facing command adds its own flags (dslc/commands.py)."""
    try:
        from dslc import commands
    except ImportError:  # pragma: no cover - during bootstrap
        return
    commands.register(sub, COMMANDS)


PLUGINS_OFF = ("__all__", "1", "true")  # pydantic's values of PYDANTIC_DISABLE_PLUGINS


def skip_pydantic_plugins() -> None:
    """dslc's models are its own; no pydantic plugin observes them. So the command line turns
    plugins off with pydantic's documented switch (unless the user set it), which spares every
    command the scan of all installed packages' entry points and the imports of any installed
    plugin (logfire's cost 100 ms), and then answers pydantic's plugin lookup itself, which
    spares importing importlib.metadata: together about 28 ms of each `dslc check`
    (docs/benchmarks.md). Names other than `get_plugins` go to the real module."""
    if os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__") not in PLUGINS_OFF:
        return
    name = "pydantic.plugin._loader"
    if name in sys.modules:
        return
    import types

    def real(attr: str):
        if attr.startswith("__"):  # the import system asks for __path__ and friends
            raise AttributeError(attr)
        import importlib

        del sys.modules[name]
        return getattr(importlib.import_module(name), attr)

    stub = types.ModuleType(name)
    stub.get_plugins = lambda: ()  # type: ignore[attr-defined]
    stub.__getattr__ = real  # type: ignore[method-assign]
    sys.modules[name] = stub


def entry() -> NoReturn:
    """The `dslc` command and `python -m dslc`: the command line, then exit with its status."""
    status = main()
    if sys.argv[1:2] == ["check"]:
        # The process ends here: the collection Python makes on the way out would walk every
        # object the check made (~6 ms of it) to free memory the system takes back anyway.
        # Only for `check`: other commands may hold files or workers that cleanup must close.
        gc.disable()
    sys.exit(status)


def main(argv: list[str] | None = None) -> int:
    skip_pydantic_plugins()
    given = sys.argv[1:] if argv is None else argv
    parser = build_parser(check_only=given[:1] == ["check"])
    args = parser.parse_args(given)
    args.argv = list(given)  # `dslc train --nproc N` starts N copies of this command
    if args.verbose:  # backends read it before importing their framework (keras/quiet.py)
        os.environ["DSLC_VERBOSE"] = "1"
    try:
        with warnings.catch_warnings():
            if not args.verbose:
                warnings.showwarning = Notes().show
            return COMMANDS[args.command](args)
    except DslError as err:
        print(render_all(err, getattr(err, "sources", None)), file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt as exc:  # the command may say what was kept, and how to go on
        print("\n".join(["interrupted", *map(str, exc.args)]), file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError:
        print("error: out of memory: the model or the batch is too large for this machine",
              file=sys.stderr)
        return USER_ERROR
    except OSError as exc:
        if exc.filename is None:  # no path of the user's involved: treat it as a bug
            return _internal_error(exc, args.verbose)
        # The file system said no (unwritable folder, full disk): the user's to fix, not a bug.
        print(f"error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return USER_ERROR
    except Exception as exc:  # a bug in dslc, not the user's mistake
        return _internal_error(exc, args.verbose)


class Notes:
    """Warnings from libraries (PIL's DecompressionBombWarning, numpy's overflow, ...) as one
    `note:` line each, once per message, instead of Python's two lines naming a library file.
    Only how they are shown changes: filters (and `-W error`) apply as before."""

    def __init__(self, stream=None):
        self.stream = stream
        self.seen: set[tuple[type, str]] = set()

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        if len(text) > 300:
            text = text[:299] + "…"
        if (category, text) in self.seen:
            return
        self.seen.add((category, text))
        print(f"note: {text} ({category.__name__})", file=self.stream or sys.stderr)


def _internal_error(exc: Exception, verbose: bool) -> int:
    if verbose:
        import traceback

        traceback.print_exception(exc)
    print(f"dslc: internal error: {type(exc).__name__}: {exc}\n"
          "this is a bug in dslc; rerun with --verbose for the traceback", file=sys.stderr)
    return INTERNAL_ERROR
