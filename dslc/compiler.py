"""Front end: read a spec (and what it `use`s), build every model's graph, check it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dslc.diagnostics import Collector, DslError, Span, did_you_mean
from dslc.ir import ast
from dslc.ir.graph import Graph
from dslc.ir.train import TrainConfig
from dslc.parse import parse
from dslc.passes import shapes
from dslc.passes.build import GraphBuilder
from dslc.passes.train_check import build_train
from dslc.passes.values import evaluate


@dataclass
class Spec:
    path: Path
    sources: dict[str, str]
    models: dict[str, Graph] = field(default_factory=dict)
    trains: dict[str, TrainConfig] = field(default_factory=dict)

    @property
    def digest(self) -> str:
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


@dataclass
class _Items:
    models: dict[str, ast.Model] = field(default_factory=dict)
    blocks: dict[str, ast.Block] = field(default_factory=dict)
    trains: list[ast.Train] = field(default_factory=list)
    lets: dict[str, Any] = field(default_factory=dict)


def _gather(path: Path, text: str, items: _Items, sources: dict[str, str], stack: list[Path],
            errors: Collector, main: bool) -> None:
    program = parse(text, str(path))
    for item in program.items:
        if isinstance(item, ast.Use):
            target = (path.parent / item.path).resolve()
            if target in stack:
                errors.error(f"`use` cycle: {item.path} is already being read", item.span)
                continue
            if str(target) in {str(Path(s).resolve()) for s in sources}:
                continue
            try:
                sub = target.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                errors.error(f"cannot read {item.path}: {getattr(exc, 'strerror', None) or exc}",
                             item.span)
                continue
            sources[str(target)] = sub
            try:
                _gather(target, sub, items, sources, [*stack, target], errors, main=False)
            except DslError as err:
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
            if item.name in items.models or item.name in items.blocks:
                errors.error(f"`{item.name}` is defined twice", item.span)
            elif isinstance(item, ast.Model):
                items.models[item.name] = item
            else:
                items.blocks[item.name] = item
        elif isinstance(item, ast.Train) and main:
            items.trains.append(item)


def compile_text(text: str, path: str | Path = "<input>") -> Spec:
    path = Path(path)
    sources = {str(path): text}
    errors = Collector()
    items = _Items()
    _gather(path, text, items, sources, [path.resolve()], errors, main=True)
    spec = Spec(path=path, sources=sources)
    broken: set[str] = set()
    for model in items.models.values():
        before = len(errors.diagnostics)
        try:
            graph = GraphBuilder(model, items.blocks, items.lets, errors).build()
            if len(errors.diagnostics) == before:
                shapes.infer(graph, errors)
        except (RecursionError, OverflowError):  # a safety net: always located
            errors.error(f"model `{model.name}` is too large or nested too deeply to check",
                         model.span)
            graph = Graph(name=model.name, inputs=[], nodes=[], outputs=[], span=model.span)
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
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DslError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DslError(f"{path}: cannot read: {exc}") from None
    return compile_text(text, path)


__all__ = ["Span", "Spec", "compile_file", "compile_text"]
