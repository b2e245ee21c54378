"""`dslc fmt`: the one layout of a .dl file, every comment kept.

The layout: 4 spaces a level, one statement a line, spaces around `=` (none in `name=value`
arguments), after commas and around `+` and `-` (none around `*` and `/`: `scale(1/255)`),
aligned `=` in a `train` block, one blank line between top-level items (`use` and `let` lines
may stay together) and at most one where the author left some between statements, a call or
list wider than WIDTH columns wrapped one element a line with a trailing comma, and
`repeat N { stmt }` and `for x in xs { stmt }` on one line when the body is one short statement.

How: the parser's concrete tree (every token kept) becomes a small Wadler/Prettier document —
groups that are laid out flat when they fit and broken otherwise — which is then printed.
Comments are not in the tree. They lie in the gaps between tokens; each is attached to the
token before it when it ends a line of code (printed right after that token, and the line
ends there: a line break is whitespace anywhere in the language), or to the token after it
when it stands on its own line (printed on a line of its own before it). A comment inside a
group forces the group to break, so it stays beside the element it annotates. Comments after
the last token of an element (those of a parenthesis left out) follow the comma after it.
"""

from __future__ import annotations

import difflib
import re
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Tree

from dslc.diagnostics import Diagnostic, DslError, render, render_all
from dslc.parse import LARK_OPTIONS, grammar_text, parse

WIDTH = 100
INDENT = 4

__all__ = ["WIDTH", "fmt_command", "format_text"]


def format_text(text: str, path: str = "<input>") -> str:
    """The canonical layout of `text`. Raises DslError (located in `path`) when it does not
    parse; the result parses to the same syntax tree, and formatting it again changes nothing."""
    parse(text, path)  # the parser's own errors and limits, before anything here
    if text.startswith("\ufeff"):
        text = text[1:]
    tree = _concrete_tree(text)
    return _Layout(text, tree).render()


# --- the concrete tree -------------------------------------------------------------------

@lru_cache(maxsize=1)
def _cst_parser() -> Lark:
    # Built once a process (~0.1 s): parse.py's precomputed tables drop punctuation, and a
    # formatter needs every token (and its position) to place comments.
    # Tokens know their places; trees need not (propagating them costs a third of the time).
    return Lark(grammar_text(), **{**LARK_OPTIONS, "propagate_positions": False},
                keep_all_tokens=True)


_PARSE_LOCK = threading.Lock()  # a Lark parser is not reentrant; the language server has threads


def _concrete_tree(text: str) -> Tree:
    with _PARSE_LOCK:
        return _cst_parser().parse(text)


def _leaves(tree: Tree) -> list[Token]:
    out: list[Token] = []
    stack: list[Tree | Token] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Token):
            out.append(node)
        else:
            stack.extend(reversed(node.children))
    return out


def _kids(tree: Tree) -> list[Any]:
    return tree.children


def _first_token(node: Tree | Token) -> Token:
    while isinstance(node, Tree):
        node = node.children[0]
    return node


# --- the document ------------------------------------------------------------------------

class Doc:
    forced = False  # holds a hard line break or a comment: every group around it breaks


@dataclass(eq=False)
class Cat(Doc):
    parts: list[Doc | str]

    def __post_init__(self) -> None:
        self.forced = any(isinstance(p, Doc) and p.forced for p in self.parts)


def cat(*parts: Doc | str) -> Cat:
    return Cat(list(parts))


@dataclass(eq=False)
class Group(Doc):
    """Flat on one line when it fits, else broken: each of its own Lines a line break."""
    doc: Doc

    def __post_init__(self) -> None:
        self.forced = self.doc.forced


@dataclass(eq=False)
class Indent(Doc):
    doc: Doc

    def __post_init__(self) -> None:
        self.forced = self.doc.forced


@dataclass(eq=False)
class IfBroken(Doc):
    """Text only in a broken group (the trailing comma of a wrapped call)."""
    text: str


@dataclass(eq=False)
class Line(Doc):
    flat: str  # what it is in a flat group
    hard: bool = False
    blank: bool = False  # a blank line before what follows

    def __post_init__(self) -> None:
        self.forced = self.hard


SOFT = Line("")
LINE = Line(" ")
HARD = Line("", hard=True)
BLANK = Line("", hard=True, blank=True)


@dataclass(eq=False)
class Trailing(Doc):
    """A comment that ends a line of code: printed where it is, and the line ends there."""
    text: str

    def __post_init__(self) -> None:
        self.forced = True


@dataclass(eq=False)
class OwnLine(Doc):
    """A comment on a line of its own."""
    text: str

    def __post_init__(self) -> None:
        self.forced = True


FLAT, BROKEN = 0, 1


class _Printer:
    """Prettier's algorithm: a group is flat when it and the rest of its line fit in WIDTH.
    Line breaks are lazy (a break where a line just began adds no empty line), and a line is
    indented as the first text on it is, so a comment may end a line or stand on its own
    without doubling the breaks around it or moving what follows."""

    def __init__(self, width: int):
        self.width = width
        self.lines: list[str] = []
        self.current: str | None = None  # None: at the start of a line

    def text(self, s: str, indent: int) -> None:
        if self.current is None:
            if not s.strip():  # a space before a token that a comment's line break moved
                return
            self.current = " " * indent
        self.current += s

    def newline(self) -> None:
        """End the line, if one began."""
        line = (self.current or "").rstrip()
        if line:
            self.lines.append(line)
        self.current = None

    def blank(self) -> None:
        self.newline()
        if self.lines and self.lines[-1]:
            self.lines.append("")

    def print(self, doc: Doc) -> str:
        cmds: list[tuple[int, int, Doc | str]] = [(0, BROKEN, doc)]
        while cmds:
            indent, mode, d = cmds.pop()
            if isinstance(d, str):
                if d:
                    self.text(d, indent)
            elif isinstance(d, Cat):
                cmds.extend((indent, mode, p) for p in reversed(d.parts))
            elif isinstance(d, Indent):
                cmds.append((indent + INDENT, mode, d.doc))
            elif isinstance(d, Group):
                column = indent if self.current is None else len(self.current)
                flat = (mode == FLAT or not d.forced
                        and self._fits(d.doc, cmds, self.width - column))
                cmds.append((indent, FLAT if flat else BROKEN, d.doc))
            elif isinstance(d, IfBroken):
                if mode == BROKEN:
                    self.text(d.text, indent)
            elif isinstance(d, Line):
                if mode == FLAT and not d.hard:
                    self.text(d.flat, indent)
                elif d.blank:
                    self.blank()
                else:
                    self.newline()
            elif isinstance(d, Trailing):
                # Where it was: after the token before it, the line broken after it (a line
                # break is whitespace anywhere). Alone if the line has nothing else.
                if self.current is not None:
                    self.current = self.current.rstrip() + "  "
                self.text(d.text, indent)
                self.newline()
            elif isinstance(d, OwnLine):
                self.newline()
                self.text(d.text, indent)
                self.newline()
        self.newline()
        while self.lines and not self.lines[-1]:
            self.lines.pop()
        return "".join(line + "\n" for line in self.lines)

    @staticmethod
    def _fits(doc: Doc, rest: list[tuple[int, int, Doc | str]], room: int) -> bool:
        """Whether `doc`, flat, and what follows it up to the next line break fit in `room`."""
        todo: list[tuple[int, Doc | str]] = [(FLAT, doc)]
        k = len(rest)
        while room >= 0:
            if not todo:
                if k == 0:
                    return True
                k -= 1
                todo.append((rest[k][1], rest[k][2]))
                continue
            mode, d = todo.pop()
            if isinstance(d, str):
                room -= len(d)
            elif isinstance(d, Cat):
                todo.extend((mode, p) for p in reversed(d.parts))
            elif isinstance(d, Indent):
                todo.append((mode, d.doc))
            elif isinstance(d, Group):
                todo.append((BROKEN if d.forced else mode, d.doc))
            elif isinstance(d, IfBroken):
                if mode == BROKEN:
                    room -= len(d.text)
            elif isinstance(d, Line):
                if mode == BROKEN or d.hard:
                    return True
                room -= len(d.flat)
            elif isinstance(d, OwnLine | Trailing):
                return True  # a line break follows (comments may run past the width)
        return False


def _pop_comments(doc: Doc | str) -> list[Doc | str]:
    """Take off the comments `doc` ends with (after its last text, such as those of a
    parenthesis left out) and return them, to be placed after the comma or `;` that follows."""
    if isinstance(doc, Group | Indent):
        taken = _pop_comments(doc.doc)
        doc.forced = doc.doc.forced
        return taken
    if not isinstance(doc, Cat):
        return []
    taken = []
    while doc.parts:
        last = doc.parts[-1]
        if isinstance(last, OwnLine | Trailing) or last == "":
            taken.insert(0, doc.parts.pop())
        elif isinstance(last, Cat | Group | Indent):
            taken[:0] = _pop_comments(last)
            if not _is_empty(last):
                break
            doc.parts.pop()
        else:
            break
    doc.forced = any(isinstance(p, Doc) and p.forced for p in doc.parts)
    return [d for d in taken if d != ""]


def _is_empty(doc: Doc) -> bool:
    return isinstance(doc, Cat) and not doc.parts


def _has_own_line(doc: Doc | str) -> bool:
    stack: list[Doc | str] = [doc]
    while stack:
        d = stack.pop()
        if isinstance(d, OwnLine):
            return True
        if isinstance(d, Cat):
            stack.extend(d.parts)
        elif isinstance(d, Group | Indent):
            stack.append(d.doc)
    return False


def _first_text(doc: Doc | str) -> str:
    """The first character `doc` prints (comments aside), or ''."""
    stack: list[Doc | str] = [doc]
    while stack:
        d = stack.pop()
        if isinstance(d, str):
            if d:
                return d[0]
        elif isinstance(d, Cat):
            stack.extend(reversed(d.parts))
        elif isinstance(d, Group | Indent):
            stack.append(d.doc)
    return ""


# --- from the tree to the document -------------------------------------------------------

@dataclass(slots=True)
class _Comment:
    text: str
    blank_before: bool  # a blank line between it and what comes before


# Binding strength of each expression; an operand that binds more loosely needs parentheses.
PRECEDENCE = {"add": 1, "sub": 1, "mul": 2, "div": 2, "neg": 3}
ATOM = 4
BRACED = {"model", "block", "train"}
# A statement that ends in an expression: one that follows it and starts with `-` or `(`
# would continue it (`x = a` then `-b` reads as `x = a - b`), unless a `;` ends it first.
ENDS_IN_EXPRESSION = {"apply", "assign", "let_stmt", "output_stmt"}
_COMMENT = re.compile(r"#[^\n]*")


class _Layout:
    def __init__(self, text: str, tree: Tree):
        self.tree = tree
        self.leading: dict[int, list[_Comment]] = {}  # by token start: own-line comments
        self.trailing: dict[int, list[str]] = {}  # by token start: comments ending its line
        self.blank: set[int] = set()  # starts of tokens with a blank line before them
        self.end: list[_Comment] = []  # own-line comments after the last token
        self._attach(text, _leaves(tree))

    def _attach(self, text: str, tokens: list[Token]) -> None:
        prev: Token | None = None
        pos, last_line = 0, 0  # where the previous token ends; line of what came last
        for tok in [*tokens, None]:
            start = len(text) if tok is None else tok.start_pos
            assert start is not None
            gap = text[pos:start]
            for m in _COMMENT.finditer(gap):
                line = ((prev.end_line or 1) if prev is not None else 1) + gap.count("\n", 0, m.start())
                comment = m.group().rstrip()
                if prev is not None and line == prev.end_line:
                    self.trailing.setdefault(_key(prev), []).append(comment)
                else:
                    blank = last_line > 0 and line - last_line > 1
                    where = self.end if tok is None else self.leading.setdefault(_key(tok), [])
                    where.append(_Comment(comment, blank))
                last_line = line
            if tok is None:
                break
            if last_line > 0 and (tok.line or 0) - last_line > 1:
                self.blank.add(_key(tok))
            prev, pos, last_line = tok, tok.end_pos or start, tok.end_line or 0

    def render(self) -> str:
        text = _Printer(WIDTH).print(self.program(self.tree))
        assert not self.leading and not self.trailing, "a comment was not printed"
        return text

    # tokens and the comments attached to them

    def tok(self, t: Token, text: str | None = None) -> Cat:
        return cat(*self.lead(t), str(t) if text is None else text, *self.trail(t))

    def lead(self, t: Token) -> list[Doc | str]:
        return [OwnLine(c.text) for c in self.leading.pop(_key(t), [])]

    def trail(self, t: Token) -> list[Doc | str]:
        return [Trailing(c) for c in self.trailing.pop(_key(t), [])]

    def commented(self, t: Token | None) -> bool:
        return t is not None and (_key(t) in self.leading or _key(t) in self.trailing)

    def drop(self, t: Token) -> Cat:
        """A token the layout leaves out (`;`, a redundant parenthesis): its comments stay."""
        return cat(*self.lead(t), *self.trail(t))

    def comment_lines(self, comments: list[_Comment], started: bool) -> list[Doc | str]:
        out: list[Doc | str] = []
        for c in comments:
            out += [BLANK if c.blank_before and started else HARD, OwnLine(c.text)]
            started = True
        return out

    # items and statements

    def program(self, tree: Tree) -> Doc:
        """Items, one blank line between two where either has braces (the author's blank
        lines, at most one, elsewhere: before, between and after the comments above an item)."""
        parts: list[Doc | str] = []
        prev: Tree | None = None
        carried: list[_Comment] = []  # own-line comments that ended the previous item
        for item in tree.children:
            assert isinstance(item, Tree)
            first = _first_token(item)
            comments = carried + self.leading.pop(_key(first), [])
            carried = []
            blanks = [c.blank_before for c in comments] + [_key(first) in self.blank]
            if prev is None:
                blanks[0] = False
            elif not any(blanks) and (prev.data in BRACED or item.data in BRACED):
                blanks[0] = True
            for k, c in enumerate(comments):
                if prev is not None or k:
                    parts.append(BLANK if blanks[k] else HARD)
                parts.append(OwnLine(c.text))
            if prev is not None or comments:
                parts.append(BLANK if blanks[-1] else HARD)
            doc = self.item(item)
            parts.append(doc)
            for d in _pop_comments(doc):  # a left-out parenthesis's: after the item
                if isinstance(d, Trailing) and not carried:
                    parts.append(d)
                else:
                    assert isinstance(d, Trailing | OwnLine)
                    carried.append(_Comment(d.text, False))
            prev = item
        parts += self.comment_lines(carried + self.end, started=prev is not None)
        self.end = []
        return Cat(parts)

    def item(self, t: Tree) -> Doc:
        kids = _kids(t)
        if t.data == "use_stmt":
            return cat(self.tok(kids[0]), " ", self.tok(kids[1]))
        if t.data == "let_stmt":
            return self.let(t)
        if t.data == "model":
            return cat(self.tok(kids[0]), " ", self.tok(kids[1]), " ",
                       self.body(kids[2], kids[3:-1], kids[-1]))
        if t.data == "block":
            close = next(k for k, c in enumerate(kids) if isinstance(c, Token) and c == ")")
            params = self.seq(kids[2], kids[3:close], kids[close], self.param, trailing=False)
            return cat(self.tok(kids[0]), " ", self.tok(kids[1]), params, " ",
                       self.body(kids[close + 1], kids[close + 2:-1], kids[-1]))
        if t.data == "train":
            settings = [s for s in kids[3:-1] if isinstance(s, Tree)]
            width = max((len(_first_token(s)) for s in settings), default=0)
            return cat(self.tok(kids[0]), " ", self.tok(kids[1]), " ",
                       self.body(kids[2], settings, kids[-1], width))
        raise AssertionError(f"unknown item {t.data}")

    def param(self, t: Tree) -> Doc:
        name, colon, type_, *default = _kids(t)
        out = cat(self.tok(name), self.tok(colon), " ", self.tok(type_))
        if default:
            out = cat(out, " ", self.tok(default[0]), " ", self.expr(default[1]))
        return out

    def let(self, t: Tree) -> Doc:
        let, name, eq, value = _kids(t)
        return cat(self.tok(let), " ", self.tok(name), " ", self.tok(eq), " ", self.expr(value))

    def body(self, open_: Token, stmts: list, close: Token, align: int | None = None) -> Doc:
        """`{`, one statement a line, `}`; `align`: pad setting names to this width."""
        inner: list[Doc | str] = []
        started = False  # has a line been printed inside the braces
        prev: tuple[str, int] | None = None  # the previous statement's kind and place in inner
        for s in stmts:
            if s.data == "empty":
                semi = _kids(s)[0]
                comments = self.leading.pop(_key(semi), [])
                inner += self.comment_lines(comments, started)
                started = started or bool(comments)
                inner += self.trail(semi)  # onto the line before
                continue
            first = _first_token(s)
            comments = self.leading.pop(_key(first), [])
            inner += self.comment_lines(comments, started)
            started = started or bool(comments)
            doc = self.setting(s, align) if align is not None else self.stmt(s)
            if prev is not None and prev[0] in ENDS_IN_EXPRESSION and _first_text(doc) in ("-", "("):
                inner.insert(prev[1] + 1, ";")
            inner += [BLANK if started and _key(first) in self.blank else HARD, doc]
            prev = (s.data, len(inner) - 1)
            inner += _pop_comments(doc)  # after the `;` that may follow
            started = True
        comments = self.leading.pop(_key(close), [])
        inner += self.comment_lines(comments, started)
        if not inner:
            return cat(self.tok(open_), self.tok(close))
        return cat(self.tok(open_), Indent(Cat(inner)), HARD, self.tok(close))

    def setting(self, t: Tree, width: int) -> Doc:
        name, eq, value = _kids(t)
        return cat(self.tok(name, name.ljust(width)), " ", self.tok(eq), " ", self.expr(value))

    def stmt(self, t: Tree) -> Doc:
        kids = _kids(t)
        if t.data == "apply":
            return self.expr(kids[0])
        if t.data == "assign":
            *targets, eq, value = kids
            return cat(*[self.tok(x, f"{x} " if x == "," else None) for x in targets], " ",
                       self.tok(eq), " ", self.expr(value))
        if t.data == "input_decl":
            out = cat(self.tok(kids[0]), " ", self.tok(kids[1]))
            if len(kids) > 2:
                ttype = kids[3]
                dims = self.seq(_kids(ttype)[1], _kids(ttype)[2:-1], _kids(ttype)[-1],
                                self.expr, trailing=False)
                out = cat(out, self.tok(kids[2]), " ", self.tok(_kids(ttype)[0]), dims)
            return out
        if t.data == "output_stmt":
            values = self.elements(kids[1:], self.expr, cat(), "")
            return Group(cat(self.tok(kids[0]), " ", Indent(Cat(values))))
        if t.data == "let_stmt":
            return self.let(t)
        if t.data == "repeat":
            return self.repeat(t)
        if t.data == "for_stmt":
            return self.for_loop(t)
        raise AssertionError(f"unknown statement {t.data}")

    def repeat(self, t: Tree) -> Doc:
        kw, count, open_, *stmts, close = _kids(t)
        return self.loop(cat(self.tok(kw), " ", self.expr(count), " "), open_, stmts, close)

    def for_loop(self, t: Tree) -> Doc:
        kw, var, in_, items, open_, *stmts, close = _kids(t)
        head = cat(self.tok(kw), " ", self.tok(var), " ", self.tok(in_), " ", self.expr(items), " ")
        return self.loop(head, open_, stmts, close)

    def loop(self, head: Doc, open_: Token, stmts: list, close: Token) -> Doc:
        """A `repeat` or `for` body after its `head`."""
        real = [s for s in stmts if s.data != "empty"]
        if (len(real) == 1
                and not any(self.commented(_first_token(s)) for s in stmts if s.data == "empty")
                and not self.trailing.get(_key(open_)) and not self.leading.get(_key(close))
                and not self.leading.get(_key(_first_token(real[0])))):
            only = self.stmt(real[0])
            if not only.forced:  # one short statement: `repeat 2 { block(x) }`
                return cat(head, *self.lead(open_),
                           Group(cat(str(open_), Indent(cat(LINE, only)), LINE, "}")),
                           *self.trail(close))
            # comments inside: the usual layout, with the statement already built
            return cat(head, self.tok(open_), Indent(cat(HARD, only)), HARD, self.tok(close))
        return cat(head, self.body(open_, stmts, close))

    # expressions

    def seq(self, open_: Token, inner: list, close: Token, element, trailing: bool) -> Doc:
        """`(a, b)` or `[a, b]`; wrapped one element a line (and a trailing comma when the
        grammar allows one) when it does not fit."""
        parts = self.elements(inner, element, SOFT, IfBroken(",") if trailing else "")
        parts += [OwnLine(c.text) for c in self.leading.pop(_key(close), [])]
        if not any(isinstance(x, Tree) for x in inner) and not _has_own_line(Cat(parts)):
            # `f()`: comments after `(` (ending the line) trail the `)`, as they will next time
            return cat(*self.lead(open_), str(open_), str(close), *self.trail(open_), *parts,
                       *self.trail(close))
        # Comments on lines before `(` stand before the group: they need no break inside it.
        opening = self.lead(open_)
        body = cat(str(open_), *self.trail(open_), Indent(Cat(parts)),
                   SOFT if len(parts) > 1 else "", str(close))
        return cat(*opening, Group(body), *self.trail(close))

    def elements(self, inner: list, element, first: Doc, last: Doc | str) -> list[Doc | str]:
        """`a, b, c` from trees and comma tokens: `first` before the first element, a comma
        and a LINE between two, `last` after the last."""
        items: list[list] = []  # [element, the comma after it or None]
        parts: list[Doc | str] = []
        for x in inner:
            if isinstance(x, Tree):
                items.append([x, None])
            elif items:
                items[-1][1] = x
            else:  # `f(,)` parses: a comma before any element
                parts.append(self.drop(x))
        for n, (e, comma) in enumerate(items):
            doc = element(e)
            parts += [first if n == 0 else LINE, doc, "," if n < len(items) - 1 else last]
            # The comma right after the element's last token; the comments around it after.
            # (A trailing comma as written is left out: the layout decides.)
            parts += _pop_comments(doc)
            if comma is not None:
                parts.append(self.drop(comma))
        return parts

    def expr(self, t: Tree) -> Doc:
        kids = _kids(t)
        data = t.data
        if data in ("number", "string", "name", "dynamic_dim"):
            return self.tok(kids[0])
        if data == "call":
            return cat(self.tok(kids[0]),
                       self.seq(kids[1], kids[2:-1], kids[-1], self.expr, trailing=True))
        if data == "list":
            return self.seq(kids[0], kids[1:-1], kids[-1], self.expr, trailing=True)
        if data == "kwarg":
            return cat(self.tok(kids[0]), self.tok(kids[1]), self.expr(kids[2]))
        if data in ("add", "sub", "mul", "div"):
            left, op, right = kids
            prec = PRECEDENCE[data]
            lhs, rhs = self.operand(left, prec, False), self.operand(right, prec, True)
            if prec == 1:
                return cat(lhs, " ", self.tok(op), " ", rhs)
            return cat(lhs, self.tok(op), rhs)
        if data == "neg":
            return cat(self.tok(kids[0]), self.operand(kids[1], PRECEDENCE["neg"], False))
        if data == "atom":
            return self.operand(t, 0, False)
        raise AssertionError(f"unknown expression {data}")

    def operand(self, t: Tree, prec: int, right: bool) -> Doc:
        """`t` where an operator of strength `prec` takes it (as its right operand when
        `right`): in parentheses when it binds more loosely, and only then."""
        parens: list[tuple[Token, Token]] = []
        while t.data == "atom":
            lpar, inner, rpar = _kids(t)
            parens.append((lpar, rpar))
            t = inner
        own = PRECEDENCE.get(t.data, ATOM)
        needed = own < prec or (right and own == prec)
        if not parens:
            return cat("(", self.expr(t), ")") if needed else self.expr(t)
        opening: list[Doc | str] = []
        closing: list[Doc | str] = []
        for k, (lpar, rpar) in enumerate(parens):  # outermost first
            keep = needed and k == 0
            opening.append(self.tok(lpar) if keep else self.drop(lpar))
            closing.insert(0, self.tok(rpar) if keep else self.drop(rpar))
        return Cat([*opening, self.expr(t), *closing])


def _key(t: Token) -> int:
    assert t.start_pos is not None
    return t.start_pos


# --- the command -------------------------------------------------------------------------

def _spec_files(names: list[str]) -> list[Path]:
    """The files named, with a folder standing for the .dl files under it."""
    out: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*.dl") if p.is_file())
        else:
            out.append(path)
    return list(dict.fromkeys(out))


def unified_diff(before: str, after: str, name: str) -> str:
    """A unified diff of two texts, as `diff -u` prints it (a missing last newline said)."""
    def lines(text: str) -> list[str]:
        out = text.splitlines(keepends=True)
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n\\ No newline at end of file\n"
        return out

    return "".join(difflib.unified_diff(lines(before), lines(after), f"{name}",
                                        f"{name} (formatted)"))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def fmt_command(args) -> int:
    """`dslc fmt [--check] FILES`: 0 done (or, with --check, nothing to change), 1 a file would
    change (--check), 2 a file could not be read or parsed (it is left as it was)."""
    # Imported here: the language server formats text without them (they pull in pydantic).
    from dslc.compiler import SourceError, read_spec
    from dslc.weights import atomic_write_bytes

    if "-" in args.files:
        if len(args.files) > 1:
            raise DslError("`-` (standard input) cannot be mixed with files",
                           hint="format standard input alone: `dslc fmt - < spec.dl`")
        return _fmt_stdin(args.check)
    changed, errors = 0, 0
    paths = _spec_files(args.files)
    for path in paths:
        try:
            text = read_spec(path)
            out = format_text(text, str(path))
        except SourceError as exc:
            print(render(Diagnostic(f"{path}: {exc.reason}", None, exc.hint)), file=sys.stderr)
            errors += 1
            continue
        except DslError as err:
            print(render_all(err, {str(path): text}), file=sys.stderr)
            errors += 1
            continue
        if out == text:
            continue
        changed += 1
        if args.check:
            sys.stdout.write(unified_diff(text, out, str(path)))
        else:
            # Through a symbolic link to the file it names, which stays a link.
            atomic_write_bytes(path.resolve(), out.encode("utf-8"))
            print(f"reformatted {path}")
    done = "would be reformatted" if args.check else "reformatted"
    summary = [f"{_plural(changed, 'file')} {done}",
               f"{len(paths) - changed - errors} unchanged"]
    if errors:
        summary.append(f"{errors} not formatted (errors above)")
    print(", ".join(summary), file=sys.stderr)
    if errors:
        return 2
    return 1 if args.check and changed else 0


def _fmt_stdin(check: bool) -> int:
    from dslc.compiler import MAX_SPEC_BYTES

    data = sys.stdin.buffer.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise DslError(f"standard input is larger than {MAX_SPEC_BYTES // 2**20} MB, the limit "
                       "for a spec")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DslError(f"standard input is not UTF-8 text (byte {exc.start + 1})",
                       hint="save the spec as UTF-8") from None
    try:
        out = format_text(text, "<stdin>")
    except DslError as err:
        err.sources = {"<stdin>": text}  # type: ignore[attr-defined]
        raise
    if check:
        sys.stdout.write(unified_diff(text, out, "<stdin>"))
        return 1 if out != text else 0
    sys.stdout.write(out)
    return 0
