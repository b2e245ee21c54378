"""`train` block → TrainConfig, checked against its model: loss vs output shape and
activation, labels vs classes, metric names, optimizer arguments."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from dslc.data.catalog import AUGMENT, PREPROCESS, SOURCES
from dslc.diagnostics import Collector, DslError, Span, did_you_mean, one_of
from dslc.ir import ast
from dslc.ir.graph import Graph
from dslc.ir.train import DataSource, EarlyStopping, Loss, Optimizer, Schedule, Step, TrainConfig
from dslc.ops import ending_activation
from dslc.passes.masks import mask_makers
from dslc.passes.values import CallValue, Symbol, describe, evaluate

LOSS_ALIASES = {
    "mse": "mse", "mean_squared_error": "mse",
    "mae": "mae", "mean_absolute_error": "mae",
    "binary_crossentropy": "binary_crossentropy", "bce": "binary_crossentropy",
    "categorical_crossentropy": "categorical_crossentropy",
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    # TensorFlow's softmax_cross_entropy_with_logits: one-hot labels, logits.
    "softmax_cross_entropy": "categorical_crossentropy",
}
LOGITS_ALIASES = {"softmax_cross_entropy"}
OPTIMIZERS = {
    "sgd": {"lr", "momentum", "nesterov", "weight_decay"},
    "gd": {"lr", "momentum", "nesterov", "weight_decay"},
    "adam": {"lr", "beta1", "beta2", "epsilon", "weight_decay"},
    "adamw": {"lr", "beta1", "beta2", "epsilon", "weight_decay"},
    "rmsprop": {"lr", "rho", "momentum", "epsilon", "weight_decay"},
}
OPTIMIZER_DEFAULTS = {"sgd": {"lr": 0.01}, "gd": {"lr": 0.01}, "adamw": {"weight_decay": 0.01}}
METRICS = {"accuracy", "precision", "recall", "f1", "mse", "mae"}
CLASS_METRICS = {"accuracy", "precision", "recall", "f1"}
SETTINGS = {"data", "validation", "preprocess", "augment", "loss", "optimizer", "metrics",
            "epochs", "batch", "seed", "shuffle"}
CE = {"binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"}
SETTINGS |= {"schedule", "early_stopping"}  # issue 15 (see _schedule, _early_stopping)
SETTINGS |= {"clip_norm", "clip_value", "class_weight"}  # regularisation (README)


def output_activation(graph: Graph) -> str:
    """The activation that ends the model's (first) output, seen through dropout and the
    layers that only move values."""
    if not graph.outputs:
        return "linear"
    return ending_activation(graph, graph.outputs[0])[0]


def build_train(train: ast.Train, graph: Graph | None, lets: dict, errors: Collector) -> TrainConfig | None:
    settings: dict[str, tuple[Any, Span]] = {}
    before = len(errors.diagnostics)
    failed = set()  # settings given but wrong: reported already, not "missing" too
    for s in train.settings:
        if s.name not in SETTINGS:
            errors.error(f"unknown train setting `{s.name}`", s.span,
                         _unknown("settings", s.name, SETTINGS))
            continue
        if s.name in settings:
            errors.error(f"`{s.name}` is set twice", s.span)
            continue
        try:
            settings[s.name] = (evaluate(s.value, lets), s.value.span)
        except DslError as err:
            errors.extend(err)
            failed.add(s.name)
    for required in ("data", "loss", "optimizer"):
        if required not in settings and required not in failed:
            errors.error(f"train `{train.model}` needs `{required} = ...`", train.span)
    if len(errors.diagnostics) > before:
        return None
    fields: dict[str, Any] = {"model": train.model, "span": train.span}
    _try(errors, lambda: fields.__setitem__("data", _data(*settings["data"])))
    _try(errors, lambda: fields.__setitem__("loss", _loss(*settings["loss"])))
    _try(errors, lambda: fields.__setitem__("optimizer", _optimizer(*settings["optimizer"])))
    for key, catalog in (("preprocess", PREPROCESS), ("augment", AUGMENT)):
        if key in settings:
            _try(errors, lambda k=key, c=catalog: fields.__setitem__(k, _steps(*settings[k], c, k)))
    if "metrics" in settings:
        _try(errors, lambda: fields.__setitem__("metrics", _metrics(*settings["metrics"])))
    if "class_weight" in settings:
        _try(errors, lambda: fields.__setitem__("class_weight",
                                                _class_weight(*settings["class_weight"])))
    for key, (test, wants) in SETTING_RULES.items():
        if key in settings:
            value, span = settings[key]
            if key == "batch" and value in ("full", "all"):
                value = None
            if test(value):
                fields[key] = value
            else:
                errors.error(f"`{key}` must be {wants}, got {describe(value)}", span)
    # After the rules above: monitors are checked against the metrics and the validation split.
    for key, parse in (("schedule", _schedule), ("early_stopping", _early_stopping)):
        if key in settings:
            _try(errors, lambda k=key, p=parse: fields.__setitem__(k, p(*settings[k], fields)))
    if len(errors.diagnostics) > before:
        return None
    try:
        config = TrainConfig(**fields)
    except ValidationError as exc:
        for e in exc.errors():
            name = str(e["loc"][0])
            span = settings.get(name, (None, train.span))[1]
            errors.error(f"`{name}`: {e['msg'][0].lower() + e['msg'][1:]} "
                         f"(got {describe(settings.get(name, (e.get('input'),))[0])})", span)
        return None
    if graph is not None:
        check_against_model(config, graph, errors)
        if config.class_weight is not None and len(graph.outputs) == 1:
            _check_class_weight(config, graph, settings["class_weight"][1], errors)
    return config


def _try(errors: Collector, fn) -> None:
    try:
        fn()
    except DslError as err:
        errors.extend(err)


def _unknown(what: str, name: str, choices) -> str:
    listing = f"{what} are {one_of(choices)}"
    guess = did_you_mean(name, choices)
    return f"{guess} {listing}" if guess else listing


def _as_call(value, span: Span, what: str, choices) -> CallValue:
    if isinstance(value, Symbol):
        return CallValue(name=str(value), args=[], kwargs={}, span=value.span or span)
    if isinstance(value, CallValue):
        return value
    raise DslError(f"{what} must be one of {one_of(choices)}, got {describe(value)}", span)


def _bind(call: CallValue, accepted: dict | set, positional: tuple[str, ...], what: str) -> dict:
    out: dict[str, Any] = {}
    if len(call.args) > len(positional):
        raise DslError(f"`{call.name}` takes {len(positional)} positional argument(s)",
                       call.arg_spans[len(positional)] if call.arg_spans else call.span)
    for key, v in zip(positional, call.args):
        out[key] = v
    for key, v in call.kwargs.items():
        if key not in accepted:
            hint = did_you_mean(key, accepted) or (f"it takes {one_of(accepted)}" if accepted
                                                  else "it takes no arguments")
            raise DslError(f"{what} `{call.name}` has no argument `{key}`",
                           call.kwarg_spans.get(key, call.span), hint)
        out[key] = v
    return {k: (str(v) if isinstance(v, Symbol) else v) for k, v in out.items()}


def _data(value, span) -> DataSource:
    call = _as_call(value, span, "data", SOURCES)
    info = SOURCES.get(call.name)
    if info is None:
        raise DslError(f"unknown data source `{call.name}`", call.span,
                       _unknown("sources", call.name, SOURCES))
    args = {**info.args, **_bind(call, info.args, info.positional, "data source")}
    for key in info.positional:
        if args.get(key) is None and key in ("path", "x", "y"):
            raise DslError(f"data source `{call.name}` needs `{key}`", call.span,
                           f'e.g. `{call.name}("{"data.npz" if call.name == "npz" else "file"}")`')
    test = args.get("test")
    if test is not None and not (isinstance(test, int | float) and 0 <= test < 1):
        raise DslError(f"`test` is a fraction in [0, 1), got {describe(test)}", call.span)
    return DataSource(kind=call.name, args=args, span=call.span)


def _loss(value, span) -> Loss:
    call = _as_call(value, span, "loss", LOSS_ALIASES)
    if call.name not in LOSS_ALIASES:
        raise DslError(f"unknown loss `{call.name}`", call.span,
                       _unknown("losses", call.name, LOSS_ALIASES))
    args = _bind(call, {"from_logits", "label_smoothing"}, (), "loss")
    if "label_smoothing" in args and LOSS_ALIASES[call.name] not in CE:
        raise DslError(f"`label_smoothing` smooths class labels; loss `{call.name}` has none",
                       call.kwarg_spans.get("label_smoothing", call.span),
                       "use it with a cross-entropy loss")
    if call.name in LOGITS_ALIASES:
        args.setdefault("from_logits", True)
    try:
        return Loss(name=LOSS_ALIASES[call.name], span=call.span, **args)
    except ValidationError as exc:
        raise DslError(f"loss `{call.name}`: {exc.errors()[0]['msg']}", call.span) from None


def _optimizer(value, span) -> Optimizer:
    call = _as_call(value, span, "optimizer", OPTIMIZERS)
    if call.name not in OPTIMIZERS:
        raise DslError(f"unknown optimizer `{call.name}`", call.span,
                       _unknown("optimizers", call.name, OPTIMIZERS))
    kwargs = dict(call.kwargs)
    if "learning_rate" in kwargs:
        kwargs["lr"] = kwargs.pop("learning_rate")
        call.kwarg_spans["lr"] = call.kwarg_spans.get("learning_rate", call.span)
    call = CallValue(call.name, call.args, kwargs, call.span, call.arg_spans, call.kwarg_spans)
    args = {**OPTIMIZER_DEFAULTS.get(call.name, {}),
            **_bind(call, OPTIMIZERS[call.name], ("lr",), "optimizer")}
    try:
        return Optimizer(name=call.name, span=call.span, **args)
    except ValidationError as exc:
        e = exc.errors()[0]
        key = str(e["loc"][0])
        raise DslError(f"optimizer `{call.name}`: `{key}` {e['msg'][0].lower() + e['msg'][1:]}",
                       call.kwarg_spans.get(key, call.span)) from None


def _steps(value, span, catalog, what) -> list[Step]:
    items = value if isinstance(value, list) else [value]
    steps = []
    for item in items:
        call = _as_call(item, span, what, catalog)
        info = catalog.get(call.name)
        if info is None:
            raise DslError(f"unknown {what} step `{call.name}`", call.span,
                           _unknown("steps", call.name, catalog))
        args = {**info.args, **_bind(call, info.args, info.positional, what)}
        rule = STEP_RULES.get(call.name)
        if rule is not None:
            key, test, wants = rule
            if not test(args[key]):
                span = call.kwarg_spans.get(key) or (call.arg_spans[0] if call.arg_spans
                                                     else call.span)
                raise DslError(f"`{call.name}` needs {wants}, got {describe(args[key])}", span)
        steps.append(Step(name=call.name, args=args, span=call.span))
    return steps


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# Each step's argument: which, the test, and what the message says it wants.
STEP_RULES = {
    "scale": ("factor", lambda v: _number(v) and v != 0, "a non-zero number, e.g. `scale(1/255)`"),
    "one_hot": ("classes", lambda v: v is None or (_int(v) and v >= 2),
                "a whole number of classes >= 2"),
    "shift": ("fraction", lambda v: _number(v) and 0 <= v < 1, "a fraction in [0, 1)"),
    "noise": ("std", lambda v: _number(v) and v >= 0, "a standard deviation >= 0"),
    "flip": ("axis", lambda v: v in ("horizontal", "vertical"), "`horizontal` or `vertical`"),
}


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# Whole-block settings, checked before pydantic (whose lax mode would take "3" for 3).
SETTING_RULES = {
    "epochs": (lambda v: _int(v) and 0 < v <= 1_000_000, "a whole number in 1..1,000,000"),
    "batch": (lambda v: v is None or (_int(v) and v > 0), "a whole number > 0, or `full`"),
    "seed": (lambda v: _int(v) and 0 <= v < 2**32, "a whole number in 0..4,294,967,295"),
    "validation": (lambda v: _number(v) and 0 <= v < 1, "a fraction in [0, 1)"),
    "shuffle": (lambda v: isinstance(v, bool), "`true` or `false`"),
}
SETTING_RULES.update({key: (lambda v: _number(v) and v > 0, "a number > 0, e.g. 1.0")
                      for key in ("clip_norm", "clip_value")})


def _class_weight(value, span) -> str | list[float]:
    """`balanced`, or one weight (a number >= 0) per class."""
    if isinstance(value, str) and value == "balanced":
        return "balanced"
    items = value if isinstance(value, list) else None
    if not items or not all(_number(v) and v >= 0 for v in items) or \
            not any(v > 0 for v in items):
        raise DslError(f"`class_weight` is `balanced` or a list of weights >= 0, one per class, "
                       f"got {describe(value)}", getattr(value, "span", None) or span,
                       "e.g. `class_weight = balanced` or `class_weight = [1, 5]`")
    return [float(v) for v in items]


def _metrics(value, span) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, str) or item not in METRICS:
            s = getattr(item, "span", None) or span
            shown = f"`{item}`" if isinstance(item, str) else describe(item)
            raise DslError(f"unknown metric {shown}", s, _unknown("metrics", str(item), METRICS))
        out.append(str(item))
    return out


def check_against_model(cfg: TrainConfig, graph: Graph, errors: Collector) -> None:
    if len(graph.outputs) != 1 or len(graph.inputs) != 1:
        errors.error(f"training needs a model with one input and one output; `{graph.name}` has "
                     f"{len(graph.inputs)} and {len(graph.outputs)}", cfg.span)
        return
    try:
        out = graph.type_of(graph.outputs[0])
    except (KeyError, AssertionError):
        return  # the model already failed its own checks
    makers = mask_makers(graph).get(graph.outputs[0])
    if makers:
        # Keras leaves padded positions out of a masked output's loss (and Keras only): the
        # trainers would disagree until a masked loss and masked metrics exist on every one.
        who = ", ".join(f"`{m}`" for m in makers)
        errors.error(f"the output `{graph.outputs[0]}` carries the padding mask of {who} "
                     "(mask_zero=true): training on a masked output is not supported yet",
                     cfg.span, "reduce the sequence to one value a sample first, or set "
                     "`mask_zero=false`")
        return
    act = output_activation(graph)
    loss = cfg.loss
    span = loss.span
    width = out.shape[-1] if out.shape else None
    if loss.name in CE and loss.from_logits and act in ("softmax", "sigmoid"):
        errors.error(f"`from_logits=true` but the model ends in {act}", span,
                     f"drop `activation={act}` from the last layer, or drop `from_logits`")
    elif loss.name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        if not loss.from_logits and act == "log_softmax":
            # log-probabilities are logits whose softmax is the probabilities themselves
            errors.error(f"{loss.name} expects probabilities, but the model ends in "
                         "`log_softmax` (log-probabilities)", span,
                         f"write `loss = {loss.name}(from_logits=true)`, which is right for "
                         "log-probabilities, or end with `activation=softmax`")
        elif not loss.from_logits and act != "softmax":
            errors.error(f"{loss.name} expects probabilities, but the model ends in `{act}`", span,
                         "end with `activation=softmax`, or write "
                         f"`loss = {loss.name}(from_logits=true)`")
        if width is not None and width < 2:
            errors.error(f"{loss.name} needs one output per class, the model gives {out}", span,
                         "use binary_crossentropy with one sigmoid output")
    elif loss.name == "binary_crossentropy":
        if not loss.from_logits and act != "sigmoid":
            errors.error(f"binary_crossentropy expects probabilities, but the model ends in `{act}`",
                         span, "end with `activation=sigmoid`, or write "
                         "`loss = binary_crossentropy(from_logits=true)`")
    elif act in ("softmax", "sigmoid") and loss.name in ("mse", "mae") and cfg.metrics and \
            set(cfg.metrics) & CLASS_METRICS:
        pass  # allowed: regression on probabilities is unusual but legal
    info = SOURCES[cfg.data.kind]
    classes = info.classes
    if classes is not None and width is not None and loss.name in CE:
        expected = 1 if (loss.name == "binary_crossentropy" and classes == 2) else classes
        if width != expected and not (loss.name == "binary_crossentropy" and width == classes):
            errors.error(f"`{cfg.data.kind}` has {classes} classes, but the model's output is {out}",
                         cfg.data.span, f"end the model with `dense({expected}, ...)`")
    if info.labels == "float" and loss.name in CE:
        errors.error(f"`{cfg.data.kind}` gives real-valued targets; {loss.name} needs class labels",
                     span, "use `loss = mse`")
    one_hot = any(s.name == "one_hot" for s in cfg.preprocess)
    if loss.name == "categorical_crossentropy" and info.labels == "int" and not one_hot:
        errors.error("categorical_crossentropy needs one-hot labels", span,
                     "add `one_hot` to `preprocess`, or use sparse_categorical_crossentropy")
    if loss.name == "sparse_categorical_crossentropy" and one_hot:
        errors.error("sparse_categorical_crossentropy takes integer labels, but `one_hot` is set",
                     span, "remove `one_hot`, or use categorical_crossentropy")
    class_metrics = set(cfg.metrics) & CLASS_METRICS
    if class_metrics and loss.name in ("mse", "mae") and info.labels == "float":
        errors.error(f"{one_of(class_metrics)} need class labels; this is a regression", cfg.span,
                     "use `metrics = [mse, mae]`")
    if info.feature_shape is not None:
        in_shape = graph.inputs[0].type.shape
        known = [d for d in in_shape if d is not None]
        if len(known) == len(in_shape) and math.prod(known) != math.prod(info.feature_shape):
            errors.error(f"`{cfg.data.kind}` samples have shape {list(info.feature_shape)}, the "
                         f"model's input is {graph.inputs[0].type}", cfg.data.span,
                         f"declare the input as f32[{', '.join(map(str, info.feature_shape))}, 1] "
                         f"or f32[{math.prod(info.feature_shape)}]")
    augment_images = {s.name for s in cfg.augment} & {"shift", "flip"}
    if augment_images and len(graph.inputs[0].type.shape) != 3:
        errors.error(f"{one_of(augment_images)} need image inputs `[H, W, C]`",
                     cfg.augment[0].span)


# schedule and early_stopping (issue 15) ---------------------------------------------------

SCHEDULES: dict[str, tuple[tuple[str, ...], set[str]]] = {  # positional, accepted
    "cosine": ((), {"warmup", "min_lr"}),
    "step": (("every", "gamma"), {"every", "gamma"}),
    "exponential": (("gamma",), {"gamma"}),
    "one_cycle": (("max_lr",), {"max_lr", "pct_start", "div_factor", "final_div_factor"}),
    "reduce_on_plateau": ((), {"monitor", "factor", "patience", "min_delta", "min_lr",
                               "cooldown", "mode"}),
}
SCHEDULE_NEEDS = {"step": "every", "exponential": "gamma"}
SCHEDULE_EXAMPLES = {"step": "step(every=10, gamma=0.5)", "exponential": "exponential(gamma=0.9)"}
EARLY_STOPPING = {"monitor", "patience", "min_delta", "mode", "restore_best"}
_ARG_KINDS = {"warmup": "int", "every": "int", "patience": "int", "cooldown": "int",
              "restore_best": "bool", "monitor": "name", "mode": "mode"}
_KIND_WANTS = {"int": "a whole number", "bool": "`true` or `false`", "name": "a history column",
               "mode": "`auto`, `min` or `max`", "number": "a number"}


def _arg_spans(call: CallValue, positional: tuple[str, ...]) -> dict[str, Span]:
    spans = dict(zip(positional, call.arg_spans))
    return {**spans, **call.kwarg_spans}


def _typed_args(call: CallValue, accepted: set[str], positional: tuple[str, ...],
                what: str) -> tuple[dict[str, Any], dict[str, Span]]:
    for key in call.kwargs:  # before _bind, for a message that names the call once
        if key not in accepted:
            raise DslError(f"{_label(what, call)} has no argument `{key}`",
                           call.kwarg_spans.get(key, call.span),
                           did_you_mean(key, accepted) or f"it takes {one_of(accepted)}")
    args = _bind(call, accepted, positional, what)
    spans = _arg_spans(call, positional)
    for key, v in args.items():
        kind = _ARG_KINDS.get(key, "number")
        ok = {"int": _int(v), "bool": isinstance(v, bool), "number": _number(v),
              "name": isinstance(v, str), "mode": v in ("auto", "min", "max")}[kind]
        if not ok:
            shown = f"`{v}`" if isinstance(v, str) else describe(v)
            raise DslError(f"{_label(what, call)}: `{key}` must be {_KIND_WANTS[kind]}, got "
                           f"{shown}", spans.get(key, call.span))
    return args, spans


def _model(cls, call: CallValue, args: dict, spans: dict[str, Span], what: str, **extra):
    try:
        return cls(span=call.span, **extra, **args)
    except ValidationError as exc:
        e = exc.errors()[0]
        key = str(e["loc"][0])
        raise DslError(f"{_label(what, call)}: `{key}` {e['msg'][0].lower() + e['msg'][1:]}",
                       spans.get(key, call.span)) from None


def _label(what: str, call: CallValue) -> str:
    return call.name if call.name == what else f"{what} `{call.name}`"


def _check_monitor(monitor: str, span: Span, fields: dict, what: str) -> None:
    """A monitor names a column of history.csv: `loss`, a metric, or their `val_` forms
    (which need a validation split)."""
    metrics = fields.get("metrics", [])
    columns = ["loss", *metrics]
    if monitor.startswith("val_") and monitor[4:] in columns:
        if not fields.get("validation"):
            raise DslError(f"{what} monitors `{monitor}`, but the train block has no "
                           "validation split", span,
                           f"add `validation = 0.1`, or monitor `{monitor[4:]}`")
        return
    if monitor not in columns:
        known = columns + [f"val_{c}" for c in columns]
        base = monitor.removeprefix("val_")
        hint = (f"add `{base}` to `metrics`" if base in METRICS
                else _unknown("the monitors", monitor, known))
        raise DslError(f"{what} cannot monitor `{monitor}`", span, hint)


def _schedule(value, span, fields: dict) -> Schedule:
    call = _as_call(value, span, "schedule", SCHEDULES)
    if call.name not in SCHEDULES:
        raise DslError(f"unknown schedule `{call.name}`", call.span,
                       _unknown("schedules", call.name, SCHEDULES))
    positional, accepted = SCHEDULES[call.name]
    args, spans = _typed_args(call, accepted, positional, "schedule")
    need = SCHEDULE_NEEDS.get(call.name)
    if need and need not in args:
        raise DslError(f"schedule `{call.name}` needs `{need}`", call.span,
                       f"e.g. `schedule = {SCHEDULE_EXAMPLES[call.name]}`")
    schedule = _model(Schedule, call, args, spans, "schedule", name=call.name)
    if call.name == "reduce_on_plateau":
        _check_monitor(schedule.monitor, spans.get("monitor", call.span), fields,
                       "reduce_on_plateau")
    epochs = fields.get("epochs", TrainConfig.model_fields["epochs"].default)
    if schedule.warmup and schedule.warmup >= epochs:
        raise DslError(f"a warmup of {schedule.warmup} epochs leaves none of the {epochs} "
                       "epochs to the cosine", spans.get("warmup", call.span),
                       f"use a warmup below {epochs}")
    return schedule


def _early_stopping(value, span, fields: dict) -> EarlyStopping | None:
    if isinstance(value, bool):  # `true`: every default; `false`: off
        if value:
            _check_monitor(EarlyStopping().monitor, span, fields, "early_stopping")
        return EarlyStopping(span=span) if value else None
    call = _as_call(value, span, "early_stopping", {"early_stopping"})
    if call.name != "early_stopping":
        raise DslError(f"`early_stopping` takes `early_stopping(...)`, `true` or `false`, not "
                       f"`{call.name}`", call.span,
                       "e.g. `early_stopping = early_stopping(monitor=val_loss, patience=3)`")
    args, spans = _typed_args(call, EARLY_STOPPING, (), "early_stopping")
    stopping = _model(EarlyStopping, call, args, spans, "early_stopping")
    _check_monitor(stopping.monitor, spans.get("monitor", call.span), fields, "early_stopping")
    return stopping


def _check_class_weight(cfg: TrainConfig, graph: Graph, span: Span, errors: Collector) -> None:
    """One class per sample, and (for a list) one weight per class of the output."""
    try:
        shape = tuple(graph.type_of(graph.outputs[0]).shape)
    except (KeyError, AssertionError):
        return
    loss = cfg.loss.name
    if loss not in CE:
        errors.error(f"`class_weight` weighs classes; {loss} has none", span,
                     "use a cross-entropy loss, or drop `class_weight`")
        return
    binary = loss == "binary_crossentropy"
    if len(shape) != 1 or (binary and shape != (1,)):
        errors.error(f"`class_weight` weighs one class per sample; the model's output is "
                     f"{list(shape)}", span,
                     "it needs an output [classes] (or [1] for binary_crossentropy)")
        return
    classes = 2 if binary else shape[0]
    if isinstance(cfg.class_weight, list) and classes is not None and \
            len(cfg.class_weight) != classes:
        errors.error(f"`class_weight` has {len(cfg.class_weight)} weights, the output has "
                     f"{classes} classes", span, f"give {classes} weights, one per class")
