"""One writer for generated Python, shared by the torch and keras code generators: safe
identifiers, string literals and comments made from outside text (spec names, file names),
and line wrapping. Every string from a spec or the file system that enters generated source
goes through `quote` (a literal) or `comment` (comment text) — nothing else — so a crafted
name can never become code.
"""

from __future__ import annotations

import ast
import json
import keyword
import textwrap

# Variable names that ruff flags (E741): `l`, `O`, `I` look like digits.
AMBIGUOUS = frozenset({"l", "O", "I"})


def identifier(name: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A valid Python identifier for `name`, never a keyword nor a name in `taken`."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "_"
    if not out.isidentifier():  # non-ASCII letters that are not identifier characters
        out = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in out)
    if out[0].isdigit():
        out = "_" + out
    while keyword.iskeyword(out) or keyword.issoftkeyword(out) or out in taken:
        out += "_"
    return out


def public(name: str) -> str:
    """`name` without leading underscores (a class's `__name` would be mangled)."""
    return name.lstrip("_") or "layer"


def quote(text: str) -> str:
    """A double-quoted Python string literal of `text` (as ruff format writes them): every
    control character, quote and backslash escaped."""
    return json.dumps(str(text))


def comment(text: str) -> str:
    """`text` made safe inside a `#` comment: no line break or other control character
    survives (they are shown escaped), so it cannot end the comment."""
    return repr(str(text))[1:-1]


def atom(expr: str) -> str:
    """`expr`, parenthesised unless a method call on it binds to all of it."""
    body = ast.parse(expr, mode="eval").body
    return expr if isinstance(body, ast.Name | ast.Call | ast.Attribute | ast.Subscript) \
        else f"({expr})"


class Names:
    """Fresh variable names in one scope: safe identifiers, never reserved, never reused."""

    def __init__(self, reserved: set[str] | frozenset[str] = frozenset()):
        self.reserved = set(reserved)
        self.taken: set[str] = set()

    def fresh(self, base: str) -> str:
        if base.startswith("__"):  # `__x` would be mangled, `__class__` is the class cell
            base = public(base)
        stem = identifier(base)
        name = stem + "_" if stem in AMBIGUOUS else stem
        k = 2
        while name in self.taken or name in self.reserved:
            name, k = f"{stem}_{k}", k + 1
        self.taken.add(name)
        return name




def wrap(line: str, indent: str, width: int = 100) -> list[str]:
    """`line` as is when it fits; else its last call's arguments one a line, as Black does."""
    if len(indent + line) <= width:
        return [indent + line]
    if line.startswith("#"):  # a comment stays a comment: split it into comment lines
        text = line.lstrip("#").strip()
        return textwrap.wrap(text, width, initial_indent=f"{indent}# ",
                             subsequent_indent=f"{indent}# ", break_long_words=False,
                             break_on_hyphens=False) or [indent + line]
    elements = split_top_level(line.removeprefix("return "), ",")
    if line.startswith("return ") and len(elements) > 1:  # a tuple: one element a line
        inner = indent + "    "
        body = []
        for element in elements:
            lines = wrap(element.strip(), inner, width)
            body += [*lines[:-1], lines[-1] + ","]
        return [indent + "return (", *body, indent + ")"]
    terms = top_level_terms(line)
    if len(terms) > 1:  # `x = a / b`: parenthesise, one operand a line
        inner = indent + "    "
        return [indent + terms[0] + "(", *(x for t in terms[1:] for x in wrap(t, inner, width)),
                indent + ")"]
    if not line.endswith((")", "]")):
        return [indent + line]
    depth, start = 0, None
    for i in range(len(line) - 1, -1, -1):  # the bracket that matches the final one
        depth += {")": 1, "]": 1, "(": -1, "[": -1}.get(line[i], 0)
        if depth == 0:
            start = i
            break
    # a call (its bracket not first), or a list literal (its bracket first): one item a line
    if start is None or (start == 0) != line.endswith("]"):
        return [indent + line]
    args = [a.strip() for a in split_top_level(line[start + 1:-1], ",")]
    inner = indent + "    "
    body = []
    for arg in filter(None, args):
        lines = wrap(arg, inner, width)
        body += [*lines[:-1], lines[-1] + ","]
    return [indent + line[:start + 1], *body, indent + line[-1]]


def split_top_level(text: str, sep: str) -> list[str]:
    """`text` split at each `sep` outside brackets (strings hold no brackets here)."""
    parts, depth, cur = [], 0, ""
    for c in text:
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(c, 0)
        if c == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts


def top_level_terms(line: str) -> list[str]:
    """`x = a + b / c` → ["x = ", "a", "+ b", "/ c"]: the right side split at operators
    outside brackets; [line] when there is none."""
    head, eq, rhs = line.partition(" = ")
    if not eq:
        eq, rhs = "", line.removeprefix("return ")
        head = "return " if line.startswith("return ") else ""
    terms, depth, cur = [], 0, ""
    i = 0
    while i < len(rhs):
        c = rhs[i]
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(c, 0)
        if depth == 0 and rhs[i:i + 3] in (" + ", " / ", " * ", " - "):
            terms.append(cur)
            cur = rhs[i + 1]
            i += 2
            continue
        cur += c
        i += 1
