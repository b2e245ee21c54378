"""Generated torch and keras source: no text from outside (the spec's file name, its model,
input and layer names) can add a statement to it, and running it writes nothing; a model
named after a module gets a file that cannot shadow that module (issue 11, items 3 and 11)."""

from __future__ import annotations

import ast
import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dslc.backends import get_backend
from dslc.backends.keras.codegen import model_function
from dslc.backends.pysource import comment, docstring, module_file, quote
from dslc.compiler import compile_file
from dslc.diagnostics import DslError

# What could end a comment, a string or a docstring, or start code, if it got through as is.
NASTY = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", '"', "'",
         '"""', "'''", "\\", "\\n", "#", ";", "`", "{", "}", "import os", "os.system('touch PWNED')",
         "\udcff", "\ufeff", "é", "💥", " "]
# Names the generated code itself uses (modules, `self`, its class and function names).
TRICKY_NAMES = ["torch", "nn", "F", "keras", "self", "super", "x", "logits", "forward",
                "reset_parameters", "build_m", "Model", "class", "def", "import", "None",
                "__class__", "__name__", "__init__", "_", "__", "l", "O", "I", "print", "exec"]

file_names = st.lists(
    st.one_of(st.sampled_from(NASTY),
              st.text(st.characters(exclude_characters="/\x00", exclude_categories=("Cs",)),
                      max_size=8),
              st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)),  # undecodable bytes
    min_size=1, max_size=8,
).map("".join).filter(lambda s: s not in ("", ".", "..") and "/" not in s)
names = st.one_of(st.sampled_from(TRICKY_NAMES),
                  st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True))

# Specs that reach every comment and docstring the generators write from a name: an image model
# with uneven `same` padding, a sequence model, two inputs and two outputs.
TEMPLATES = [
    """model {m} {{
    input {i}: f32[7, 7, 2]
    {a} = conv2d(4, kernel=3, strides=2, padding=same, activation=leaky_relu)
    {b} = avgpool2d({a}, 2, padding=same)
    flatten
    {c} = dense(3, activation=softmax)
}}""",
    """model {m} {{
    input {i}: f32[5, 3]
    {a} = simple_rnn(4, return_sequences=true)
    {b} = simple_rnn({a}, 2)
    {c} = dense({b}, 1, activation=sigmoid)
}}""",
    """model {m} {{
    input {i}: f32[4]
    input {a}: f32[4]
    {b} = concat({i}, {a})
    {c} = dense({b}, 2, activation=softmax)
    output {c}, {b}
}}""",
]


def _spec(folder: Path, file_name: str, template: str, model: str, layers: list[str]):
    path = folder / file_name
    try:
        path.write_text(template.format(m=model, i=layers[0], a=layers[1], b=layers[2],
                                        c=layers[3]))
    except (OSError, UnicodeEncodeError):  # a name too long for this file system
        assume(False)
    try:
        spec = compile_file(path)
    except DslError:  # a name the language reserves, or two layers of one name
        assume(False)
    assert spec.path.name == file_name
    return spec, spec.model()


def _is_import(stmt: ast.stmt, modules: set[str]) -> bool:
    if isinstance(stmt, ast.Import):
        return all(a.name in modules for a in stmt.names)
    return (isinstance(stmt, ast.ImportFrom) and stmt.module in modules and stmt.level == 0
            and all(a.name == "nn" for a in stmt.names))


def _is_docstring(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


def check_torch_module(source: str) -> str:
    """The statements a torch module may have, in order; returns its class's name."""
    body = ast.parse(source).body
    assert _is_docstring(body[0])
    assert all(_is_import(s, {"torch", "torch.nn.functional"}) for s in body[1:-1]), \
        [ast.dump(s) for s in body[1:-1]]
    assert len(body) in (4, 5)
    cls = body[-1]
    assert isinstance(cls, ast.ClassDef) and ast.unparse(cls.bases[0]) == "nn.Module"
    assert not cls.decorator_list and not cls.keywords
    return cls.name


def check_keras_module(source: str, function: str) -> None:
    body = ast.parse(source).body
    assert _is_docstring(body[0])
    assert _is_import(body[1], {"keras"})
    *helpers, build, main = body[2:]
    assert all(isinstance(h, ast.FunctionDef) and not h.decorator_list for h in helpers)
    assert isinstance(build, ast.FunctionDef) and build.name == function
    assert not build.decorator_list
    assert isinstance(main, ast.If)
    assert ast.unparse(main.test) == "__name__ == '__main__'"
    assert ast.unparse(main.body) == f"{function}().summary()" and not main.orelse


def _run(source: str, folder: Path) -> dict:
    """Run `source` as a script in `folder` (nothing may appear there); its namespace."""
    before = set(os.listdir(folder))
    namespace: dict = {"__name__": "__main__"}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(source, str(folder / "generated.py"), "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert set(os.listdir(folder)) == before
    assert not Path(cwd, "PWNED").exists()
    return namespace


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(file_name=file_names, template=st.sampled_from(TEMPLATES), model=names,
       layers=st.lists(names, min_size=4, max_size=4, unique=True))
def test_outside_text_never_becomes_code(file_name, template, model, layers):
    torch = pytest.importorskip("torch")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec, graph = _spec(folder, file_name, template, model, layers)
        source = get_backend("torch").generate(spec, graph)
        cls = check_torch_module(source)
        namespace = _run(source, folder)
        module = namespace[cls]()
        assert isinstance(module, torch.nn.Module)
        check_keras_module(get_backend("keras").generate(spec, graph), model_function(graph))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(file_name=file_names, template=st.sampled_from(TEMPLATES), model=names,
       layers=st.lists(names, min_size=4, max_size=4, unique=True))
def test_generated_keras_runs_and_writes_nothing(file_name, template, model, layers):
    pytest.importorskip("keras")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec, graph = _spec(folder, file_name, template, model, layers)
        source = get_backend("keras").generate(spec, graph)
        check_keras_module(source, model_function(graph))
        _run(source, folder)


def test_the_file_name_from_the_issue_is_a_comment(tmp_path):
    name = 'evil\nimport os; os.system("touch PWNED")\n#.dl'
    spec, graph = _spec(tmp_path, name, TEMPLATES[2], "m", ["a", "b", "c", "d"])
    for target in ("torch", "keras"):
        source = get_backend(target).generate(spec, graph)
        assert source.splitlines()[0].startswith("# Generated by dslc ")
        assert "\nimport os" not in source and "PWNED" in source.splitlines()[0]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_quote_comment_docstring_hold_any_text(text):
    assert ast.literal_eval(quote(text)) == text
    line = f"x = 1  # {comment(text)}\n"
    assert len(line.splitlines()) == 1 and ast.dump(ast.parse(line)) == ast.dump(ast.parse("x = 1"))
    doc = f'"""{docstring(text)}"""'
    assert len(doc.splitlines()) == 1
    assert isinstance(ast.literal_eval(doc), str)


# -- file names that cannot shadow a module (item 11) ----------------------------------------

@pytest.mark.parametrize("model", ["torch", "keras", "tensorflow", "numpy", "json", "os",
                                   "typing", "dslc", "safetensors"])
def test_a_model_named_after_a_module_gets_a_suffix(model):
    assert module_file(model) == f"{model}_model.py"


def test_other_models_keep_their_name():
    assert module_file("digits_cnn") == "digits_cnn.py"
    assert module_file("tiny_resnet") == "tiny_resnet.py"


@pytest.mark.parametrize("model, target", [("torch", "torch"), ("keras", "keras")])
def test_a_module_named_like_its_framework_runs(tmp_path, model, target):
    pytest.importorskip(target)
    path = tmp_path / "spec.dl"
    path.write_text(TEMPLATES[2].format(m=model, i="a", a="b", b="c", c="d"))
    spec = compile_file(path)
    written = get_backend(target).compile(spec, spec.model(), tmp_path / "out")
    assert written == tmp_path / "out" / f"{model}_model.py"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)  # the generated file needs only its framework
    res = subprocess.run([sys.executable, written.name], cwd=written.parent, capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in written.parent.iterdir()) == [written.name]
