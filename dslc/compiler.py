"""Front end: read a spec (and what it `use`s), build every model's graph, check it."""

from __future__ import annotations

import os
import stat
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dslc import stdlib
from dslc.data.files import file_kind
from dslc.diagnostics import Collector, DslError, Span, did_you_mean, one_of
from dslc.ir import ast
from dslc.ir.graph import Graph
from dslc.ir.train import TrainConfig
from dslc.ops.registry import is_op_name
from dslc.parse import parse
from dslc.passes import masks, shapes
from dslc.passes.build import GraphBuilder
from dslc.passes.train_check import build_train
from dslc.passes.values import evaluate
from dslc.records import record

if TYPE_CHECKING:
    from dslc.tune.space import Param


@record
class Spec:
    path: Path
    sources: dict[str, str]
    models: dict[str, Graph] = field(default_factory=dict)
    trains: dict[str, TrainConfig] = field(default_factory=dict)
    space: list[Param] = field(default_factory=list)  # `choice`/`range` (dslc/tune/space.py)

    @property
    def digest(self) -> str:
        import hashlib  # only runs need it; its OpenSSL load costs `dslc check` 3 ms

        h = hashlib.sha256()
        for name in sorted(self.sources):
            h.update(self.sources[name].encode())
        return h.hexdigest()[:16]

    def model(self, name: str | None = None) -> Graph:
        """The named model, or the spec's only (or trained, or first) one."""
        if name is not None:
            if name not in self.models:
                raise DslError(f"no model `{name}` in {self.path}",
                               hint=did_you_mean(name, self.models))
            return self.models[name]
        if not self.models:
            raise DslError(f"{self.path} defines no model")
        if len(self.trains) == 1:
            return self.models[next(iter(self.trains))]
        return next(iter(self.models.values()))

    def train_config(self, model: str | None = None) -> TrainConfig:
        graph = self.model(model)
        if graph.name not in self.trains:
            raise DslError(f"{self.path} has no `train {graph.name} {{ ... }}` block", graph.span)
        return self.trains[graph.name]


@record
class _Items:
    models: dict[str, ast.Model] = field(default_factory=dict)
    blocks: dict[str, ast.Block] = field(default_factory=dict)
    trains: list[ast.Train] = field(default_factory=list)
    lets: dict[str, Any] = field(default_factory=dict)


# A spec is text a person wrote: far below this. Reading stops here, whatever the file is.
MAX_SPEC_BYTES = 10 * 1024 * 1024


class SourceError(Exception):
    """Why a spec file cannot be read; the caller says where (a `use`, the command line)."""

    def __init__(self, reason: str, hint: str | None = None):
        super().__init__(reason)
        self.reason, self.hint = reason, hint


def read_spec(path: Path) -> str:
    """The text of a spec file: a regular file of at most MAX_SPEC_BYTES of UTF-8 text.
    Never blocks on a FIFO, never reads a device."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise SourceError("no such file") from None
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SourceError(f"is {file_kind(mode)}, not a regular file",
                              "a spec is a regular .dl file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SPEC_BYTES:
        raise SourceError(f"is larger than {MAX_SPEC_BYTES // 2**20} MB, the limit for a spec",
                          "a spec holds models, not data: load data with `data = ...` in `train`")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"is not UTF-8 text (byte {exc.start + 1})",
                          "save the spec as UTF-8") from None


def _is_spec_name(path: Path) -> bool:
    return path.suffix == ".dl"


def _resolve_use(item: ast.Use, path: Path, errors: Collector) -> Path | None:
    """The file a `use` names: a module of the standard library (dslc/stdlib.py), or a path
    relative to the using file."""
    target = stdlib.resolve_use(path, item.path)
    if target is not None:
        return target
    modules = stdlib.modules()
    if f"{item.path}.dl" in modules:
        hint = f'write `use "{item.path}.dl"`'
    else:
        close = did_you_mean(item.path, modules)
        hint = (f"{close} " if close else "") + (
            f"the standard library has {one_of(modules)}; a file of your own in a folder "
            f'`std` next to the spec is `use "./{item.path}"`')
    errors.error(f"no module `{item.path}` in the standard library", item.span, hint)
    return None


def _read_used(item: ast.Use, target: Path, errors: Collector) -> str | None:
    if not _is_spec_name(Path(item.path)):
        # Not read at all: errors about a file that is not a spec would show its lines.
        errors.error(f"`use` takes a .dl spec, and {item.path} is not one", item.span,
                     'name a dslc spec, e.g. `use "layers.dl"`')
        return None
    try:
        text = read_spec(target)
    except SourceError as exc:
        errors.error(f"cannot use {item.path}: it {exc.reason}", item.span, exc.hint)
        return None
    if "\0" in text:
        errors.error(f"{item.path} is not a dslc spec (binary data)", item.span)
        return None
    return text


def _parse_used(item: ast.Use, target: Path, text: str) -> ast.Program:
    """A used file's syntax errors point into it only when it is a spec by name, resolved
    too (a `.dl` link to another file is not): other files' lines are not shown."""
    try:
        return parse(text, str(target))
    except DslError:
        if _is_spec_name(target):
            raise
        raise DslError(f"{item.path} is not a dslc spec (it does not parse)", item.span,
                       "`use` takes .dl files holding blocks, models and `let`s") from None


def _check_block(block: ast.Block, errors: Collector) -> None:
    if is_op_name(block.name):
        # A call would silently run the op, not the block.
        errors.error(f"block `{block.name}` has the name of a built-in op", block.span,
                     f"rename the block, e.g. `my_{block.name}`")
    for stmt in block.body:
        if isinstance(stmt, ast.InputDecl) and stmt.dtype is not None:
            errors.error(f"input `{stmt.name}` of block `{block.name}` has a type; a block "
                         "takes the type of what it is called with", stmt.span,
                         f"write `input {stmt.name}`: shapes are checked where the block is used")


def _gather(path: Path, program: ast.Program, items: _Items, sources: dict[str, str],
            stack: list[Path], errors: Collector, main: bool) -> None:
    for item in program.items:
        if isinstance(item, ast.Use):
            resolved = _resolve_use(item, path, errors)
            if resolved is None:
                continue
            target = resolved
            if target in stack:
                errors.error(f"`use` cycle: {item.path} is already being read", item.span)
                continue
            if str(target) in {str(Path(s).resolve()) for s in sources}:
                continue
            sub = _read_used(item, target, errors)
            if sub is None:
                continue
            try:
                used = _parse_used(item, target, sub)
                sources[str(target)] = sub
                _gather(target, used, items, sources, [*stack, target], errors, main=False)
            except DslError as err:
                if any(d.span is not None and d.span.file == str(target) for d in err.diagnostics):
                    sources[str(target)] = sub
                errors.extend(err)
        elif isinstance(item, ast.Let):
            try:
                items.lets[item.name] = evaluate(item.value, items.lets)
            except DslError as err:
                errors.extend(err)
            except (RecursionError, OverflowError, ValueError):  # a safety net: always located
                errors.error(f"cannot evaluate `{item.name}`: too large or nested too deeply",
                             item.span)
        elif isinstance(item, ast.Model | ast.Block):
            if isinstance(item, ast.Block):
                _check_block(item, errors)
            if item.name in items.models or item.name in items.blocks:
                errors.error(f"`{item.name}` is defined twice", item.span)
            elif isinstance(item, ast.Model):
                items.models[item.name] = item
            else:
                items.blocks[item.name] = item
        elif isinstance(item, ast.Train) and main:
            items.trains.append(item)


def _no_model(path: Path, program: ast.Program) -> DslError:
    """A spec without a model checks nothing: say so, and what the file holds instead."""
    blocks = [item for item in program.items if isinstance(item, ast.Block)]
    name = f"`{path.name}`"
    if blocks:
        names = ", ".join(f"`{b.name}`" for b in blocks)
        what = "block" if len(blocks) == 1 else "blocks"
        return DslError(f"{name} defines {what} {names} but no model", blocks[0].span,
                        "`use` it from a spec that has a model: "
                        f'`use "{path.name}"`, then `model m {{ ... }}`')
    return DslError(f"{name} defines no model", Span(str(path), 1, 1),
                    "a spec holds at least one `model name { input x: f32[...] ... }`")


def compile_text(text: str, path: str | Path = "<input>") -> Spec:
    path = Path(path)
    sources = {str(path): text}
    errors = Collector()
    items = _Items()
    program = parse(text, str(path))
    space: list[Param] = []
    # The search-space module is imported only for a spec that may hold one (4 ms of `check`).
    if "choice" in text or "range" in text:
        from dslc.tune.space import search_space

        program, space = search_space(program, text, errors)  # checked at its default point
    _gather(path, program, items, sources, [path.resolve()], errors, main=True)
    if not items.models and not errors.diagnostics:
        err = _no_model(path, program)
        err.sources = sources  # type: ignore[attr-defined]
        raise err
    spec = Spec(path=path, sources=sources, space=space)
    broken: set[str] = set()
    for model in items.models.values():
        before = len(errors.diagnostics)
        try:
            graph = GraphBuilder(model, items.blocks, items.lets, errors).build()
            if len(errors.diagnostics) == before:
                shapes.infer(graph, errors)
            if len(errors.diagnostics) == before:
                masks.check(graph, errors)
        except (RecursionError, OverflowError):  # a safety net: always located
            errors.error(f"model `{model.name}` is too large or nested too deeply to check",
                         model.span)
            graph = Graph.model_construct(name=model.name, inputs=[], nodes=[], outputs=[],
                                          span=model.span)
        if len(errors.diagnostics) > before:
            broken.add(model.name)
        spec.models[model.name] = graph
    seen: set[str] = set()
    for train in items.trains:
        if train.model in seen:
            errors.error(f"`train {train.model}` appears twice", train.span)
            continue
        seen.add(train.model)
        trained = spec.models.get(train.model)
        if trained is None:
            errors.error(f"`train` names an unknown model `{train.model}`", train.span,
                         did_you_mean(train.model, spec.models))
            continue
        cfg = build_train(train, None if train.model in broken else trained, items.lets, errors)
        if cfg is not None:
            spec.trains[train.model] = cfg
    if errors.diagnostics:
        err = DslError(errors.diagnostics)
        err.sources = sources  # type: ignore[attr-defined]
        raise err
    return spec


def compile_file(path: str | Path) -> Spec:
    path = Path(path)
    try:
        text = read_spec(path)
    except SourceError as exc:
        raise DslError(f"{path}: {exc.reason}", hint=exc.hint) from None
    return compile_text(text, path)


__all__ = ["Span", "Spec", "compile_file", "compile_text"]
