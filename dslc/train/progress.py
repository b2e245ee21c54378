"""Progress of training: a bar per epoch (loss, samples/s) on a terminal, plain log lines
otherwise (CI logs, pipes), one summary line per epoch either way."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO


def format_row(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for key, value in row.items():
        if key in ("epoch", "seconds", "samples_per_s"):
            continue
        if key == "lr":  # small rates would read 0.0000
            parts.append(f"lr {value:.3g}")
            continue
        parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    parts.append(f"{row['samples_per_s']:,.0f} samples/s")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


class Progress:
    """`start_epoch`, then `update` after every batch, then `end_epoch` with the epoch's row."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self._bar: Any = None  # a rich Progress, made on the first live epoch
        self._task: Any = None
        self._last = 0.0

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def start_epoch(self, epoch: int, epochs: int, samples: int) -> None:
        self.epochs, self.samples = epochs, samples
        self.seen, self.loss_sum, self.t0 = 0, 0.0, time.perf_counter()
        if not self.live:
            return
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        if self._bar is None:
            self._bar = Bar(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                            transient=True)
            self._bar.start()
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(f"epoch {epoch + 1}/{epochs}", total=samples,
                                        status="")

    def update(self, samples: int, loss: float) -> None:
        self.seen += samples
        if math.isfinite(loss):
            self.loss_sum += loss * samples
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and self.seen < self.samples:
            return  # redraw at most ten times a second
        self._last = now
        rate = self.seen / max(now - self.t0, 1e-9)
        status = f"loss {self.loss_sum / max(self.seen, 1):.4f}  {rate:,.0f} samples/s"
        self._bar.update(self._task, completed=self.seen, status=status)

    def end_epoch(self, row: dict) -> None:
        self.message(format_row(row, self.epochs))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._task = None


class Silent(Progress):
    def __init__(self):
        super().__init__(live=False)

    def message(self, text: str) -> None:
        pass
