"""The standard library: blocks written in the language, shipped as .dl files in dslc/std.

`use "std/<name>.dl"` reads dslc/std/<name>.dl, whatever lies next to the spec (a folder `std`
of one's own is `use "./std/<name>.dl"`). The compiler treats them as any other used file; only
errors inside them are moved to the user's call, where they can be fixed.
"""

from __future__ import annotations

from pathlib import Path

from dslc.diagnostics import Diagnostic

PREFIX = "std/"


def folder() -> Path:
    """The folder of the .dl files: a path, no importlib.resources (it would cost `dslc check`
    3 ms; dslc is not imported from a zip)."""
    return Path(__file__).resolve().with_name("std")


def modules() -> list[str]:
    """Every module, as a `use` names it."""
    return sorted(f"{PREFIX}{p.name}" for p in folder().glob("*.dl"))


def is_std(path: Path | str) -> bool:
    """Whether a source file is one of the standard library's."""
    return Path(path).resolve().parent == folder()


def at_user_call(diag: Diagnostic, calls) -> Diagnostic:
    """A diagnostic inside a standard block, moved to the outermost block call (`calls`:
    BlockCall, outermost first) in the user's files; its std line goes into the message."""
    span = diag.span
    if span is None or not is_std(span.file):
        return diag
    site = next((c for c in calls if not is_std(c.span.file)), None)
    if site is None:
        return diag
    where = f"{PREFIX}{Path(span.file).name} line {span.line}"
    return Diagnostic(f"{diag.message} (in block `{site.block}`, {where})", site.span,
                      diag.hint, diag.severity)


def resolve_use(using: Path, name: str) -> Path | None:
    """The file `use "<name>"` in the file `using` reads: a module of the library (None for
    an unknown one), or a path relative to `using`'s folder."""
    if not name.startswith(PREFIX):
        return (using.parent / name).resolve()
    return folder() / name[len(PREFIX):] if name in modules() else None
