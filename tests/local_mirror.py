"""A data mirror on 127.0.0.1 for the download tests: serves files the test puts in `files`,
and misbehaves on request (a truncated body, no answer at all, a body that stalls). Started and
stopped by the test that uses it; no test touches the internet."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dslc.data.download import RemoteFile


class Mirror:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}   # path (e.g. "/mnist/x.gz") → content
        self.truncated: set[str] = set()    # announce the full length, send half, hang up
        self.silent: set[str] = set()       # accept the connection, never answer
        self.stalled: set[str] = set()      # send headers and half the body, then nothing
        self.hits: Counter[str] = Counter()
        self.release = threading.Event()    # set at the end: silent handlers return
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path
                mirror.hits[path] += 1
                if path in mirror.silent:
                    mirror.release.wait(30)
                    return
                if path not in mirror.files:
                    self.send_error(404)
                    return
                body = mirror.files[path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if path in mirror.truncated or path in mirror.stalled:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if path in mirror.stalled:
                        mirror.release.wait(30)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)

    def put(self, path: str, content: bytes) -> RemoteFile:
        """Serve `content` at `path`; the RemoteFile that pins it."""
        self.files[path] = content
        return RemoteFile(path.rsplit("/", 1)[-1], hashlib.sha256(content).hexdigest(),
                          len(content))

    def __enter__(self) -> Mirror:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
