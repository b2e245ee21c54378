"""Files dslc reads must be regular files: a device (/dev/zero) never ends, a FIFO blocks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dslc.diagnostics import DslError, Span

_KINDS = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket")]


def file_kind(mode: int) -> str:
    """What a file of this st_mode is, in words, for an error."""
    return next((word for test, word in _KINDS if test(mode)), "not a regular file")


def require_regular(path: Path, what: str, span: Span | None = None) -> None:
    """Raise a DslError unless `path` is (a link to) a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DslError(f"{what} not found: {path}", span) from None
    except OSError as exc:
        raise DslError(f"cannot read {what} {path}: {exc.strerror or exc}", span) from None
    if not stat.S_ISREG(mode):
        raise DslError(f"{what} {path} is {file_kind(mode)}, not a regular file", span,
                       "data is read from regular files")
