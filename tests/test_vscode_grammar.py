"""The VS Code extension: its TextMate grammar is run over every spec and example (a small
TextMate engine below, on Python's `re`) and each token the parser's lexer finds must get
the intended scope; the manifest names files that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
from lark import Lark

from dslc.lsp import textmate
from dslc.ops import all_ops
from dslc.parse import KEYWORDS, LARK_OPTIONS, grammar_text

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"
SPECS = sorted([*(ROOT / "specs").glob("*.dl"), *(ROOT / "examples").glob("*.dl")])


@lru_cache(maxsize=1)
def load_grammar() -> dict:
    return json.loads((VSCODE / "syntaxes" / "dl.tmLanguage.json").read_text(encoding="utf-8"))


class Engine:
    """Enough of TextMate to check a grammar: match/begin/end rules, captures, includes
    (`#name`, `$self`), a rule stack carried across lines; the earliest match wins, the end
    pattern on a tie, then the first rule listed."""

    def __init__(self, grammar: dict):
        self.grammar = grammar
        self.cache: dict[str, re.Pattern] = {}

    def rx(self, pattern: str) -> re.Pattern:
        if pattern not in self.cache:
            self.cache[pattern] = re.compile(pattern)
        return self.cache[pattern]

    def rules(self, patterns: list[dict]) -> list[dict]:
        out = []
        for rule in patterns:
            if "include" in rule:
                ref = rule["include"]
                target = self.grammar if ref == "$self" else self.grammar["repository"][ref[1:]]
                out.extend(self.rules(target["patterns"]) if "patterns" in target and
                           "begin" not in target and "match" not in target else [target])
            elif "patterns" in rule and "begin" not in rule and "match" not in rule:
                out.extend(self.rules(rule["patterns"]))
            else:
                out.append(rule)
        return out

    def tokenize(self, text: str) -> list[list[tuple[str, ...]]]:
        """The scopes of every character, line by line."""
        stack: list[tuple[dict, tuple[str, ...]]] = [(self.grammar, ("source.dl",))]
        lines = []
        for line in text.split("\n"):
            scopes: list[tuple[str, ...]] = [()] * len(line)
            pos = 0
            for _ in range(4 * len(line) + 8):  # a bound: a zero-width match cannot loop
                rule, base = stack[-1]
                best = None
                if "end" in rule:
                    m = self.rx(rule["end"]).search(line, pos)
                    if m:
                        best = (m, rule, "end")
                for r in self.rules(rule["patterns"]):
                    m = self.rx(r.get("match") or r["begin"]).search(line, pos)
                    if m and (best is None or m.start() < best[0].start()):
                        best = (m, r, "match" if "match" in r else "begin")
                if best is None:
                    break
                m, r, kind = best
                scopes[pos:m.start()] = [base] * (m.start() - pos)
                if kind == "end":
                    self.paint(scopes, m, base, rule.get("endCaptures", {}))
                    stack.pop()
                else:
                    name = (r["name"],) if "name" in r else ()
                    self.paint(scopes, m, base + name,
                               r.get("captures", r.get("beginCaptures", {})))
                    if kind == "begin":
                        stack.append((r, base + name))
                pos = m.end() + (1 if kind == "match" and m.end() == m.start() else 0)
                if pos > len(line) or (pos == len(line) and kind == "match"):
                    break
            scopes[pos:] = [stack[-1][1]] * (len(line) - pos)
            lines.append(scopes)
        return lines

    @staticmethod
    def paint(scopes, m: re.Match, base: tuple[str, ...], captures: dict) -> None:
        for i in range(m.start(), m.end()):
            scopes[i] = base
        for group, cap in captures.items():
            g = int(group)
            if m.group(g) is not None:
                for i in range(m.start(g), m.end(g)):
                    scopes[i] = base + (cap["name"],)


def lark_tokens(text: str):
    lexer = Lark(grammar_text(), **{**LARK_OPTIONS, "lexer": "basic"})
    return list(lexer.lex(text, dont_ignore=True))


def expected_scope(tok, following: str, in_parens: bool, in_train: bool) -> str | None:
    if tok.type == "COMMENT":
        return "comment.line"
    if tok.type == "STRING":
        return "string.quoted.double"
    if tok.type == "NUMBER":
        return "constant.numeric"
    if str(tok).lower() in KEYWORDS and tok.type != "NAME":
        return "keyword.control"
    if tok.type == "NAME":
        kwarg = following.lstrip().startswith("=")
        if kwarg and in_parens:
            return "variable.parameter"
        if kwarg and in_train:
            return "variable.other.property.setting"
        if str(tok) in ("true", "false"):
            return "constant.language"
        if str(tok) in all_ops() and not kwarg and not in_train:  # `linear(...)` data there
            return "support.function"
    return None


def check_file(text: str) -> list[str]:
    """Each token whose scope the grammar must give, against what it gives."""
    engine = Engine(load_grammar())
    scopes = engine.tokenize(text)
    problems = []
    parens = braces = 0
    train = False  # inside a `train` item
    for tok in lark_tokens(text):
        if tok.type == "WS":
            continue
        parens += {"LPAR": 1, "RPAR": -1}.get(tok.type, 0)
        braces += {"LBRACE": 1, "RBRACE": -1}.get(tok.type, 0)
        if str(tok) == "train" and tok.type != "NAME":
            train = True
        elif braces == 0 and tok.type == "RBRACE":
            train = False
        line, col = tok.line - 1, tok.column - 1
        following = text[tok.end_pos:tok.end_pos + 3]
        want = expected_scope(tok, following, parens > 0, train and braces > 0)
        stacks = [scopes[line][i] for i in range(col, col + len(str(tok)))]
        got = {stack[-1] for stack in stacks}
        if want is None:
            if tok.type not in ("COMMENT", "STRING") and \
                    any(s.startswith(("comment", "string")) for stack in stacks for s in stack):
                problems.append(f"{tok.line}:{tok.column} {str(tok)!r} is inside {got}")
            continue
        if not stacks or not all(any(s.startswith(want) for s in stack) for stack in stacks):
            problems.append(f"{tok.line}:{tok.column} {str(tok)!r}: want {want}, got {got}")
    return problems


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_grammar_scopes_every_token_of_the_specs(spec):
    assert check_file(spec.read_text(encoding="utf-8")) == []


def test_grammar_on_tricky_text():
    text = ('use "a # not a comment.dl"  # a comment with "quotes" and dense(1)\n'
            'let rate = .5e-3 + 2 * 1.\n'
            'block twice(n: int = 2) {\n'
            '    input x\n'
            '    a, b = x, x\n'
            '    output add(dense(a, n, use_bias=false), leaky_relu(b, alpha=0.2))\n'
            '}\n'
            'model m { input x: f32[?, 4]; h = twice(x, n=3); output dropout(h, rate) }\n'
            'train m {\n'
            '    data = npz("data \\"x\\".npz", test=0.25)\n'
            '    optimizer = adam(lr=rate)\n'
            '}\n')
    assert check_file(text) == []
    scopes = Engine(load_grammar()).tokenize(text)
    assert scopes[2][len("block ")][-1] == "entity.name.function.block.dl"
    assert scopes[7][len("model ")][-1] == "entity.name.type.model.dl"
    assert scopes[7][text.split("\n")[7].index("f32")][-1] == "storage.type.dtype.dl"
    assert scopes[9][4][-1] == "variable.other.property.setting.dl"
    assert scopes[9][text.split("\n")[9].index('\\"')][-1] == "constant.character.escape.dl"


def test_grammar_regexes_compile_and_are_current():
    """Every pattern compiles in Python's `re`; the file is what the registry makes."""
    def walk(node):
        if isinstance(node, dict):
            for key in ("match", "begin", "end"):
                if key in node:
                    re.compile(node[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_grammar())
    on_disk = (VSCODE / "syntaxes" / "dl.tmLanguage.json").read_text(encoding="utf-8")
    assert on_disk == textmate.render(), "run `python -m dslc.lsp.textmate`"
    ops = re.search(r"\\b\((.*?)\)\\b", load_grammar()["repository"]["op"]["match"])
    assert ops is not None and set(ops.group(1).split("|")) == set(all_ops())


def test_extension_manifest():
    manifest = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    (language,) = manifest["contributes"]["languages"]
    assert language["extensions"] == [".dl"]
    assert (VSCODE / language["configuration"]).is_file()
    (grammar,) = manifest["contributes"]["grammars"]
    assert grammar["language"] == language["id"]
    assert grammar["scopeName"] == load_grammar()["scopeName"]
    assert (VSCODE / grammar["path"]).is_file()
    assert (VSCODE / manifest["main"]).is_file()
    assert manifest["contributes"]["configuration"]["properties"]["dslc.server.args"]["default"] == ["lsp"]
    config = json.loads((VSCODE / "language-configuration.json").read_text(encoding="utf-8"))
    assert config["comments"]["lineComment"] == "#"
    for pattern in (config["wordPattern"], *config["indentationRules"].values(),
                    *config["folding"]["markers"].values()):
        re.compile(pattern)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_extension_client_is_valid_javascript():
    result = subprocess.run(["node", "--check", str(VSCODE / "extension.js")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    source = (VSCODE / "extension.js").read_text(encoding="utf-8")
    assert "vscode-languageclient/node" in source and "TransportKind.stdio" in source
