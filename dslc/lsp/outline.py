"""A forgiving, lexical view of a .dl file for the editor: tokens, top-level items and the
names each model or block body defines, with their places.

The compiler needs text that parses; an editor asks about text being typed. This view never
fails: it reads what it can and stops an unclosed body where the next item begins. Positions
are 0-based lines and code-point columns (the server converts them to the client's units).
"""

from __future__ import annotations

import bisect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from dslc import stdlib
from dslc.parse import KEYWORDS

_TOKEN = re.compile(r"""
    (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"?)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<space>\s+)
  | (?P<punct>.)
""", re.VERBOSE)

# Items start with these; inside a body one of them means the body was left open.
ITEM_KEYWORDS = ("model", "block", "train", "use")


class Token(NamedTuple):  # a tuple: a 20,000-line spec makes 200,000 of them
    kind: str  # name, number, string, comment, punct
    text: str
    start: int  # offsets into the text
    end: int
    line: int
    col: int

    @property
    def is_name(self) -> bool:
        return self.kind == "name" and self.text not in KEYWORDS


def tokenize(text: str) -> list[Token]:
    tokens = []
    line, line_start = 0, 0
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "punct"
        if kind != "space":
            tokens.append(Token(kind, m.group(), m.start(), m.end(), line, m.start() - line_start))
        newlines = m.group().count("\n")
        if newlines:
            line += newlines
            line_start = m.start() + m.group().rindex("\n") + 1
    return tokens


@dataclass(frozen=True)
class Def:
    """A name a file defines: `kind` is input, binding, let, param, loop, block or model."""

    name: str
    kind: str
    tok: Token
    visible: int  # references from this offset on see it
    value: tuple[int, int] | None = None  # offsets of the defining expression, if any
    until: int | None = None  # references up to this offset see it (a loop variable: its body)


@dataclass
class Item:
    kind: str  # model, block, train, let, use
    name: str
    tok: Token  # the name (the path string of a `use`)
    start: int  # offset of the keyword
    end: int  # offset after the item (the closing brace, or where an unclosed body stops)
    body: tuple[int, int] | None = None  # offsets just inside the braces
    params: list[Def] = field(default_factory=list)
    defs: list[Def] = field(default_factory=list)
    value: tuple[int, int] | None = None  # a `let`'s expression


@dataclass
class Outline:
    text: str
    tokens: list[Token]  # without comments
    comments: list[Token]
    items: list[Item]
    starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.starts = [t.start for t in self.tokens]

    def after(self, tok: Token) -> Token | None:
        """The token after `tok`, comments left out."""
        k = bisect.bisect_right(self.starts, tok.start)
        return self.tokens[k] if k < len(self.tokens) else None

    def item_at(self, offset: int) -> Item | None:
        """The model, block or train whose body holds `offset`."""
        for item in self.items:
            if item.body is not None and item.body[0] <= offset <= item.body[1]:
                return item
        return None

    def token_at(self, offset: int) -> Token | None:
        """The token under `offset`, or the name just before it (a cursor after `dense|`)."""
        for tok in self.comments:
            if tok.start <= offset < tok.end:
                return tok
        before = None
        for tok in self.tokens:
            if tok.start <= offset < tok.end:
                return tok
            if tok.end == offset and tok.kind == "name":
                before = tok
            if tok.start > offset:
                break
        return before

    def before(self, offset: int) -> list[Token]:
        """The tokens that end at or before `offset`."""
        return [t for t in self.tokens if t.end <= offset]

    def top_level(self, kind: str) -> list[Item]:
        return [item for item in self.items if item.kind == kind]

    def uses(self) -> list[Item]:
        return self.top_level("use")


def unquote(text: str) -> str:
    body = text[1:-1] if len(text) >= 2 and text.endswith('"') else text[1:]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def outline(text: str) -> Outline:
    all_tokens = tokenize(text)
    tokens = [t for t in all_tokens if t.kind != "comment"]
    comments = [t for t in all_tokens if t.kind == "comment"]
    items: list[Item] = []
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < n else None
        if tok.text == "use" and nxt is not None and nxt.kind == "string":
            items.append(Item("use", unquote(nxt.text), nxt, tok.start, nxt.end))
            i += 2
        elif tok.text == "let" and nxt is not None and nxt.is_name:
            j, end, value = _let_value(tokens, i + 2, nxt.end)
            items.append(Item("let", nxt.text, nxt, tok.start, end, value=value))
            i = j
        elif tok.text in ("model", "block", "train") and nxt is not None and nxt.is_name:
            i = _body_item(text, tokens, i, items)
        else:
            i += 1
    return Outline(text, tokens, comments, items)


def _let_value(tokens: list[Token], j: int, after_name: int,
               stop: int | None = None) -> tuple[int, int, tuple[int, int] | None]:
    """(index after the let, its end offset, the value's offsets) for `let NAME` at j."""
    if j < len(tokens) and tokens[j].text == "=":
        k, end = expression_end(tokens, j + 1, stop)
        value = (tokens[j + 1].start, end) if k > j + 1 else None
        return k, max(end, tokens[j].end), value
    return j, after_name, None


def _body_item(text: str, tokens: list[Token], i: int, items: list[Item]) -> int:
    kw, name = tokens[i], tokens[i + 1]
    item = Item(kw.text, name.text, name, kw.start, name.end)
    items.append(item)
    j = i + 2
    if kw.text == "block" and j < len(tokens) and tokens[j].text == "(":
        j = _params(tokens, j, item)
    if j >= len(tokens) or tokens[j].text != "{":
        return j
    open_ = tokens[j]
    depth, k = 0, j
    while k < len(tokens):
        t = tokens[k]
        if t.text in ITEM_KEYWORDS and k > j:
            break  # the body was left open: the next item starts here
        if t.text == "{":
            depth += 1
        elif t.text == "}":
            depth -= 1
            if depth == 0:
                break
        k += 1
    closed = k < len(tokens) and tokens[k].text == "}"
    close = tokens[k].start if k < len(tokens) else len(text)
    item.body = (open_.end, close)
    item.end = close + 1 if closed else close
    if kw.text != "train":
        item.defs = _body_defs(tokens, j + 1, k)
    return k + 1 if closed else k


def _params(tokens: list[Token], j: int, item: Item) -> int:
    """Parameters of `block name(a: int, b: float = 1)`; returns the index after `)`."""
    depth = 0
    k = j
    while k < len(tokens):
        t = tokens[k]
        if t.text in ("{", *ITEM_KEYWORDS):
            return k
        if t.text in "([":
            depth += 1
        elif t.text in ")]":
            depth -= 1
            if depth == 0:
                return k + 1
        elif depth == 1 and t.is_name and tokens[k - 1].text in ("(", ",") and \
                k + 1 < len(tokens) and tokens[k + 1].text == ":":
            item.params.append(Def(t.text, "param", t, 0))
        k += 1
    return k


def _body_defs(tokens: list[Token], start: int, stop: int) -> list[Def]:
    """Inputs, bindings, lets and loop variables of a model or block body (tokens[start:stop])."""
    defs: list[Def] = []
    depth = 0
    k = start
    while k < stop:
        t = tokens[k]
        if t.text in "([":
            depth += 1
        elif t.text in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and t.text == "input" and k + 1 < stop and tokens[k + 1].is_name:
            name = tokens[k + 1]
            defs.append(Def(name.text, "input", name, name.end))
        elif depth == 0 and t.text == "let" and k + 1 < stop and tokens[k + 1].is_name:
            name = tokens[k + 1]
            j, end, value = _let_value(tokens, k + 2, name.end, stop)
            defs.append(Def(name.text, "let", name, end, value))
            k = max(j, k + 2)
            continue
        elif depth == 0 and t.text == "for" and k + 2 < stop and tokens[k + 1].is_name \
                and tokens[k + 2].text == "in":
            name = tokens[k + 1]
            j, end = expression_end(tokens, k + 3, stop)
            value = (tokens[k + 3].start, end) if j > k + 3 else None
            defs.append(Def(name.text, "loop", name, name.end, value, _body_end(tokens, j, stop)))
            k = max(j, k + 3)
            continue
        elif depth == 0 and t.text == "=" and k > start and tokens[k - 1].is_name:
            targets = [tokens[k - 1]]
            m = k - 2
            while m > start and tokens[m].text == "," and tokens[m - 1].is_name:
                targets.insert(0, tokens[m - 1])
                m -= 2
            if m >= start and tokens[m].text == "let":
                k += 1
                continue
            j, end = expression_end(tokens, k + 1, stop)
            value = (tokens[k + 1].start, end) if j > k + 1 else None
            defs.extend(Def(x.text, "binding", x, end, value) for x in targets)
            k = max(j, k + 1)
            continue
        k += 1
    return defs


def _body_end(tokens: list[Token], k: int, stop: int) -> int:
    """The offset of the `}` that closes the `{` at tokens[k] (where an unclosed one stops)."""
    if k >= stop or tokens[k].text != "{":
        return tokens[k].start if k < len(tokens) else sys.maxsize
    depth = 0
    for j in range(k, stop):
        if tokens[j].text == "{":
            depth += 1
        elif tokens[j].text == "}":
            depth -= 1
            if depth == 0:
                return tokens[j].start
    return tokens[stop].start if stop < len(tokens) else sys.maxsize


def expression_end(tokens: list[Token], k: int, stop: int | None = None) -> tuple[int, int]:
    """(index after, end offset) of the expression starting at tokens[k] (before `stop`):
    operands joined by operators, calls and brackets; it ends where the next statement starts."""
    stop = len(tokens) if stop is None else stop
    depth = 0
    operand = True  # an operand is expected next
    end = tokens[k - 1].end if k > 0 else 0
    j = k
    while j < stop:
        t = tokens[j]
        if t.text in ("{", "}", *ITEM_KEYWORDS):
            break
        if depth > 0:
            if t.text in "([":
                depth += 1
            elif t.text in ")]":
                depth -= 1
                if depth == 0:
                    operand, end = False, t.end
        elif operand:
            if t.kind in ("number", "string") or t.is_name or t.text == "?":
                operand, end = False, t.end
            elif t.text in "([":
                depth = 1
            elif t.text != "-":
                break
        elif t.text == "(" and tokens[j - 1].kind == "name":
            depth = 1
        elif t.text in ("+", "-", "*", "/"):
            operand = True
        else:
            break
        j += 1
    if depth > 0:  # left open: it reaches as far as it goes
        end = tokens[j].start if j < len(tokens) else sys.maxsize
    return j, end


def used_files(path: Path, out: Outline, limit: int = 64) -> list[tuple[Item, Path, Outline]]:
    """Every file reached through `use` from `out` (the file at `path`), depth first, each once:
    (the `use` item of this file that leads there, the file, its outline). Unreadable files
    are left out: the diagnostics say why."""
    from dslc.compiler import SourceError, read_spec

    seen = {path.resolve()} if path.is_absolute() else set()
    found: list[tuple[Item, Path, Outline]] = []

    def walk(base: Path, current: Outline, via: Item | None) -> None:
        for use in current.uses():
            if len(found) >= limit or not use.name.endswith(".dl"):
                continue
            target = stdlib.resolve_use(base, use.name)
            if target is None or target in seen:
                continue
            seen.add(target)
            try:
                sub = outline(read_spec(target))
            except SourceError:
                continue
            found.append((via or use, target, sub))
            walk(target, sub, via or use)

    walk(path, out, None)
    return found
