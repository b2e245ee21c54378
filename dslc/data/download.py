"""Files fetched on first use: downloaded from a mirror into the user's cache folder, checked
against a SHA-256 pinned in the code, and read from the cache afterwards with no network.

A download goes to a temporary file beside its destination and is renamed only once its size
and digest match, so an interrupted, truncated or corrupt transfer never leaves a file that
passes as complete. Every read checks the digest again: a file put in the cache by hand is held
to the same pin. Standard library only (and rich for the bar on a terminal)."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dslc import __version__
from dslc.diagnostics import DslError, Span

ENV_CACHE = "DSLC_DATA"      # the cache folder; default $XDG_CACHE_HOME/dslc or ~/.cache/dslc
ENV_URL = "DSLC_DATA_URL"    # a mirror laid out as <url>/<data set>/<file>, tried instead
TIMEOUT = 10.0               # seconds to connect and between two reads: offline fails fast
CHUNK = 1 << 16
USER_AGENT = f"dslc/{__version__}"  # some servers refuse Python-urllib's


@dataclass(frozen=True)
class RemoteFile:
    name: str                # in the mirror and in the cache
    sha256: str
    size: int | None = None  # bytes, where published


@dataclass(frozen=True)
class RemoteSet:
    name: str                        # the cache subfolder
    title: str                       # for messages: "MNIST"
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]         # base URLs ending in "/", tried in order

    def file(self, name: str) -> RemoteFile:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)


def cache_root() -> Path:
    """`$DSLC_DATA`, else `$XDG_CACHE_HOME/dslc`, else `~/.cache/dslc`."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: ignore a relative value
        return Path(xdg) / "dslc"
    return Path.home() / ".cache" / "dslc"


def folder(remote: RemoteSet) -> Path:
    return cache_root() / remote.name


def mirrors(remote: RemoteSet) -> tuple[str, ...]:
    url = os.environ.get(ENV_URL, "")
    if url:
        return (f"{url.rstrip('/')}/{remote.name}/",)
    return remote.mirrors


def fetch(remote: RemoteSet, names: list[str], span: Span | None = None) -> dict[str, bytes]:
    """The verified contents of `names` (files of `remote`), downloading those not cached."""
    where = folder(remote)
    missing = [n for n in names if not _cached(where / n, span)]
    if missing:
        _make_folder(where, span)
    for n in missing:
        _download_file(remote, remote.file(n), where, missing, span)
    return {n: _read_verified(where / n, remote.file(n), span) for n in names}


# --- the cache --------------------------------------------------------------------------------


def _cached(path: Path, span: Span | None) -> bool:
    if not os.path.lexists(path):
        return False
    if not path.is_file():  # a FIFO, a device or a folder would hang or fail the read
        raise DslError(f"{path} is in the way: it is not a regular file", span,
                       "remove it, and dslc downloads the file again")
    return True


def _make_folder(where: Path, span: Span | None) -> None:
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DslError(f"cannot create the data cache folder {where}: {exc.strerror or exc}",
                       span, f"set {ENV_CACHE} to a folder you can write") from None


def _read_verified(path: Path, file: RemoteFile, span: Span | None) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DslError(f"cannot read {path}: {exc.strerror or exc}", span) from None
    got = hashlib.sha256(data).hexdigest()
    if got != file.sha256:
        raise DslError(f"{path} is not the published {file.name}: its SHA-256 is {got}, "
                       f"expected {file.sha256}", span,
                       "delete it and dslc downloads it again, or replace it with the original")
    return data


# --- downloading ------------------------------------------------------------------------------


class _Failed(Exception):
    """One mirror could not deliver the file; the reason is the message."""


def _download_file(remote: RemoteSet, file: RemoteFile, where: Path, missing: list[str],
                   span: Span | None) -> None:
    reasons = []
    for base in mirrors(remote):
        url = base + file.name
        try:
            _download(url, file, where / file.name, span)
            return
        except _Failed as exc:
            reasons.append(f"{url}: {exc}")
    raise DslError(f"cannot download {remote.title} file {file.name}: " + "; ".join(reasons),
                   span, f"without a network, put {', '.join(missing)} (from "
                         f"{remote.mirrors[0]}) in {where}/ — dslc checks their SHA-256; "
                         f"{ENV_CACHE} sets the folder")


def _download(url: str, file: RemoteFile, dest: Path, span: Span | None) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DslError(f"cannot write to {dest.parent}: {exc.strerror or exc}", span,
                       f"set {ENV_CACHE} to a folder you can write") from None
    tmp = Path(name)
    done = False
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _transfer(url, file, out, dest, span)
            out.flush()
            os.fsync(out.fileno())
        if digest != file.sha256:
            raise _Failed(f"its SHA-256 is {digest}, expected {file.sha256} (discarded)")
        os.replace(tmp, dest)
        done = True
        print(f"saved {dest} (SHA-256 verified)", file=sys.stderr, flush=True)
    finally:
        if not done:
            tmp.unlink(missing_ok=True)


def _transfer(url: str, file: RemoteFile, out: BinaryIO, dest: Path, span: Span | None) -> str:
    """Stream `url` into `out`; the SHA-256 of what came."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    sha = hashlib.sha256()
    try:
        _lookup(request)
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            length = response.headers.get("Content-Length")
            offered = int(length) if length and length.isdigit() else None
            if offered is not None and file.size is not None and offered != file.size:
                raise _Failed(f"the server offers {offered:,} bytes, the file has {file.size:,}")
            total = file.size or offered
            bar = _Bar(url, dest, total)
            received = 0
            try:
                while chunk := response.read(CHUNK):
                    received += len(chunk)
                    if total is not None and received > total:
                        raise _Failed(f"more than the {total:,} bytes expected (discarded)")
                    sha.update(chunk)
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise DslError(f"cannot write {dest}: {exc.strerror or exc}", span,
                                       f"free some space, or set {ENV_CACHE} to another "
                                       "folder") from None
                    bar.advance(len(chunk))
            finally:
                bar.close()
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _Failed(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise _Failed(f"no answer within {TIMEOUT:g} s") from None
        raise _Failed(str(getattr(reason, "strerror", None) or reason)) from None
    except TimeoutError:
        raise _Failed(f"no answer within {TIMEOUT:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _Failed(str(exc) or type(exc).__name__) from None
    if total is not None and received < total:
        raise _Failed(f"the transfer ended after {received:,} of {total:,} bytes (discarded)")
    return sha.hexdigest()


def _lookup(request: urllib.request.Request) -> None:
    """Resolve the server's name within TIMEOUT: the socket timeout does not bound the name
    lookup, which can take minutes where a resolver is configured but unreachable. Skipped
    behind a proxy, which resolves names itself."""
    host = request.host.rsplit(":", 1)[0].strip("[]") if request.host else ""
    if not host or urllib.request.getproxies().get(request.type):
        return
    result: list[BaseException | None] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            result.append(None)
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=resolve, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if not result:
        raise _Failed(f"cannot resolve {host} within {TIMEOUT:g} s")
    if result[0] is not None:
        exc = result[0]
        raise _Failed(str(getattr(exc, "strerror", None) or exc))


class _Bar:
    """A progress bar on stderr when it is a terminal; off one, a plain line."""

    def __init__(self, url: str, dest: Path, total: int | None):
        self.progress: Any = None
        size = f" ({total / 1e6:.1f} MB)" if total else ""
        if sys.stderr.isatty():
            from rich import progress as rp
            from rich.console import Console

            self.progress = rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(),
                                        rp.DownloadColumn(), rp.TransferSpeedColumn(),
                                        rp.TimeRemainingColumn(),
                                        console=Console(file=sys.stderr), transient=True)
            self.progress.start()
            self.task = self.progress.add_task(f"downloading {dest.name}", total=total)
        else:
            print(f"downloading {url}{size} to {dest.parent}", file=sys.stderr, flush=True)

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=n)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
