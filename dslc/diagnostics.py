"""Errors are values with places: a span, a message and an optional hint.

Library code raises `DslError` carrying one or more diagnostics; only the CLI renders them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass
class Diagnostic:
    message: str
    span: Span | None = None
    hint: str | None = None
    severity: str = "error"


class DslError(Exception):
    """A user error (exit status 2). Carries every diagnostic found, not just the first."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic | str, span: Span | None = None,
                 hint: str | None = None):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics, span, hint)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = diagnostics
        super().__init__("\n".join(d.message for d in diagnostics))


@dataclass
class Collector:
    """Gathers independent errors so that one run reports all of them."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, message: str, span: Span | None = None, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(message, span, hint))

    def extend(self, err: DslError) -> None:
        self.diagnostics.extend(err.diagnostics)

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise DslError(list(self.diagnostics))


def did_you_mean(word: str, candidates, prefix: str = "did you mean") -> str | None:
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"{prefix} `{matches[0]}`?" if matches else None


def one_of(candidates) -> str:
    return ", ".join(f"`{c}`" for c in sorted(candidates))


def render(diag: Diagnostic, sources: dict[str, str] | None = None) -> str:
    """`path:line:col: error: message`, the source line, a caret, then the hint."""
    sources = sources or {}
    if diag.span is None:
        lines = [f"{diag.severity}: {diag.message}"]
    else:
        lines = [f"{diag.span}: {diag.severity}: {diag.message}"]
        text = sources.get(diag.span.file)
        if text is None:
            try:
                text = Path(diag.span.file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = None
        if text is not None:
            src_lines = text.splitlines()
            if 1 <= diag.span.line <= len(src_lines):
                src = src_lines[diag.span.line - 1].expandtabs(4)
                width = 1
                if diag.span.end_line == diag.span.line and diag.span.end_col:
                    width = max(1, diag.span.end_col - diag.span.col)
                lineno = str(diag.span.line)
                lines.append(f" {lineno} | {src}")
                lines.append(f" {' ' * len(lineno)} | {' ' * (diag.span.col - 1)}{'^' * width}")
    if diag.hint:
        lines.append(f"  hint: {diag.hint}")
    return "\n".join(lines)


def render_all(err: DslError, sources: dict[str, str] | None = None) -> str:
    return "\n".join(render(d, sources) for d in err.diagnostics)
