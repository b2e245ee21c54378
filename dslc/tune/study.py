"""`dslc tune SPEC --trials N`: an Optuna study over the spec's search space.

- Trial 0 trains the spec's defaults (see space.py), so the study says whether the search
  beat them.
- Each trial fills its values into the spec's text and trains that plain spec through the
  shared loop (dslc/train/loop.py) on the spec's validation split, reporting the monitored
  figure each epoch; the median pruner stops trials that fall behind. A trial that diverges
  counts as pruned; one whose values make no valid model fails, with the reason recorded.
- The study lives in OUT/study.db (SQLite): the same command again continues it. `--trials`
  counts finished (complete or pruned) trials in all, as `--epochs` counts resumed epochs.
- OUT/best.dl is the best trial's spec, values filled in; OUT/trials.csv the table printed;
  OUT/trials/NNN/ each trial's spec, history and last checkpoint; OUT/tune.json the outcome.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

from dslc.backends import get_backend
from dslc.compiler import compile_text, read_spec
from dslc.diagnostics import DslError
from dslc.train import outputs
from dslc.train.progress import Progress, Silent
from dslc.tune.space import Param, describe_space, fill, round_in
from dslc.weights import atomic_write_bytes

STUDY = "study.db"
STUDY_NAME = "dslc-tune"
MAXIMIZE = {"accuracy", "precision", "recall", "f1"}


def monitor_of(cfg, given: str | None) -> tuple[str, str]:
    """(the history column trials are judged by, "maximize" | "minimize")."""
    if cfg.validation <= 0:
        raise DslError("`dslc tune` judges trials on the validation split, and this spec has "
                       "none", cfg.span, "add `validation = 0.2` to the train block")
    names = ["val_loss", *(f"val_{m}" for m in cfg.metrics)]
    monitor = given or ("val_accuracy" if "accuracy" in cfg.metrics else "val_loss")
    if monitor not in names:
        raise DslError(f"--metric {monitor} is not a validation figure of this spec",
                       hint=f"choose one of {', '.join(names)}")
    return monitor, "maximize" if monitor[len("val_"):] in MAXIMIZE else "minimize"


def _optuna() -> Any:
    if importlib.util.find_spec("optuna") is None:
        raise DslError("`dslc tune` needs optuna, which is not installed",
                       hint="pip install 'dslc[tune]'")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the table says what happened
    return optuna


def suggest(trial: Any, p: Param) -> str:
    """The trial's value of `p`, as spec text."""
    if p.kind == "choice":
        return str(trial.suggest_categorical(p.name, list(p.options)))
    if p.integer:
        step = int(p.step or 1)
        return p.text(trial.suggest_int(p.name, int(p.low), int(p.high), step=step, log=p.log))
    value = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log, step=p.step)
    return p.text(value if p.step is not None else round_in(p, value))


def optuna_default(p: Param) -> Any:
    if p.kind == "choice" or p.integer:
        return p.default
    return float(p.default)


class Tuner:
    def __init__(self, args: Any, spec: Any, text: str, graph: Any, cfg: Any):
        self.args, self.spec, self.text, self.graph, self.cfg = args, spec, text, graph, cfg
        self.monitor, self.direction = monitor_of(cfg, args.metric)
        self.seed = cfg.seed if args.seed is None else args.seed
        self.out = Path(args.out) if args.out else Path("runs") / f"{graph.name}-tune"
        self.backend = get_backend(args.backend)
        self._data: dict[str, Any] = {}

    # one trial -----------------------------------------------------------------------
    def objective(self, trial: Any) -> float:
        optuna = _optuna()
        values = {p.name: suggest(trial, p) for p in self.spec.space}
        trial.set_user_attr("values", values)
        folder = self.out / "trials" / f"{trial.number:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        text = fill(self.text, self.spec.space, values)
        atomic_write_bytes(folder / "spec.dl", text.encode("utf-8"))
        t0 = time.perf_counter()
        history: list[dict] = []

        def report(epoch: int, row: dict) -> None:
            history.append(row)
            trial.report(float(row[self.monitor]), epoch + 1)
            if not self.args.no_prune and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")

        try:
            self.train(text, folder, report)
        except optuna.TrialPruned:
            trial.set_user_attr("note", f"pruned after epoch {len(history)}")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("note", "interrupted")
            raise
        except DslError as err:
            diverged = getattr(err, "history", None) is not None
            first = err.diagnostics[0]
            where = f"line {first.span.line}: " if first.span and not diverged else ""
            trial.set_user_attr("note", (where + first.message)[:300])
            if diverged:
                raise optuna.TrialPruned("diverged") from None
            raise
        finally:
            trial.set_user_attr("epochs", len(history))
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
            if history:
                outputs.write_history(folder / "history.csv", history)
        return float(history[-1][self.monitor])

    def train(self, text: str, folder: Path, report: Any) -> None:
        from dslc.train.loop import fit
        from dslc.train.run import _dataset

        spec = compile_text(text, self.spec.path)
        graph = spec.model(self.graph.name)
        cfg = spec.train_config(graph.name)
        epochs = self.args.epochs or cfg.epochs
        batch = cfg.batch
        if cfg.optimizer.name == "gd" and "batch" not in cfg.model_fields_set:
            batch = None  # as `dslc train`: gradient descent is full batch
        key = json.dumps([cfg.data.model_dump(mode="json", exclude={"span"}),
                          [s.model_dump(mode="json", exclude={"span"}) for s in cfg.preprocess],
                          cfg.validation, list(graph.inputs[0].type.shape)])
        if key not in self._data:  # one data set for every trial, unless the space holds it
            self._data[key] = _dataset(spec, graph, cfg, self.seed)
        trainer = self.backend.make_trainer(graph, cfg, self.args.device, self.seed)
        fit(trainer, graph, cfg, self._data[key], out=folder, backend=self.backend.name,
            epochs=epochs, batch=batch, seed=self.seed, progress=Silent(), on_epoch=report)

    # the study -------------------------------------------------------------------------
    def digest(self) -> str:
        from dslc.train.run import run_digest

        return run_digest(self.graph, self.cfg)[:16]

    def run(self) -> int:
        optuna = _optuna()
        self.backend.require()
        outputs.check_writable(self.out, "--out")
        if self.args.force:
            for name in (STUDY, "trials", "trials.csv", "tune.json"):
                path = self.out / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(self.out / STUDY).resolve()}"
        record = {"digest": self.digest(), "monitor": self.monitor,
                  "space": describe_space(self.spec.space), "backend": self.backend.name,
                  "seed": self.seed, "epochs": self.args.epochs or self.cfg.epochs}
        existed = (self.out / STUDY).exists()
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage,
                                    direction=self.direction, load_if_exists=True)
        if existed:
            self.check_same(study, record)
        else:
            for key, value in record.items():
                study.set_user_attr(key, value)
        finished = _finished(study)
        todo = self.args.trials - len(finished)
        progress = Progress()
        waiting = ("COMPLETE", "PRUNED", "WAITING")
        if not any(t.user_attrs.get("defaults") and t.state.name in waiting
                   for t in study.trials):  # first, or again after an interrupted trial 0
            study.enqueue_trial({p.name: optuna_default(p) for p in self.spec.space},
                                user_attrs={"defaults": True})
        if todo > 0:
            startup = max(2, min(10, self.args.trials // 2))
            # Reseeded by the trials so far: a continued study draws new values.
            study.sampler = optuna.samplers.TPESampler(seed=self.seed + len(study.trials),
                                                       n_startup_trials=startup)
            epochs = self.args.epochs or self.cfg.epochs
            study.pruner = optuna.pruners.MedianPruner(n_startup_trials=3,
                                                       n_warmup_steps=max(1, epochs // 3))
            progress.message(
                f"tuning {self.graph.name} with {self.backend.name} on its validation split "
                f"({self.monitor}, {self.direction}): {len(self.spec.space)} values, "
                f"{len(finished)} of {self.args.trials} trials done, {todo} to go; "
                f"study {self.out / STUDY}")
            from dslc.train.loop import Interrupted

            try:
                study.optimize(self.objective, n_trials=todo, catch=(DslError,),
                               callbacks=[lambda s, t: progress.message(self.line(t))])
            except Interrupted:
                raise KeyboardInterrupt(
                    f"the study in {self.out / STUDY} keeps {len(_finished(study))} finished "
                    "trials; the same command continues it") from None
        else:
            progress.message(f"the study in {self.out / STUDY} has {len(finished)} finished "
                             f"trials already (--trials {self.args.trials}); ask for more to "
                             "continue it")
        return self.report(study)

    def check_same(self, study: Any, record: dict) -> None:
        kept = study.user_attrs
        for key, what in (("digest", "the spec (model or train settings)"),
                          ("space", "the search space"), ("monitor", "the metric (--metric)"),
                          ("backend", "the backend"), ("seed", "the seed"),
                          ("epochs", "the epochs of a trial")):
            if kept.get(key) != record[key]:
                raise DslError(f"{what} changed since the study in {self.out / STUDY} started; "
                               "its trials would not compare", hint="start afresh with --force, "
                               "or choose another --out")

    # reporting -------------------------------------------------------------------------
    def columns(self) -> list[str]:
        return ["trial", "state", *(p.name for p in self.spec.space), self.monitor, "epochs"]

    def cells(self, t: Any) -> list[str]:
        values = t.user_attrs.get("values", {})
        value = t.value if t.value is not None else \
            (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        return [str(t.number), t.state.name.lower(),
                *(values.get(p.name, "") for p in self.spec.space),
                "" if value is None else f"{value:.4f}", str(t.user_attrs.get("epochs", ""))]

    @staticmethod
    def note(t: Any, best: bool = False) -> str:
        notes = ["* best"] if best else []
        notes += ["the spec's defaults"] if t.user_attrs.get("defaults") else []
        notes += [t.user_attrs["note"]] if t.user_attrs.get("note") else []
        return "; ".join(notes)

    def line(self, t: Any) -> str:
        cells, names = self.cells(t), self.columns()
        parts = [f"trial {cells[0]}", cells[1]]
        parts += [f"{n} {v}" for n, v in zip(names[2:], cells[2:]) if v != ""]
        note = self.note(t)
        return "  ".join(parts) + (f"  ({note})" if note else "")

    def report(self, study: Any) -> int:
        optuna = _optuna()
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                  optuna.trial.TrialState.FAIL)
        trials = [t for t in study.trials if t.state in states]
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = study.best_trial if complete else None
        rows = [[*self.columns(), "note"]]
        rows += [[*self.cells(t), self.note(t, best is not None and t.number == best.number)]
                 for t in trials]
        print(_table(rows))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        atomic_write_bytes(self.out / "trials.csv", buf.getvalue().encode())
        defaults = next((t for t in study.trials if t.user_attrs.get("defaults")
                         and t.state == optuna.trial.TrialState.COMPLETE), None)
        outcome: dict[str, Any] = {"monitor": self.monitor, "direction": self.direction,
                                   "trials": len(trials), "complete": len(complete)}
        if best is None:
            outputs.write_json(self.out / "tune.json", {**outcome, "verdict": "no trial completed"})
            raise DslError("no trial completed, so there is no best spec",
                           hint=f"see the notes above and {self.out / 'trials'}")
        verdict = self.verdict(best, defaults)
        written = self.write_best(best)
        print(verdict)
        print(f"wrote {written}: trial {best.number}'s spec, {self.monitor} {best.value:.4f}")
        outputs.write_json(self.out / "tune.json", {
            **outcome, "best": {"trial": best.number, "value": best.value,
                                "values": best.user_attrs.get("values", {})},
            "defaults": None if defaults is None or defaults.value is None else
            {"trial": defaults.number, "value": defaults.value},
            "beat_defaults": verdict.startswith("better"), "verdict": verdict,
            "best_spec": str(written)})
        return 0

    def verdict(self, best: Any, defaults: Any) -> str:
        if defaults is None or defaults.value is None:
            return (f"the spec's defaults did not complete a trial; the best is trial "
                    f"{best.number}")
        sign = 1 if self.direction == "maximize" else -1
        if best.number != defaults.number and sign * (best.value - defaults.value) > 0:
            return (f"better than the spec's defaults: {self.monitor} {best.value:.4f} (trial "
                    f"{best.number}) against {defaults.value:.4f} (trial {defaults.number})")
        return (f"did not beat the spec's defaults: {self.monitor} {defaults.value:.4f} "
                f"(trial {defaults.number}) is the best of the study")

    def write_best(self, best: Any) -> Path:
        """OUT/best.dl (beside copies of the files the spec `use`s), checked as `dslc check`
        would."""
        values = best.user_attrs["values"]
        text = fill(self.text, self.spec.space, values)
        filled = ", ".join(f"{k} = {v}" for k, v in values.items())
        header = (f"# Written by `dslc tune`: trial {best.number} of the study in "
                  f"{self.out / STUDY}, {self.monitor} {best.value:.4f}.\n"
                  f"# Filled in: {filled}\n").replace("\r", " ")
        outputs.copy_spec(self.out, self.spec)  # the tuned spec itself, and what it uses
        path = outputs.spec_copy(self.out, self.spec).with_name("best.dl")
        atomic_write_bytes(path, (header + text).encode("utf-8"))
        compile_text(header + text, path)  # a filled spec checks (a bug in fill would not)
        return path


def _finished(study: Any) -> list:
    from optuna.trial import TrialState

    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def tune_command(args: Any) -> int:
    from dslc.compiler import SourceError

    if args.trials < 1:
        raise DslError("--trials must be positive")
    if args.epochs is not None and args.epochs < 1:
        raise DslError("--epochs must be positive")
    try:
        text = read_spec(Path(args.spec))
    except SourceError as exc:
        raise DslError(f"{args.spec}: {exc.reason}", hint=exc.hint) from None
    spec = compile_text(text, args.spec)
    if not spec.space:
        raise DslError(f"{args.spec} has no search space to tune",
                       hint="write the values to search, e.g. `let width = choice(32, 64, 128)` "
                            "or `optimizer = adam(lr=range(1e-4, 1e-2, log=true))`")
    graph = spec.model(args.model)
    return Tuner(args, spec, text, graph, spec.train_config(graph.name)).run()
