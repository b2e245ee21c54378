"""The downloader (dslc/data/download.py) against a mirror on 127.0.0.1 that the tests start and
stop: a good file, a corrupt one, a truncated transfer, a 404, a server that never answers, a
closed port (offline). Nothing here touches the internet; slow servers are cut off by a small
TIMEOUT, not waited for."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading

import pytest
from local_mirror import Mirror

from dslc.data import download
from dslc.data.download import RemoteFile, RemoteSet, cache_root, fetch
from dslc.diagnostics import DslError, Span

SPAN = Span("spec.dl", 9, 18)
GOOD = b"\x1f\x8b pretend this is a gzip file " * 1000
BAD = GOOD[:-1] + b"!"  # same length, one byte off


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSLC_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("DSLC_DATA_URL", raising=False)
    monkeypatch.setattr(download, "TIMEOUT", 0.3)
    return tmp_path / "cache"


@pytest.fixture
def mirror(monkeypatch):
    with Mirror() as m:
        monkeypatch.setenv("DSLC_DATA_URL", m.url)
        yield m


def pinned(content: bytes = GOOD, name: str = "a.gz", size: bool = True) -> RemoteFile:
    return RemoteFile(name, hashlib.sha256(content).hexdigest(), len(content) if size else None)


def remote(*files: RemoteFile, mirrors: tuple[str, ...] = ("http://127.0.0.1:9/",)) -> RemoteSet:
    return RemoteSet("toy", "Toy", files, mirrors)


def error_of(fn) -> str:
    with pytest.raises(DslError) as info:
        fn()
    d = info.value.diagnostics[0]
    assert d.span == SPAN
    return f"{d.message}\nhint: {d.hint}"


def leftovers(folder) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


# --- the cache folder ---------------------------------------------------------------------------


def test_cache_root_follows_dslc_data_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DSLC_DATA", str(tmp_path / "d"))
    assert cache_root() == tmp_path / "d"
    monkeypatch.delenv("DSLC_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "dslc"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cache_root() == tmp_path / "h" / ".cache" / "dslc"


# --- good downloads -----------------------------------------------------------------------------


def test_a_good_file_is_downloaded_once_then_read_from_the_cache(cache, mirror, capsys):
    f = mirror.put("/toy/a.gz", GOOD)
    assert fetch(remote(f), ["a.gz"], SPAN) == {"a.gz": GOOD}
    assert (cache / "toy" / "a.gz").read_bytes() == GOOD
    assert leftovers(cache / "toy") == ["a.gz"]  # no temporary file left behind
    err = capsys.readouterr().err  # off a terminal: plain lines on stderr, no bar
    assert f"downloading {mirror.url}/toy/a.gz (0.0 MB)" in err and "SHA-256 verified" in err
    mirror.files.clear()  # the second read needs no server
    assert fetch(remote(f), ["a.gz"], SPAN) == {"a.gz": GOOD}
    assert mirror.hits["/toy/a.gz"] == 1


def test_a_file_without_a_published_size_is_checked_by_its_digest(cache, mirror):
    f = mirror.put("/toy/a.gz", GOOD)
    assert fetch(remote(pinned(size=False)), ["a.gz"], SPAN)["a.gz"] == GOOD
    assert f.size == len(GOOD)


def test_the_next_mirror_is_tried_when_one_fails(cache, mirror, monkeypatch):
    monkeypatch.delenv("DSLC_DATA_URL")
    f = mirror.put("/second/a.gz", GOOD)
    toy = remote(f, mirrors=(f"{mirror.url}/first/", f"{mirror.url}/second/"))
    assert fetch(toy, ["a.gz"], SPAN)["a.gz"] == GOOD
    assert mirror.hits == {"/first/a.gz": 1, "/second/a.gz": 1}


# --- failures: each a DslError naming the file, nothing left in the cache -----------------------


def test_a_corrupt_file_is_refused_and_discarded(cache, mirror):
    mirror.files["/toy/a.gz"] = BAD  # same length as GOOD, other bytes
    msg = error_of(lambda: fetch(remote(pinned()), ["a.gz"], SPAN))
    assert "cannot download Toy file a.gz" in msg
    assert f"its SHA-256 is {hashlib.sha256(BAD).hexdigest()}, expected " \
           f"{hashlib.sha256(GOOD).hexdigest()} (discarded)" in msg
    assert leftovers(cache / "toy") == []


def test_a_truncated_transfer_never_passes_as_complete(cache, mirror):
    mirror.put("/toy/a.gz", GOOD)
    mirror.truncated.add("/toy/a.gz")
    msg = error_of(lambda: fetch(remote(pinned()), ["a.gz"], SPAN))
    assert f"the transfer ended after {len(GOOD) // 2:,} of {len(GOOD):,} bytes" in msg
    assert leftovers(cache / "toy") == []


def test_a_truncated_transfer_of_a_file_without_a_size_fails_its_digest(cache, mirror):
    mirror.put("/toy/a.gz", GOOD)
    mirror.truncated.add("/toy/a.gz")
    # the server's Content-Length still tells the short read apart
    msg = error_of(lambda: fetch(remote(pinned(size=False)), ["a.gz"], SPAN))
    assert "the transfer ended after" in msg and leftovers(cache / "toy") == []


def test_a_server_offering_another_size_is_refused_before_the_transfer(cache, mirror):
    mirror.files["/toy/a.gz"] = GOOD + b"extra"
    msg = error_of(lambda: fetch(remote(pinned()), ["a.gz"], SPAN))
    assert f"the server offers {len(GOOD) + 5:,} bytes, the file has {len(GOOD):,}" in msg
    assert leftovers(cache / "toy") == []


def test_404_names_the_files_and_where_to_put_them(cache, mirror):
    toy = remote(pinned(name="a.gz"), pinned(name="b.gz"))
    msg = error_of(lambda: fetch(toy, ["a.gz", "b.gz"], SPAN))
    assert f"{mirror.url}/toy/a.gz: HTTP 404" in msg
    assert f"put a.gz, b.gz (from http://127.0.0.1:9/) in {cache / 'toy'}/" in msg
    assert "DSLC_DATA sets the folder" in msg
    assert leftovers(cache / "toy") == []


def test_a_server_that_never_answers_is_cut_off_by_the_timeout(cache, mirror):
    mirror.put("/toy/a.gz", GOOD)
    mirror.silent.add("/toy/a.gz")
    msg = error_of(lambda: fetch(remote(pinned()), ["a.gz"], SPAN))
    assert "no answer within 0.3 s" in msg and leftovers(cache / "toy") == []


def test_a_transfer_that_stalls_is_cut_off_and_discarded(cache, mirror):
    mirror.put("/toy/a.gz", GOOD)
    mirror.stalled.add("/toy/a.gz")
    msg = error_of(lambda: fetch(remote(pinned()), ["a.gz"], SPAN))
    assert "no answer within 0.3 s" in msg and leftovers(cache / "toy") == []


def test_offline_is_a_clear_error_not_a_traceback(cache, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DSLC_DATA_URL", f"http://127.0.0.1:{port}")
    msg = error_of(lambda: fetch(remote(pinned()), ["a.gz"], SPAN))
    assert f"http://127.0.0.1:{port}/toy/a.gz: Connection refused" in msg
    assert f"put a.gz (from http://127.0.0.1:9/) in {cache / 'toy'}/" in msg


def test_a_name_lookup_that_hangs_is_cut_off(cache, monkeypatch):
    release = threading.Event()

    def hanging_lookup(*args, **kwargs):
        release.wait(30)
        raise OSError("released")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_lookup)
    monkeypatch.setenv("DSLC_DATA_URL", "http://data.invalid")
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    try:
        msg = error_of(lambda: fetch(remote(pinned()), ["a.gz"], SPAN))
    finally:
        release.set()
    assert "cannot resolve data.invalid within 0.3 s" in msg


def test_an_interrupted_download_leaves_nothing(cache, mirror, monkeypatch):
    mirror.put("/toy/a.gz", GOOD)

    def interrupt(self, n):
        raise KeyboardInterrupt

    monkeypatch.setattr(download._Bar, "advance", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch(remote(pinned()), ["a.gz"], SPAN)
    assert leftovers(cache / "toy") == []


def test_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DSLC_DATA", str(blocker))
    msg = error_of(lambda: fetch(remote(pinned()), ["a.gz"], SPAN))
    assert f"cannot create the data cache folder {blocker / 'toy'}" in msg


# --- the cache is held to the pins ------------------------------------------------------------


def test_a_cached_file_that_does_not_match_is_refused(cache):
    (cache / "toy").mkdir(parents=True)
    (cache / "toy" / "a.gz").write_bytes(BAD)
    msg = error_of(lambda: fetch(remote(pinned()), ["a.gz"], SPAN))
    assert f"{cache / 'toy' / 'a.gz'} is not the published a.gz: its SHA-256 is " in msg
    assert "delete it" in msg
    assert (cache / "toy" / "a.gz").read_bytes() == BAD  # the user's file is left alone


def test_a_file_put_in_the_cache_by_hand_is_used_without_a_network(cache):
    (cache / "toy").mkdir(parents=True)
    (cache / "toy" / "a.gz").write_bytes(GOOD)
    assert fetch(remote(pinned()), ["a.gz"], SPAN)["a.gz"] == GOOD


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_something_not_a_regular_file_in_the_cache_is_refused(cache, kind):
    if kind == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    (cache / "toy").mkdir(parents=True)
    path = cache / "toy" / "a.gz"
    path.mkdir() if kind == "folder" else os.mkfifo(path)  # a FIFO would hang a read
    msg = error_of(lambda: fetch(remote(pinned()), ["a.gz"], SPAN))
    assert f"{path} is in the way: it is not a regular file" in msg


def test_the_progress_bar_on_a_terminal(cache, mirror, monkeypatch):
    mirror.put("/toy/a.gz", GOOD)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert fetch(remote(pinned()), ["a.gz"], SPAN)["a.gz"] == GOOD
