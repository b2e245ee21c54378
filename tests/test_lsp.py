"""`dslc lsp`: spoken to as an editor does, over JSON-RPC on the server's stdin/stdout, and
its answers (dslc/lsp/features.py) checked on the specs, the golden diagnostics and
half-typed text. Every wait is bounded by a timeout or a count, so a hang fails a test."""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, SPECS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("pygls")

from dslc.lsp import features  # noqa: E402
from dslc.lsp.features import Positions, analyse  # noqa: E402

WAIT = 120  # seconds one message may take before the test gives up (a hang, not a measure)
HAS_FMT = importlib.util.find_spec("dslc.fmt") is not None

LIB = """\
# Two dense layers, the second linear.
block mlp(width: int, out: int = 1) {
    input x
    h = dense(x, width, activation=relu)
    output dense(h, out)
}
let hidden = 16
"""

MAIN = """\
use "lib.dl"
let classes = 3

model net {
    input features: f32[8]
    h = mlp(features, hidden, out=classes)
    y = softmax(h)
    output y
}
"""


class Client:
    """A minimal LSP client: Content-Length framed JSON-RPC over a subprocess's pipes."""

    def __init__(self, cwd: Path):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        # stderr to a file: a pipe nobody reads could fill and stall the server.
        self.log = cwd / "server.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "dslc", "lsp"], cwd=cwd,
                                         env=env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log)
        self.inbox: queue.Queue = queue.Queue()
        self.notes: list[dict] = []
        self.ids = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    self.inbox.put(None)
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            assert length is not None
            self.inbox.put(json.loads(out.read(length)))

    def send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def receive(self) -> dict:
        try:
            message = self.inbox.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no message from the server in {WAIT} s") from None
        if message is None:
            raise AssertionError("the server closed its output: "
                                 + self.log.read_text(errors="replace")[-2000:])
        if "id" in message and "method" in message:  # a request to the client: accept it
            self.send({"id": message["id"], "result": None})
        return message

    def request(self, method: str, params: dict):
        self.ids += 1
        self.send({"id": self.ids, "method": method, "params": params})
        for _ in range(1000):
            message = self.receive()
            if message.get("id") == self.ids and "method" not in message:
                assert "error" not in message, message["error"]
                return message["result"]
            self.notes.append(message)
        raise AssertionError(f"no answer to {method}")

    def notify(self, method: str, params: dict) -> None:
        self.send({"method": method, "params": params})

    def diagnostics(self, uri: str) -> list[dict]:
        """The next diagnostics published for `uri` (already received ones first)."""
        for _ in range(1000):
            for k, note in enumerate(self.notes):
                if note.get("method") == "textDocument/publishDiagnostics" and \
                        note["params"]["uri"] == uri:
                    del self.notes[: k + 1]
                    return note["params"]["diagnostics"]
            self.notes.append(self.receive())
        raise AssertionError(f"no diagnostics for {uri}")

    def open(self, path: Path, text: str | None = None) -> str:
        uri = path.as_uri()
        self.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "dslc", "version": 1,
            "text": path.read_text(encoding="utf-8") if text is None else text}})
        return uri

    def close(self) -> int:
        self.request("shutdown", {})
        self.notify("exit", {})
        try:
            return self.proc.wait(timeout=WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def client(tmp_path):
    c = Client(tmp_path)
    result = c.request("initialize", {"processId": None, "rootUri": tmp_path.as_uri(),
                                      "capabilities": {}})
    c.capabilities = result["capabilities"]
    c.notify("initialized", {})
    yield c
    if c.proc.poll() is None:
        c.proc.kill()
        c.proc.wait(timeout=WAIT)


def pos(text: str, marker: str, delta: int = 0) -> dict:
    """The LSP position (UTF-16) of `marker`'s first occurrence in `text`, plus `delta`."""
    offset = text.index(marker) + delta
    p = Positions(text).position(offset)
    return {"line": p.line, "character": p.character}


def check_output(path: Path, cwd: Path) -> list[tuple[int, int, str]]:
    """`dslc check`'s errors: (line, column, message), as a user sees them."""
    result = subprocess.run([sys.executable, "-m", "dslc", "check", str(path)], cwd=cwd,
                            capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 2, result.stderr
    return [(int(m[1]), int(m[2]), m[3]) for m in
            re.finditer(r"^.*?\.dl:(\d+):(\d+): error: (.*)$", result.stderr, re.M)]


# --- through the protocol -------------------------------------------------------------------

def test_server_offers_every_feature(client):
    caps = client.capabilities
    assert caps["hoverProvider"] and caps["definitionProvider"]
    assert caps["documentFormattingProvider"]
    assert "(" in caps["completionProvider"]["triggerCharacters"]
    assert caps["textDocumentSync"]
    assert client.close() == 0


def test_live_diagnostics_are_those_of_check(client, tmp_path):
    text = """\
model a {
    input x: f32[4]
    h = dense(x, 3, kernel=2)
    y = dnse(h)
}
model b {
    input image: f32[8, 8, 1]
    conv2d(4, padding=sme)
    dense(2)
}
train a {
    loss = mse
    optimizer = adm
}
"""
    spec = tmp_path / "broken.dl"
    spec.write_text(text, encoding="utf-8")
    uri = client.open(spec)
    got = client.diagnostics(uri)
    expected = check_output(spec, tmp_path)
    assert len(expected) >= 4
    assert [(d["range"]["start"]["line"] + 1, d["range"]["start"]["character"] + 1,
             d["message"].split("\nhint: ")[0]) for d in got] == expected
    assert all(d["source"] == "dslc" and d["severity"] == 1 for d in got)
    typo = next(d for d in got if "dnse" in d["message"])
    assert typo["range"]["end"]["character"] - typo["range"]["start"]["character"] == 4
    assert "hint: did you mean `dense`?" in typo["message"]

    # Fixed in the editor (whole text sent): no diagnostics; broken by an incremental edit.
    fixed = text.replace("kernel=2", "use_bias=false").replace("dnse", "relu") \
        .replace("sme", "same").replace("    dense(2)", "    flatten\n    dense(2)")
    fixed = fixed[:fixed.index("train")]
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                             "contentChanges": [{"text": fixed}]})
    assert client.diagnostics(uri) == []
    start = pos(fixed, "flatten")
    end = {"line": start["line"], "character": start["character"] + len("flatten")}
    client.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 3},
        "contentChanges": [{"range": {"start": start, "end": end}, "text": "flaten"}]})
    (diag,) = client.diagnostics(uri)
    assert diag["message"].startswith("unknown op or block `flaten`")
    assert diag["range"]["start"] == start
    client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    assert client.diagnostics(uri) == []
    assert client.close() == 0


def test_positions_count_utf16_units(client, tmp_path):
    text = ('model m {\n    input x: f32[4]  # 😋\n'
            '    h = dense(x, 4, kernel_init="😋", actvation=relu)\n}\n')
    spec = tmp_path / "emoji.dl"
    uri = client.open(spec, text)
    (diag,) = client.diagnostics(uri)
    line = text.split("\n")[2]
    assert diag["range"]["start"] == {"line": 2, "character": line.index("actvation") + 1}
    hover = client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                  "position": pos(text, "relu")})
    assert hover["range"]["start"] == {"line": 2, "character": line.index("relu") + 1}
    assert "max(x, 0)" in hover["contents"]["value"]
    assert client.close() == 0


def test_hover_completion_definition(client, tmp_path):
    (tmp_path / "lib.dl").write_text(LIB, encoding="utf-8")
    spec = tmp_path / "main.dl"
    spec.write_text(MAIN, encoding="utf-8")
    uri = client.open(spec)
    assert client.diagnostics(uri) == []
    doc = {"textDocument": {"uri": uri}}

    hover = client.request("textDocument/hover", {**doc, "position": pos(MAIN, "softmax")})
    value = hover["contents"]["value"]
    assert hover["contents"]["kind"] == "markdown"
    assert "layer `y`" in value and "`[1]`" in value or "[3]" in value
    assert "over the last axis" in value  # the op's docstring
    hover = client.request("textDocument/hover", {**doc, "position": pos(MAIN, "features:")})
    assert "f32[8]" in hover["contents"]["value"]
    hover = client.request("textDocument/hover", {**doc, "position": pos(MAIN, "mlp(")})
    assert "block mlp(width: int, out: int = 1)" in hover["contents"]["value"]
    assert "Two dense layers" in hover["contents"]["value"]

    # Completion in a call: the op's attributes with their defaults, then what is in scope.
    edited = MAIN.replace("    output y", "    z = dense(y, 2, )\n    output z")
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                             "contentChanges": [{"text": edited}]})
    client.diagnostics(uri)
    items = client.request("textDocument/completion",
                           {**doc, "position": pos(edited, "2, )", 3)})["items"]
    by_label = {i["label"]: i for i in items}
    assert by_label["activation"]["detail"] == "= linear"
    assert by_label["activation"]["insertText"] == "activation="
    assert "units" in by_label and "kernel_init" in by_label
    assert {"y", "h", "features", "classes", "hidden", "conv2d", "mlp"} <= set(by_label)
    assert "z" not in by_label  # bound only once this statement is done

    definition = client.request("textDocument/definition", {**doc, "position": pos(MAIN, "mlp(")})
    assert definition[0]["uri"] == (tmp_path / "lib.dl").as_uri()
    assert definition[0]["range"]["start"] == pos(LIB, "mlp")
    definition = client.request("textDocument/definition",
                                {**doc, "position": pos(MAIN, "lib.dl")})
    assert definition[0]["uri"] == (tmp_path / "lib.dl").as_uri()
    definition = client.request("textDocument/definition",
                                {**doc, "position": pos(MAIN, "classes)")})
    assert definition == [{"uri": uri, "range": {"start": pos(MAIN, "classes"),
                                                 "end": pos(MAIN, "classes", 7)}}]
    definition = client.request("textDocument/definition", {**doc, "position": pos(edited, "y, 2")})
    assert definition[0]["range"]["start"] == pos(edited, "y = ")
    assert client.close() == 0


@pytest.mark.skipif(not HAS_FMT, reason="dslc.fmt (dslc fmt) is not merged yet")
def test_formatting_is_fmt(client, tmp_path):
    from dslc.fmt import format_text

    text = "model m{input x:f32[4]\n  dense( x,3 ,activation = relu) }\n"
    spec = tmp_path / "ugly.dl"
    uri = client.open(spec, text)
    client.diagnostics(uri)
    edits = client.request("textDocument/formatting", {
        "textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": True}})
    expected = format_text(text, str(spec))
    assert expected != text
    assert len(edits) == 1 and edits[0]["newText"] == expected
    assert edits[0]["range"]["start"] == {"line": 0, "character": 0}
    assert edits[0]["range"]["end"] == pos(text, text, len(text))
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                             "contentChanges": [{"text": expected}]})
    client.diagnostics(uri)
    assert client.request("textDocument/formatting", {
        "textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": True}}) == []
    assert client.close() == 0


def test_without_pygls_the_command_says_how_to_get_it(monkeypatch, capsys):
    from dslc.cli import main

    monkeypatch.setitem(sys.modules, "pygls", None)
    monkeypatch.delitem(sys.modules, "dslc.lsp.server", raising=False)
    assert main(["lsp"]) == 2
    err = capsys.readouterr().err
    assert "needs pygls" in err and "dslc[lsp]" in err


# --- the answers, in process ---------------------------------------------------------------

GOLDEN = sorted((ROOT / "tests" / "diagnostics").glob("*.dl"))


@pytest.mark.parametrize("case", GOLDEN, ids=lambda p: p.stem)
def test_diagnostics_match_the_golden_files(case, monkeypatch):
    """Each golden case: the editor gets the errors of `dslc check`, at its places."""
    monkeypatch.chdir(ROOT)
    rel = case.relative_to(ROOT)
    text = case.read_text(encoding="utf-8")
    a = analyse(text, rel)
    expected = case.with_suffix(".expected").read_text(encoding="utf-8")
    errors = re.findall(r"^(\S+?):(\d+):(\d+): error: (.*)$", expected, re.M)
    got = features.diagnostics(a, "utf-32")
    assert len(got) == len(re.findall(r"^\S+: error: |^\S+?:\d+:\d+: error: |^error: ",
                                      expected, re.M))
    here = [d for d in got if not re.match(r"\S+?:\d+:\d+: ", d.message)]
    mine = [(int(line), int(col), msg) for file, line, col, msg in errors if file == str(rel)]
    assert len(here) == len(mine)
    for (line, col, message), d in zip(mine, here):
        assert (d.range.start.line + 1, d.range.start.character + 1) == (line, col)
        assert d.message.split("\nhint: ")[0].startswith(message.rstrip("…").split(" … ")[0])


def test_completion_on_half_typed_text():
    text = "model m {\n    input x: f32[4]\n    h = dense(x, 3)\n    y = dense(h, activation="
    a = analyse(text, "half.dl")
    labels = {i.label for i in features.completion(a, len(text))}
    assert {"relu", "softmax", "linear"} <= labels and "h" not in labels
    labels = {i.label for i in features.completion(a, text.index("dense(h") + 2)}
    assert {"dense", "flatten", "x", "h"} <= labels and "input" not in labels
    labels = {i.label for i in features.completion(a, text.index("h = "))}
    assert {"dense", "x", "input", "output", "repeat"} <= labels and "h" not in labels
    a = analyse("model m {\n    input x: f32[4]\n    conv2d(3, padding=same, ", "half.dl")
    labels = [i.label for i in features.completion(a, len(a.text))]
    assert "padding" not in labels and labels[:2] == ["filters", "kernel"]
    a = analyse("train m {\n    optimizer = adam(", "half.dl")
    assert {i.label for i in features.completion(a, len(a.text))} >= {"lr", "beta1"}
    a = analyse("train m {\n    data = ", "half.dl")
    assert "digits" in {i.label for i in features.completion(a, len(a.text))}
    a = analyse("model m {\n    input x: ", "half.dl")
    assert {i.label for i in features.completion(a, len(a.text))} == {"f32", "float32", "i32", "int32", "i64", "int64", "bool"}
    a = analyse("# dense(\n", "half.dl")
    assert features.completion(a, 8) == []


def test_hover_without_a_checked_model_shows_the_op_docs():
    text = "model m {\n    input x: f32[4]\n    maxpool2d(2)\n}\n"  # maxpool2d needs an image
    a = analyse(text, "docs.dl")
    assert a.spec is None
    hover = features.hover(a, text.index("maxpool2d"))
    assert hover is not None
    value = hover.contents.value
    assert "maxpool2d(kernel=2, strides=none, padding=valid)" in value
    assert "`padding`: one of valid, same = `valid`" in value


def test_definitions_in_process():
    path = ROOT / "examples" / "tiny_resnet.dl"
    text = path.read_text(encoding="utf-8")
    a = analyse(text, path)

    def target(marker: str, delta: int = 0) -> tuple[int, int]:
        (location,) = features.definition(a, text.index(marker) + delta)
        return location.range.start.line, location.range.start.character

    def place(marker: str, delta: int = 0) -> tuple[int, int]:
        p = Positions(text).position(text.index(marker) + delta)
        return p.line, p.character

    assert target("train tiny_resnet", 6) == place("model tiny_resnet", 6)
    assert target("filters, kernel") == place("filters: int")
    assert target("h, filters") == place("h = conv2d(x")  # the `h` before this statement
    assert target("x, h)") == place("input x", 6)
    assert target("width)") == place("let width", 4)
    (op,) = features.definition(a, text.index("global_avgpool2d"))
    assert op.uri.endswith("dslc/ops/pool.py")


def test_a_loop_variable_is_known_in_its_body_only():
    text = ("let widths = [8, 4]\n\nmodel m {\n    input x: f32[5]\n    for w in widths {\n"
            "        h = dense(w, activation=relu)\n    }\n    dense(w)\n}\n")
    a = analyse(text, "loop.dl")
    inside = text.index("dense(w,") + 6
    (location,) = features.definition(a, inside)
    p = Positions(text).position(text.index("for w") + 4)
    assert (location.range.start.line, location.range.start.character) == (p.line, p.character)
    hover = features.hover(a, inside)
    assert hover is not None and "for w in widths" in hover.contents.value
    assert features.definition(a, text.index("dense(w)") + 6) == []  # after the loop
    labels = {i.label for i in features.completion(a, inside)}
    assert {"w", "widths"} <= labels
    assert "w" not in {i.label for i in features.completion(a, text.index("dense(w)") + 6)}
    assert features.hover(a, text.index("for w")) is None  # a keyword
    assert "for" in {i.label for i in features.completion(a, text.index("    dense(w)") + 4)}


def test_formatting_without_fmt_gives_no_edits(monkeypatch):
    monkeypatch.setitem(sys.modules, "dslc.fmt", None)
    a = analyse("model m{input x:f32[4]\n dense(3)}\n", "ugly.dl")
    assert features.formatting(a) == []


def test_positions_round_trip():
    text = "a😋b\né\n\nlast"
    for encoding, units in (("utf-16", [0, 1, 3, 4]), ("utf-8", [0, 1, 5, 6]),
                            ("utf-32", [0, 1, 2, 3])):
        p = Positions(text, encoding)
        assert [p.position(k).character for k in range(4)] == units
        for k in range(len(text) + 1):
            assert p.offset(p.position(k)) == k


TEXTS = [p.read_text(encoding="utf-8") for p in SPECS] + \
        [p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples").glob("*.dl"))]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TEXTS), st.integers(0, 2000), st.integers(0, 10**6),
       st.sampled_from(["", "(", ")", "{", "}", '"', "=", ",", "dense(", "#", "😋"]))
def test_any_text_and_place_gets_an_answer(text, cut, where, insert):
    """Half-typed or broken text: every question gets an answer, never an exception."""
    cut = min(cut, len(text))
    text = text[:cut] + insert + text[cut:]
    a = analyse(text, "typed.dl")
    offset = where % (len(text) + 1)
    features.diagnostics(a)
    features.completion(a, offset)
    features.hover(a, offset)
    features.definition(a, offset)
