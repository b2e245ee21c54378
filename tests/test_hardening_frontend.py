"""Issue 11, the front end's items: what a spec may read (4, 5), numbers that are not finite (7),
sizes that would crash a backend (10), runaway input and long lines (13), files without a
model (14), block inputs and block names (15), and data loading without a framework.

Every error is a located DslError (exit status 2 from the CLI), never a traceback. Reads that
could hang or never end run in a subprocess with a timeout and a memory cap: a guard, not a
timing assertion."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, run_dslc

from dslc import parse as parse_module
from dslc.compiler import MAX_SPEC_BYTES, compile_file, compile_text
from dslc.diagnostics import Diagnostic, DslError, Span, render, render_all
from dslc.passes import build

MODEL = "model m {{\n  input x: f32[4]\n  {}\n}}\n"
SECRET = "Zq7f3a:x:0:0:PRIVATE"


def errors(src: str, file: str = "t.dl") -> list[Diagnostic]:
    with pytest.raises(DslError) as info:
        compile_text(textwrap.dedent(src), file)
    for d in info.value.diagnostics:
        assert d.span is not None and d.span.file == file and d.span.line >= 1, d.message
    return info.value.diagnostics


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))


def guarded(*args) -> subprocess.CompletedProcess:
    """Python in a subprocess, bounded in time and memory: a regression that reads /dev/zero
    or waits on a FIFO fails here instead of eating the machine."""
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, preexec_fn=_limit_memory,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def check(*args):
    """`dslc check`, guarded."""
    proc = guarded("-m", "dslc", "check", *args)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    return proc


# --- 4. `use` of a file that is not a spec shows none of its contents ---------------------------


def test_use_of_a_file_that_is_not_a_spec_does_not_echo_it(tmp_path):
    (tmp_path / "secret.txt").write_text(SECRET + "\nmore secrets\n")
    spec = tmp_path / "main.dl"
    spec.write_text('use "secret.txt"\n' + MODEL.format("dense(2)"))
    proc = check(spec)
    assert proc.returncode == 2
    assert "Zq7f3a" not in proc.stderr and "PRIVATE" not in proc.stderr
    assert "main.dl:1:1: error: `use` takes a .dl spec, and secret.txt is not one" in proc.stderr
    assert ' 1 | use "secret.txt"' in proc.stderr  # the caret is on the `use` line


def test_use_of_etc_passwd(tmp_path):
    spec = tmp_path / "main.dl"
    spec.write_text('use "/etc/passwd"\n' + MODEL.format("dense(2)"))
    proc = check(spec)
    assert proc.returncode == 2 and "root:" not in proc.stderr
    assert "main.dl:1:1: error:" in proc.stderr


def test_a_dl_link_to_another_file_is_not_a_spec(tmp_path):
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    (tmp_path / "lib.dl").symlink_to(tmp_path / "secret.txt")
    spec = tmp_path / "main.dl"
    spec.write_text('use "lib.dl"\n' + MODEL.format("dense(2)"))
    proc = check(spec)
    assert proc.returncode == 2 and "Zq7f3a" not in proc.stderr
    assert "main.dl:1:1: error: lib.dl is not a dslc spec (it does not parse)" in proc.stderr


@pytest.mark.parametrize("raw,message", [
    (b"model m {\0 }" + SECRET.encode(), "lib.dl is not a dslc spec (binary data)"),
    (b"\x7fELF\x02\x01\x01\xff\xfe" + SECRET.encode(), "it is not UTF-8 text"),
])
def test_a_binary_dl_file_is_not_a_spec(tmp_path, raw, message):
    (tmp_path / "lib.dl").write_bytes(raw)
    spec = tmp_path / "main.dl"
    spec.write_text('use "lib.dl"\n' + MODEL.format("dense(2)"))
    proc = check(spec)
    assert proc.returncode == 2 and "Zq7f3a" not in proc.stderr
    assert "main.dl:1:1: error:" in proc.stderr and message in proc.stderr


def test_a_used_spec_with_a_syntax_error_still_shows_its_line(tmp_path):
    (tmp_path / "lib.dl").write_text("block b() {\n  input x\n  dense(2,, 3)\n}\n")
    spec = tmp_path / "main.dl"
    spec.write_text('use "lib.dl"\n' + MODEL.format("b()"))
    proc = check(spec)
    assert proc.returncode == 2
    assert "lib.dl:3:11: error:" in proc.stderr and " 3 |   dense(2,, 3)" in proc.stderr


def test_the_main_spec_shows_its_own_syntax_error(tmp_path):
    spec = tmp_path / "main.txt"
    spec.write_text("hello world\n")
    proc = check(spec)
    assert proc.returncode == 2 and " 1 | hello world" in proc.stderr


# --- 5. only regular files, and specs of at most 10 MB ----------------------------------------


def test_check_refuses_dev_zero():
    proc = check("/dev/zero")
    assert proc.returncode == 2
    assert "/dev/zero: is a character device, not a regular file" in proc.stderr


def test_check_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "spec.dl"
    os.mkfifo(fifo)
    proc = check(fifo)
    assert proc.returncode == 2 and "is a FIFO (named pipe), not a regular file" in proc.stderr


def test_check_refuses_a_folder(tmp_path):
    proc = check(tmp_path)
    assert proc.returncode == 2 and "is a folder, not a regular file" in proc.stderr


def test_use_refuses_devices_and_fifos(tmp_path):
    os.mkfifo(tmp_path / "fifo.dl")
    (tmp_path / "zero.dl").symlink_to("/dev/zero")
    spec = tmp_path / "main.dl"
    spec.write_text('use "/dev/zero"\nuse "fifo.dl"\nuse "zero.dl"\n' + MODEL.format("dense(2)"))
    proc = check(spec)
    assert proc.returncode == 2
    assert "main.dl:1:1: error: `use` takes a .dl spec, and /dev/zero is not one" in proc.stderr
    assert "main.dl:2:1: error: cannot use fifo.dl: it is a FIFO" in proc.stderr
    assert "main.dl:3:1: error: cannot use zero.dl: it is a character device" in proc.stderr


@pytest.mark.parametrize("used", [False, True])
def test_a_spec_larger_than_the_cap_is_refused(tmp_path, used):
    big = tmp_path / "big.dl"
    with big.open("wb") as f:
        f.truncate(MAX_SPEC_BYTES + 1)  # sparse: nothing is written
    target = big
    if used:
        target = tmp_path / "main.dl"
        target.write_text('use "big.dl"\n' + MODEL.format("dense(2)"))
    proc = check(target)
    assert proc.returncode == 2
    assert "is larger than 10 MB, the limit for a spec" in proc.stderr
    assert "big.dl" in proc.stderr
    if used:
        assert "main.dl:1:1: error: cannot use big.dl" in proc.stderr


DATA_PROBE = """
import os, sys
from pathlib import Path
from dslc.data.loaders import load_dataset
from dslc.diagnostics import DslError, Span
from dslc.ir.train import DataSource, Loss, Optimizer, TrainConfig

base = Path(sys.argv[1])
for kind, args in [("csv", {"path": "/dev/zero"}), ("csv", {"path": "fifo"}),
                   ("npy", {"x": "/dev/zero", "y": "fifo"}), ("npy", {"x": "fifo", "y": "fifo"}),
                   ("npz", {"path": "/dev/zero"}), ("npz", {"path": "fifo"}),
                   ("idx", {"path": "mnist", "test": 0.2})]:
    cfg = TrainConfig(model="m", data=DataSource(kind=kind, args=args, span=Span("s.dl", 7, 3)),
                      loss=Loss(name="mse"), optimizer=Optimizer(name="adam"))
    try:
        load_dataset(cfg, (4,), base, 0)
        print(kind, "LOADED")
    except DslError as err:
        print(kind, err.diagnostics[0].span, err.diagnostics[0].message)
"""


def test_data_files_must_be_regular_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "mnist").mkdir()
    os.mkfifo(tmp_path / "mnist" / "train-images-idx3-ubyte")
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").symlink_to("/dev/zero")

    proc = guarded("-c", DATA_PROBE, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 7 and not any("LOADED" in line for line in lines), lines
    assert all(line.split()[1] == "s.dl:7:3" for line in lines), lines
    assert "CSV file /dev/zero is a character device, not a regular file" in lines[0]
    assert "CSV file" in lines[1] and "is a FIFO (named pipe), not a regular file" in lines[1]
    assert ".npy file /dev/zero is a character device" in lines[2]
    assert ".npy file" in lines[3] and "FIFO" in lines[3]
    assert ".npz file /dev/zero is a character device" in lines[4]
    assert ".npz file" in lines[5] and "FIFO" in lines[5]
    assert "IDX file" in lines[6] and "train-images-idx3-ubyte is a FIFO" in lines[6]


def test_loading_data_imports_no_framework(tmp_path):
    """Data errors can come before any framework import: dslc/data needs numpy only."""
    rows = "\n".join(f"{i % 3},{i % 5},{i % 2}" for i in range(20))
    (tmp_path / "d.csv").write_text("a,b,label\n" + rows + "\n")
    model = MODEL.format("dense(3, activation=softmax)").replace("f32[4]", "f32[2]")
    (tmp_path / "spec.dl").write_text(model + 'train m {\n  data = csv("d.csv", label="label")\n'
                                      "  loss = sparse_categorical_crossentropy\n"
                                      "  optimizer = adam()\n}\n")
    probe = textwrap.dedent("""
        import sys
        from pathlib import Path
        from dslc.compiler import compile_file
        from dslc.data.loaders import load_dataset
        spec = compile_file(sys.argv[1])
        ds = load_dataset(spec.train_config(), (2,), Path(sys.argv[1]).parent, 0)
        assert len(ds.x_train) > 0
        heavy = ("torch", "tensorflow", "keras", "jax", "onnx", "onnxruntime", "sklearn")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
    """)
    proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "spec.dl")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --- 7. numbers that are not finite ----------------------------------------------------------


@pytest.mark.parametrize("src,line,col,width", [
    (MODEL.format("leaky_relu(1e309)"), 3, 14, 5),
    (MODEL.format("dense(2)\n  dropout(0.5e400)"), 4, 11, 7),
    ("let x = 1e308 * 10\n" + MODEL.format("dense(2)"), 1, 9, 10),
    ("let x = -1e308 * 10\n" + MODEL.format("dense(2)"), 1, 9, 11),
    ("let big = 1e308\nlet x = big * big - big * big\n" + MODEL.format("dense(2)"), 2, 9, 9),
    ("let big = 1e308\n" + MODEL.format("leaky_relu(big * 2)"), 4, 14, 7),
    (MODEL.format("dense(2)") + "train m {\n  data = blobs()\n"
     "  loss = sparse_categorical_crossentropy\n  optimizer = sgd(lr=1e309)\n}\n", 8, 22, 5),
    (MODEL.format("dense(2)") + "train m {\n  data = blobs()\n"
     "  loss = sparse_categorical_crossentropy\n  optimizer = sgd(lr=1e308 * 1e308)\n}\n",
     8, 22, 13),
])
def test_non_finite_numbers_are_located_errors(src, line, col, width):
    (d,) = errors(src)
    assert d.message.startswith("number too large"), d.message
    assert "1.8e+308" in (d.hint or "")
    assert (d.span.line, d.span.col) == (line, col), d.span
    assert d.span.end_col is not None and d.span.end_col - d.span.col == width, d.span


def test_large_finite_numbers_are_fine():
    spec = compile_text("let a = 1e308\nlet b = a * 1.5\nlet c = 1e-400\n" +
                        MODEL.format("leaky_relu(1e300)\n  dense(2)"))
    assert spec.model().nodes[0].attrs.alpha == 1e300


# --- 10. sizes that would crash later --------------------------------------------------------


def test_a_501_dimensional_input_is_refused():
    dims = ", ".join(["1"] * 501)
    (d,) = errors(f"model m {{\n  input x: f32[{dims}]\n  dense(2)\n}}\n")
    assert d.message == "input `x` has 501 dimensions, at most 8 are allowed"
    assert (d.span.line, d.span.col) == (2, 16 + 3 * build.MAX_RANK)  # the first one too many


def test_eight_dimensions_are_allowed():
    dims = ", ".join(["2"] * 7 + ["?"])
    graph = compile_text(f"model m {{\n  input x: f32[{dims}]\n  relu\n}}\n").model()
    assert graph.nodes[0].type.shape == (2,) * 7 + (None,)


@pytest.mark.parametrize("body,message", [
    ("input x: f32[1000000000000]\n  dense(2)", "dimension 1,000,000,000,000 is too large"),
    ("input x: f32[100000, 100000]\n  dense(2)",
     "input `x` is too large: 10,000,000,000 values a sample (at most 2,147,483,647)"),
    ("input x: f32[4]\n  reshape([1, 1, 1, 1, 1, 1, 1, 1, 4])",
     "its output [1, 1, 1, 1, 1, 1, 1, 1, 4] has 9 dimensions, at most 8 are allowed"),
    ("input x: f32[40000]\n  dense(40000)\n  dense(40000)",
     "model `m` has more than 2,147,483,647 parameters (at layer `dense_2`)"),
])
def test_sizes_past_the_limits_are_located_errors(body, message):
    (d,) = errors("model m {\n  " + body + "\n}\n")
    assert message in d.message
    assert d.span.line >= 2


# --- 13. runaway input is stopped while it is parsed; long lines are cut -------------------


def test_a_200000_layer_line_is_stopped_early():
    src = "model m { input x: f32[4]\n" + "relu " * 200_000 + "}\n"
    with pytest.raises(DslError) as info:
        compile_text(src, "t.dl")
    (d,) = info.value.diagnostics
    limit = parse_module.MAX_STATEMENTS
    assert d.message == f"this file has more than {limit:,} statements; parsing stopped here"
    # The parser stopped at the statement past the limit: what it counted, not a clock.
    assert parse_module._BUDGET.statements == limit + 1
    assert d.span.line == 2 and d.span.col <= 5 * (limit + 1)
    shown = render_all(info.value, {"t.dl": src})
    assert len(shown) < 600 and max(len(line) for line in shown.splitlines()) < 200


def test_the_cli_prints_no_long_line(tmp_path):
    spec = tmp_path / "long.dl"
    spec.write_text("model m { input x: f32[4]\n" + "dense(4) " * 200_000 + "}\n")
    proc = check(spec)
    assert proc.returncode == 2 and "more than 20,000 statements" in proc.stderr
    assert len(proc.stderr) < 1000


def test_tokens_are_capped_too(monkeypatch):
    monkeypatch.setattr(parse_module, "MAX_TOKENS", 1000)
    (d,) = errors("let a = [" + "1, " * 2000 + "]\n")
    assert d.message == "this file has more than 1,000 tokens; parsing stopped here"
    assert parse_module._BUDGET.tokens == 1001


def test_statements_in_blocks_repeats_and_several_models_count(monkeypatch):
    monkeypatch.setattr(parse_module, "MAX_STATEMENTS", 50)
    body = "\n  ".join(["relu"] * 10)
    ok = "".join(f"model m{i} {{\n  input x: f32[4]\n  {body}\n}}\n" for i in range(3))
    compile_text(ok)  # 3 * (12 statements + the model)
    errors(ok + "block b() {\n  input x\n  repeat 2 {\n    " + "\n    ".join(["relu"] * 20)
           + "\n  }\n}\n")


def test_a_huge_token_is_cut_in_the_message():
    (d,) = errors(MODEL.format("dense(2 " + "z" * 100_000 + ")"))
    assert len(d.message) < 200 and "100,000 characters" in d.message


def test_long_lines_are_shown_around_the_caret():
    line = "relu " * 1000 + "frob " + "relu " * 1000
    src = "model m {\n  input x: f32[4]\n  " + line + "\n}\n"
    (d,) = errors(src)
    assert d.message == "unknown op or block `frob`"
    shown = render(d, {"t.dl": src}).splitlines()
    assert shown[1].startswith(" 3 | …") and shown[1].endswith("…")
    assert len(shown[1]) <= len(" 3 | ") + 122
    caret = shown[2].index("^")
    assert shown[1][caret:caret + 4] == "frob" and shown[2].count("^") == 4


@pytest.mark.parametrize("col", [1, 30, 61, 150, 240, 290, 300])
def test_the_window_keeps_the_caret_on_its_character(col):
    text = "".join(chr(ord("a") + i % 26) for i in range(300))
    d = Diagnostic("x", Span("f.dl", 1, col, 1, col + 1))
    _, src, carets = render(d, {"f.dl": text}).splitlines()
    assert src[carets.index("^")] == text[col - 1] and carets.count("^") == 1
    assert len(src) <= len(" 1 | ") + 122


def test_tabs_before_the_caret_move_it_too():
    shown = render(Diagnostic("x", Span("f.dl", 1, 3, 1, 8)), {"f.dl": "\t\tdense(2)"})
    _, src, carets = shown.splitlines()
    caret = carets.index("^")
    assert src[caret:caret + 5] == "dense" and carets.count("^") == 5


def test_a_long_message_is_cut():
    d = Diagnostic("m" * 5000, None, "h" * 5000)
    shown = render(d)
    assert len(shown) < 2200 and "…" in shown


def test_a_source_that_is_not_a_regular_file_is_not_read_for_a_message():
    probe = ("from dslc.diagnostics import Diagnostic, Span, render\n"
             "print(render(Diagnostic('x', Span('/dev/zero', 1, 1))))")
    proc = guarded("-c", probe)
    assert proc.returncode == 0 and proc.stdout == "/dev/zero:1:1: error: x\n", proc.stderr


# --- 14. a file without a model -------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n",
                                  "let width = 4\n"])
def test_a_file_without_a_model_is_an_error(tmp_path, text):
    spec = tmp_path / "x.dl"
    spec.write_text(text)
    proc = check(spec)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "x.dl:1:1: error: `x.dl` defines no model" in proc.stderr


def test_a_file_of_blocks_says_which_blocks(tmp_path):
    spec = tmp_path / "x.dl"
    spec.write_text("# layers\nblock a() {\n  input x\n  relu\n}\n"
                    "block b(w: int) {\n  input x\n  dense(w)\n}\n")
    proc = check(spec)
    assert proc.returncode == 2
    assert "x.dl:2:7: error: `x.dl` defines blocks `a`, `b` but no model" in proc.stderr
    assert 'use "x.dl"' in proc.stderr


# --- 15. block inputs take no type; a block may not take a built-in op's name ---------------


def test_a_typed_block_input_is_an_error():
    (d,) = errors("block b() {\n  input x: f32[4]\n  relu\n}\n" + MODEL.format("b()"))
    assert d.message == ("input `x` of block `b` has a type; a block takes the type of what "
                         "it is called with")
    assert (d.span.line, d.span.col) == (2, 3)
    assert d.hint is not None and "write `input x`" in d.hint


def test_a_typed_input_of_an_unused_block_is_an_error_too():
    (d,) = errors("block b() {\n  input x\n  input y: f32[2]\n  add(x, y)\n}\n"
                  + MODEL.format("dense(2)"))
    assert "input `y` of block `b` has a type" in d.message and d.span.line == 3


@pytest.mark.parametrize("name", ["dense", "relu", "conv2d", "add"])
def test_a_block_named_like_an_op_is_an_error(name):
    (d,) = errors(f"block {name}(n: int = 2) {{\n  input x\n  relu\n}}\n" + MODEL.format("dense(2)"))
    assert d.message == f"block `{name}` has the name of a built-in op"
    assert (d.span.line, d.span.col) == (1, 7)
    assert d.hint == f"rename the block, e.g. `my_{name}`"


def test_a_used_block_named_like_an_op_is_located_in_its_file(tmp_path):
    (tmp_path / "lib.dl").write_text("block dense(n: int) {\n  input x\n  relu\n}\n")
    spec = tmp_path / "main.dl"
    spec.write_text('use "lib.dl"\n' + MODEL.format("dense(2)"))
    with pytest.raises(DslError) as info:
        compile_file(spec)
    (d,) = info.value.diagnostics
    assert d.span is not None and d.span.file.endswith("lib.dl") and d.span.line == 1


def test_cli_exit_status(tmp_path):
    spec = tmp_path / "b.dl"
    spec.write_text("block dense() {\n  input x: f32[4]\n  relu\n}\n" + MODEL.format("relu"))
    proc = run_dslc("check", spec)
    assert proc.returncode == 2 and proc.stderr.count(": error: ") == 2
    assert "Traceback" not in proc.stderr
