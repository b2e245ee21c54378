"""Errors are values with places: a span, a message and an optional hint.

Library code raises `DslError` carrying one or more diagnostics; only the CLI renders them.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any

from dslc.records import frozen, record


@frozen
class Span:
    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        # In the IR's models: taken as is, dumped as the dataclass it once was (a dict).
        from pydantic_core import core_schema

        return core_schema.is_instance_schema(
            cls, serialization=core_schema.plain_serializer_function_ser_schema(
                lambda s: {"file": s.file, "line": s.line, "col": s.col,
                           "end_line": s.end_line, "end_col": s.end_col}))


@record
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


@record
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
    import difflib  # only on an error: `dslc check` of a good spec never needs it

    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"{prefix} `{matches[0]}`?" if matches else None


def one_of(candidates) -> str:
    return ", ".join(f"`{c}`" for c in sorted(candidates))


# Rendered source lines show this many characters around the caret; messages and hints
# are cut at MAX_MESSAGE. A 2 MB line in a spec must not become a 2 MB error.
WINDOW = 120
MAX_MESSAGE = 1000
# The source of a diagnostic is read again only from a regular file this small.
MAX_SOURCE_BYTES = 10 * 1024 * 1024


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} … {text[-half:]}"


def _source_window(src: str, col: int, width: int) -> tuple[str, int, int]:
    """The part of `src` shown around 0-based column `col`: (text, caret column, caret width)."""
    if len(src) <= WINDOW:
        return src, col, width
    start = max(0, min(col - WINDOW // 2, len(src) - WINDOW))
    end = start + WINDOW
    shown = ("…" if start else "") + src[start:end] + ("…" if end < len(src) else "")
    caret = col - start + (1 if start else 0)
    return shown, caret, max(1, min(width, end - col))


def _read_source(file: str) -> str | None:
    import os
    import stat

    try:
        info = os.stat(file)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SOURCE_BYTES:
            return None
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def render(diag: Diagnostic, sources: dict[str, str] | None = None) -> str:
    """`path:line:col: error: message`, the source line, a caret, then the hint."""
    sources = sources or {}
    message = _clip(diag.message)
    if diag.span is None:
        lines = [f"{diag.severity}: {message}"]
    else:
        lines = [f"{diag.span}: {diag.severity}: {message}"]
        text = sources.get(diag.span.file)
        if text is None:
            text = _read_source(diag.span.file)
        if text is not None:
            src_lines = text.splitlines()
            if 1 <= diag.span.line <= len(src_lines):
                raw = src_lines[diag.span.line - 1]
                src = raw.expandtabs(4)
                col = len(raw[:diag.span.col - 1].expandtabs(4))  # tabs move the caret too
                width = 1
                if diag.span.end_line == diag.span.line and diag.span.end_col:
                    width = max(1, diag.span.end_col - diag.span.col)
                src, caret, width = _source_window(src, col, width)
                lineno = str(diag.span.line)
                lines.append(f" {lineno} | {src}")
                lines.append(f" {' ' * len(lineno)} | {' ' * caret}{'^' * width}")
    if diag.hint:
        lines.append(f"  hint: {_clip(diag.hint)}")
    return "\n".join(lines)


def render_all(err: DslError, sources: dict[str, str] | None = None) -> str:
    return "\n".join(render(d, sources) for d in err.diagnostics)
