"""Text → syntax tree. Lark (LALR) does the parsing; this turns its errors into sentences."""

from __future__ import annotations

import marshal
import math
import re
import sys
import zlib
from functools import lru_cache
from pathlib import Path

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from dslc.diagnostics import Diagnostic, DslError, Span
from dslc.ir import ast

KEYWORDS = {"model", "block", "train", "input", "output", "let", "use", "repeat", "for", "in"}

# What a user means by each terminal, for "expected ..." messages.
TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "LBRACE": "`{`",
    "RBRACE": "`}`", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`",
    "COMMA": "`,`", "EQUAL": "`=`", "COLON": "`:`", "SEMICOLON": "`;`", "PLUS": "`+`",
    "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`", "QMARK": "`?`", "$END": "end of file",
}


# Precomputed LALR tables (building them costs ~45 ms a run); regenerate with
# `python -m dslc.parse` after changing the grammar. A stale or unreadable file is ignored.
# marshal, not JSON: plain data only (dicts, lists, strings, numbers), it decodes in half the
# time with int keys intact, and the json module's import is 1 ms of `dslc check` too. Unlike
# pickle it cannot make objects of any class; the file ships in the package like the code.
TABLES = Path(__file__).with_name("_tables.marshal")

LARK_OPTIONS = dict(parser="lalr", propagate_positions=True, maybe_placeholders=False)
# Two lexers for one grammar. Lark's contextual lexer (the language's definition) lets a
# keyword be a name where the keyword cannot stand (`train = dense(x, 3)` in a model), but
# builds a scanner per parser state: 15 ms of `dslc check`. The basic lexer makes every keyword
# a keyword. Where the basic one parses a file, both give the same tokens (a keyword token was
# acceptable wherever it stood, so the contextual lexer would have made it a keyword too);
# where it fails, the file is parsed again with the contextual lexer, which decides.
LEXERS = ("basic", "contextual")


def grammar_text() -> str:
    # The file itself where the package is a folder (a wheel, an editable install): importing
    # importlib.resources (and zipfile with it) would cost `dslc check` 3 ms. A wheel has it
    # beside this module; an editable install maps `dslc.grammars` to the repository's folder.
    beside = Path(__file__).with_name("grammars") / "dslc.lark"
    if beside.is_file():
        return beside.read_text(encoding="utf-8")
    import importlib.util

    spec = importlib.util.find_spec("dslc.grammars")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "dslc.lark"
        if path.is_file():
            return path.read_text(encoding="utf-8")
    from importlib import resources

    return resources.files("dslc.grammars").joinpath("dslc.lark").read_text(encoding="utf-8")


def grammar_digest(text: str) -> str:
    # Only tells whether the saved tables are this grammar's: crc32 (zlib is loaded anyway)
    # instead of sha256, whose OpenSSL load costs `dslc check` 3 ms.
    key = f"{text}{LARK_OPTIONS}{LEXERS}{lark.__version__}".encode()
    return f"{len(key)}-{zlib.crc32(key):08x}"


# What one file may hold. A model has at most 100,000 layers once blocks and `repeat` are
# expanded (dslc/passes/build.py), but parsing costs ~50 us a statement: a runaway file is
# stopped while it is parsed, not after. Large models are written with blocks and `repeat`.
MAX_STATEMENTS = 20_000
MAX_TOKENS = 10 * MAX_STATEMENTS


class _Exceeded(Exception):
    def __init__(self, what: str, limit: int, where):
        super().__init__(what)
        self.what, self.limit, self.where = what, limit, where


class _Budget:
    """Counts tokens and statements while Lark parses, and stops it at the limits. One parse
    at a time (the parser is shared); `parse` resets it."""

    always_accept: tuple = ()  # Lark's post-lexer interface

    def __init__(self) -> None:
        self.tokens = self.statements = 0
        self.last: Token | None = None
        self.before: Token | None = None  # the token before `last`, for error messages

    def reset(self) -> None:
        self.tokens = self.statements = 0
        self.last = self.before = None

    def process(self, stream):
        for tok in stream:
            self.tokens += 1
            self.before, self.last = self.last, tok
            if self.tokens > MAX_TOKENS:
                raise _Exceeded("tokens", MAX_TOKENS, tok)
            yield tok

    def statement(self, rule: str):
        def build(children):
            self.statements += 1
            if self.statements > MAX_STATEMENTS:
                where = next((c for c in children if isinstance(c, Token)), self.last)
                raise _Exceeded("statements", MAX_STATEMENTS, where)
            return lark.Tree(rule, children)
        return build

    def __getattr__(self, rule: str):
        # Lark asks the transformer for a callback for each rule; statements are counted.
        if rule in STATEMENT_RULES:
            return self.statement(rule)
        raise AttributeError(rule)


STATEMENT_RULES = {"input_decl", "output_stmt", "let_stmt", "assign", "apply", "repeat", "for_stmt",
                   "empty", "use_stmt", "model", "block", "train", "setting", "param"}
_BUDGET = _Budget()


@lru_cache(maxsize=2)
def _parser(lexer: str = "basic") -> Lark:
    text = grammar_text()
    tables = load_tables(lexer)
    hooks = dict(transformer=_BUDGET, postlex=_BUDGET)
    if tables is not None and tables["digest"] == grammar_digest(text):
        return Lark._load_from_dict(tables["data"], tables["memo"], **hooks)
    return Lark(text, **LARK_OPTIONS, lexer=lexer, **hooks)


def load_tables(lexer: str = "basic") -> dict | None:
    """The saved tables of one lexer: {digest, data, memo}. Each lexer's are marshalled apart
    inside the file, so a run decodes only the ones it uses."""
    try:
        saved = marshal.loads(TABLES.read_bytes())
        tables = marshal.loads(saved[lexer])
        if not isinstance(tables, dict) or not {"data", "memo"} <= tables.keys():
            return None
        tables["digest"] = saved["digest"]
        return tables
    except (OSError, ValueError, EOFError, TypeError, KeyError):
        return None


def write_tables(path: Path) -> None:
    from lark.grammar import Rule
    from lark.lexer import TerminalDef

    text = grammar_text()
    saved: dict = {"generated_by": "python -m dslc.parse", "digest": grammar_digest(text)}
    for lexer in LEXERS:
        data, memo = Lark(text, **LARK_OPTIONS, lexer=lexer).memo_serialize([TerminalDef, Rule])
        saved[lexer] = marshal.dumps({"data": data, "memo": memo})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(marshal.dumps(saved))
    tmp.replace(path)


def _token_word(tok_type: str) -> str:
    if tok_type in TOKEN_WORDS:
        return TOKEN_WORDS[tok_type]
    if tok_type.isupper() and tok_type.isalpha() and tok_type.lower() in KEYWORDS:
        return f"`{tok_type.lower()}`"
    return tok_type.lower()


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if len(tok.value) > 40:
        return f"`{tok.value[:30]}…` ({len(tok.value):,} characters)"
    return f"`{tok.value}`" if tok.value else _token_word(tok.type)


def _keyword_list() -> str:
    return ", ".join(f"`{k}`" for k in sorted(KEYWORDS))


def _expected(expected) -> str:
    words = sorted({_token_word(t) for t in expected if not t.startswith("__")})
    if len(words) > 6:
        words = words[:6] + ["..."]
    return ", ".join(words)


def _syntax_error(err: UnexpectedInput, file: str, text: str) -> Diagnostic:
    line, col = max(err.line, 1), max(err.column, 1)
    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream
        ch = text[pos] if pos is not None and pos < len(text) else "?"
        if ch == '"':
            return Diagnostic("unterminated string", Span(file, line, col),
                              'close it with `"` on the same line')
        hint = "strings use double quotes" if ch == "'" else None
        if not ch.isprintable() or ch.isspace():
            return Diagnostic(f"unexpected character U+{ord(ch):04X}", Span(file, line, col), hint)
        return Diagnostic(f"unexpected character `{ch}`", Span(file, line, col), hint)
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        return Diagnostic("unexpected end of file", Span(file, line, col),
                          "a `{`, `(` or `[` is not closed")
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    if tok.type == tok.value.upper() and tok.value in KEYWORDS and "NAME" in err.expected:
        # The lexer makes every keyword a keyword, wherever it stands (`in = dense(2)`).
        return Diagnostic(f"`{tok.value}` is a keyword, it cannot be used as a name",
                          Span(file, line, col, tok.end_line, tok.end_column),
                          f"choose another name; the keywords are {_keyword_list()}")
    # the token before `=`: the last one the parser took, unless `=` itself got that far
    before = _BUDGET.before if _BUDGET.last is not None and \
        _BUDGET.last.start_pos == tok.start_pos else _BUDGET.last
    if (tok.type == "EQUAL" and before is not None and before.value in KEYWORDS
            and before.type == before.value.upper()):  # `for = dense(x, 2)`
        return Diagnostic(f"`{before.value}` is a keyword, it cannot be used as a name",
                          Span(file, before.line or line, before.column or col,
                               before.end_line, before.end_column),
                          f"choose another name; the keywords are {_keyword_list()}")
    message = f"unexpected {_describe(tok)}, expected {_expected(err.expected)}"
    hint = None
    if tok.type == "EQUAL":
        hint = "only a name can be assigned to: `name = op(...)`"
    elif "RPAR" in err.expected and "COMMA" in err.expected:
        hint = "separate arguments with `,`"
    elif tok.type == "RBRACE" and "RBRACE" not in err.expected:
        hint = "an expression is unfinished before `}`"
    end = Span(file, line, col, tok.end_line, tok.end_column)
    return Diagnostic(message, end, hint)


def _too_large(err: _Exceeded, file: str) -> Diagnostic:
    where = err.where
    span = Span(file, 1, 1) if where is None else Span(file, where.line or 1, where.column or 1)
    return Diagnostic(f"this file has more than {err.limit:,} {err.what}; parsing stopped here",
                      span, "write large models with blocks and `repeat`, not statement by "
                            "statement")


# Integers are 64-bit; deeper trees than this would exhaust Python's stack downstream.
MAX_INT = 2**63 - 1
MAX_FLOAT = sys.float_info.max  # numbers are 64-bit floats; none is infinite or NaN
MAX_DEPTH = 100


def _check_depth(tree, file: str) -> None:
    """Reject trees nested deeper than MAX_DEPTH (iteratively, before anything recurses):
    one error for each top-level item that is."""
    problems = []
    for item in tree.children:
        stack = [(item, 2)] if isinstance(item, lark.Tree) else []
        while stack:
            t, depth = stack.pop()
            if depth > MAX_DEPTH:
                meta = t.meta
                known = not getattr(meta, "empty", True)
                span = Span(file, meta.line if known else 1, meta.column if known else 1)
                problems.append(Diagnostic(
                    f"expression nested too deeply (more than {MAX_DEPTH} levels)", span,
                    "split it into smaller pieces with `let` or named layers"))
                break
            stack.extend((c, depth + 1) for c in reversed(t.children) if isinstance(c, lark.Tree))
    if problems:
        raise DslError(problems)


ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t"}
_ESCAPE = re.compile(r"\\(.)")


def _unquote(tok: Token, span: Span) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1) not in ESCAPES:
            raise DslError(f"unknown escape `\\{m.group(1)}` in a string", span,
                           'strings know `\\"`, `\\\\`, `\\n` and `\\t`')
        return ESCAPES[m.group(1)]

    text = _ESCAPE.sub(sub, str(tok)[1:-1])
    if "\0" in text:
        raise DslError("a string cannot hold a NUL character", span)
    return text


@v_args(meta=True, inline=True)
class _ToAst(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file
        self.problems: list[Diagnostic] = []

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.file, 1, 1)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok_span(self, tok: Token) -> Span:
        # The lexer always sets a token's position; the types allow None for hand-made ones.
        return Span(self.file, tok.line or 1, tok.column or 1, tok.end_line, tok.end_column)

    # expressions
    def number(self, meta, tok):
        text = str(tok)
        is_int = all(c.isdigit() for c in text)
        if (is_int and (len(text.lstrip("0")) > 19 or int(text) > MAX_INT)) or len(text) > 400:
            # Reported with the file's other such errors once the whole tree is transformed.
            self.problems.append(Diagnostic("number too large", self._tok_span(tok),
                                            f"integers go up to {MAX_INT:,}"))
            return ast.Num(span=self._span(meta), value=0)
        value = int(text) if is_int else float(text)
        if not math.isfinite(value):  # 1e309: backends would get `inf`
            self.problems.append(Diagnostic("number too large", self._tok_span(tok),
                                            f"numbers go up to about {MAX_FLOAT:.3g}"))
            return ast.Num(span=self._span(meta), value=0)
        return ast.Num(span=self._span(meta), value=value)

    def string(self, meta, tok):
        return ast.Str(span=self._span(meta), value=_unquote(tok, self._tok_span(tok)))

    def name(self, meta, tok):
        return ast.Name(span=self._span(meta), id=str(tok))

    def kwarg(self, meta, name, value):
        return ast.KwArg(span=self._span(meta), name=str(name), value=value)

    def call(self, meta, func, *args):
        pos = [a for a in args if not isinstance(a, ast.KwArg)]
        kws = [a for a in args if isinstance(a, ast.KwArg)]
        return ast.Call(span=self._span(meta), func=str(func), func_span=self._tok_span(func),
                        args=pos, kwargs=kws)

    def list(self, meta, *items):
        return ast.ListExpr(span=self._span(meta), items=list(items))

    def _bin(self, meta, op: str, left, right) -> ast.BinOp:
        return ast.BinOp(span=self._span(meta), op=op, left=left, right=right)

    def add(self, meta, left, right):
        return self._bin(meta, "+", left, right)

    def sub(self, meta, left, right):
        return self._bin(meta, "-", left, right)

    def mul(self, meta, left, right):
        return self._bin(meta, "*", left, right)

    def div(self, meta, left, right):
        return self._bin(meta, "/", left, right)

    def neg(self, meta, operand):
        return ast.Neg(span=self._span(meta), operand=operand)

    def dynamic_dim(self, meta):
        return ast.Dynamic(span=self._span(meta))

    # statements
    def tensor_type(self, meta, dtype, *dims):
        return (str(dtype), list(dims), self._tok_span(dtype))

    def input_decl(self, meta, name, ttype=None):
        if ttype is None:
            return ast.InputDecl(span=self._span(meta), name=str(name))
        dtype, dims, _ = ttype
        return ast.InputDecl(span=self._span(meta), name=str(name), dtype=dtype, dims=dims)

    def output_stmt(self, meta, *values):
        return ast.Output(span=self._span(meta), values=list(values))

    def let_stmt(self, meta, name, value):
        return ast.Let(span=self._span(meta), name=str(name), value=value)

    def assign(self, meta, *parts):
        *targets, value = parts
        return ast.Assign(span=self._span(meta), targets=[str(t) for t in targets], value=value)

    def apply(self, meta, value):
        return ast.Apply(span=self._span(meta), value=value)

    def empty(self, meta):
        return None

    def repeat(self, meta, count, *body):
        return ast.Repeat(span=self._span(meta), count=count, body=[s for s in body if s])

    def for_stmt(self, meta, var, items, *body):
        stmts = [s for s in body if s]
        if not stmts:
            keyword = Span(self.file, meta.line, meta.column, meta.line, meta.column + 3)
            self.problems.append(Diagnostic(
                "this `for` loop has an empty body", keyword,
                f"put the layers to make for each `{var}` between the braces"))
        return ast.For(span=self._span(meta), var=str(var), var_span=self._tok_span(var),
                       items=items, body=stmts)

    # items
    def param(self, meta, name, type_, default=None):
        return ast.Param(span=self._span(meta), name=str(name), type=str(type_), default=default)

    def model(self, meta, name, *body):
        return ast.Model(span=self._tok_span(name), name=str(name), body=[s for s in body if s])

    def block(self, meta, name, *rest):
        params = [p for p in rest if isinstance(p, ast.Param)]
        body = [s for s in rest if s is not None and not isinstance(s, ast.Param)]
        return ast.Block(span=self._tok_span(name), name=str(name), params=params, body=body)

    def setting(self, meta, name, value):
        return ast.Setting(span=self._tok_span(name), name=str(name), value=value)

    def train(self, meta, name, *settings):
        return ast.Train(span=self._tok_span(name), model=str(name), settings=list(settings))

    def use_stmt(self, meta, path):
        return ast.Use(span=self._span(meta), path=_unquote(path, self._tok_span(path)))

    def start(self, meta, *items):
        return list(items)


def parse(text: str, file: str = "<input>") -> ast.Program:
    """Parse one .dl file. Raises DslError with a located, readable message."""
    if text.startswith("\ufeff"):  # a UTF-8 byte order mark, as some editors write
        text = text[1:]
    try:
        try:
            _BUDGET.reset()
            tree = _parser("basic").parse(text)
        except UnexpectedInput:
            _BUDGET.reset()
            tree = _parser("contextual").parse(text)
    except UnexpectedInput as err:
        raise DslError(_syntax_error(err, file, text)) from None
    except RecursionError:
        raise DslError("spec nested too deeply", Span(file, 1, 1)) from None
    except _Exceeded as err:
        raise DslError(_too_large(err, file)) from None
    _check_depth(tree, file)
    to_ast = _ToAst(file)
    try:
        items = to_ast.transform(tree)
        if to_ast.problems:
            raise DslError(to_ast.problems)
        return ast.Program(file=file, items=items)
    except VisitError as err:
        if isinstance(err.orig_exc, DslError):
            raise err.orig_exc from None
        if isinstance(err.orig_exc, RecursionError | OverflowError | ValueError):
            raise DslError("expression too large or nested too deeply", Span(file, 1, 1)) from None
        raise
    except RecursionError:
        raise DslError(f"expression nested too deeply (more than {MAX_DEPTH} levels)",
                       Span(file, 1, 1)) from None


if __name__ == "__main__":
    write_tables(TABLES)
