"""The editor's questions about one .dl document, answered without a server: diagnostics,
hover, completion, go to definition and formatting. dslc/lsp/server.py wires them to pygls.

Diagnostics come from the compiler itself (`compile_text`), so an editor shows what
`dslc check` says, where it says it. The other answers read a lexical outline of the text
(dslc/lsp/outline.py), which works while the text is half typed, and the checked graph
(output shapes, parameters) when the text checks.
"""

from __future__ import annotations

import bisect
import inspect
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from lsprotocol import types

from dslc import stdlib
from dslc.compiler import Spec, compile_text
from dslc.diagnostics import Diagnostic, DslError, Span
from dslc.ir.graph import Graph, Node
from dslc.lsp import help
from dslc.lsp.outline import Def, Item, Outline, Token, outline, used_files
from dslc.ops import all_ops, find_op
from dslc.parse import KEYWORDS
from dslc.passes import build


class Positions:
    """Offsets in a text ↔ LSP positions, whose characters count in the client's units
    (UTF-16 unless the client chose otherwise). Lines end at `\\n`, as the parser counts."""

    def __init__(self, text: str, encoding: str = "utf-16"):
        self.text = text
        self.encoding = encoding
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def units(self, s: str) -> int:
        if self.encoding == "utf-8":
            return len(s.encode("utf-8"))
        if self.encoding == "utf-32":
            return len(s)
        return len(s.encode("utf-16-le")) // 2

    def line_text(self, line: int) -> str:
        end = self.starts[line + 1] - 1 if line + 1 < len(self.starts) else len(self.text)
        return self.text[self.starts[line]:end]

    def line_col(self, offset: int) -> tuple[int, int]:
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.starts, offset) - 1
        return line, offset - self.starts[line]

    def offset_of(self, line: int, col: int) -> int:
        """The offset of 0-based `line` and code-point `col`, kept inside the text."""
        if line >= len(self.starts):
            return len(self.text)
        line = max(line, 0)
        return self.starts[line] + max(0, min(col, len(self.line_text(line))))

    def position(self, offset: int) -> types.Position:
        line, col = self.line_col(offset)
        return types.Position(line=line, character=self.units(self.line_text(line)[:col]))

    def range(self, start: int, end: int) -> types.Range:
        return types.Range(start=self.position(start), end=self.position(max(start, end)))

    def offset(self, position: types.Position) -> int:
        """The offset of a client's position (a character past the line's end: its end)."""
        if position.line >= len(self.starts):
            return len(self.text)
        text = self.line_text(position.line)
        units = 0
        for i, ch in enumerate(text):
            if units >= position.character:
                return self.starts[position.line] + i
            units += self.units(ch)
        return self.starts[position.line] + len(text)

    def span_range(self, span: Span) -> types.Range:
        """A diagnostic's span; without an end, the word it starts at."""
        start = self.offset_of(span.line - 1, span.col - 1)
        if span.end_line is not None and span.end_col is not None:
            end = self.offset_of(span.end_line - 1, span.end_col - 1)
        else:
            end = start
            while end < len(self.text) and (self.text[end].isalnum() or self.text[end] in "_."):
                end += 1
            if end == start and end < len(self.text) and self.text[end] != "\n":
                end += 1
        return self.range(start, end)


@dataclass(frozen=True)
class Checked:
    """What the compiler says of a text: its spec, or every diagnostic and the sources."""

    spec: Spec | None
    problems: list[Diagnostic]
    sources: dict[str, str]


def check(text: str, path: Path) -> Checked:
    try:
        spec = compile_text(text, path)
        return Checked(spec, [], spec.sources)
    except DslError as err:
        return Checked(None, list(err.diagnostics), getattr(err, "sources", None) or {})
    except Exception as exc:  # a bug in dslc: say so in the editor, keep serving
        return Checked(None, [Diagnostic(f"internal error in dslc ({type(exc).__name__}: "
                                         f"{exc}); please report it", None)], {})


class Analysis:
    """One version of a document: its outline at once; what the compiler says of it (the
    costly part) when diagnostics or a hover first ask. Completion never compiles."""

    def __init__(self, text: str, path: str | Path):
        self.text = text
        self.path = Path(path)
        self.outline = outline(text)

    @cached_property
    def checked(self) -> Checked:
        return check(self.text, self.path)

    @property
    def spec(self) -> Spec | None:
        return self.checked.spec

    @cached_property
    def used(self) -> list[tuple[Item, Path, Outline]]:
        return used_files(self.path, self.outline)

    @cached_property
    def layers(self) -> dict[tuple[int, int], list[tuple[Graph, Node]]]:
        """Checked layers by the (0-based line, column) of the op name that made them."""
        found: dict[tuple[int, int], list[tuple[Graph, Node]]] = {}
        if self.spec is None:
            return found
        here = str(self.path)
        for graph in self.spec.models.values():
            for node in graph.nodes:
                if node.span.file == here:
                    found.setdefault((node.span.line - 1, node.span.col - 1), []).append((graph, node))
        return found


def analyse(text: str, path: str | Path) -> Analysis:
    return Analysis(text, path)


def uri_of(path: Path) -> str:
    return path.as_uri() if path.is_absolute() else str(path)


# --- diagnostics ---------------------------------------------------------------------------

SEVERITY = {"error": types.DiagnosticSeverity.Error, "warning": types.DiagnosticSeverity.Warning}


def diagnostics(a: Analysis, encoding: str = "utf-16") -> list[types.Diagnostic]:
    """Every diagnostic `dslc check` gives, placed where it places them. One in a `use`d file
    is shown on the `use` that leads to it, and links to its place there."""
    here = Positions(a.text, encoding)
    out = []
    for d in a.checked.problems:
        message = d.message + (f"\nhint: {d.hint}" if d.hint else "")
        related = None
        if d.span is None:
            rng = here.range(0, 0)
        elif d.span.file == str(a.path):
            rng = here.span_range(d.span)
        else:
            via = _use_leading_to(a, d.span.file)
            rng = here.range(via.tok.start, via.tok.end) if via else here.range(0, 0)
            message = f"{d.span}: {message}"
            text = a.checked.sources.get(d.span.file)
            if text is not None:
                location = types.Location(uri=uri_of(Path(d.span.file)),
                                          range=Positions(text, encoding).span_range(d.span))
                related = [types.DiagnosticRelatedInformation(location=location, message=d.message)]
        out.append(types.Diagnostic(range=rng, message=message, source="dslc",
                                    severity=SEVERITY.get(d.severity, types.DiagnosticSeverity.Error),
                                    related_information=related))
    return out


def _use_leading_to(a: Analysis, file: str) -> Item | None:
    for use in a.outline.uses():
        if str(stdlib.resolve_use(a.path, use.name)) == file:
            return use
    for via, target, _ in a.used:
        if str(target) == file:
            return via
    return None


# --- names and where they are defined ------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where a name is defined: the file, its outline, the defining token and what it is."""

    path: Path
    outline: Outline
    tok: Token
    kind: str  # input, binding, let, param, loop, block, model
    definition: Def | Item


def _item_defs(item: Item | None, offset: int) -> list[Def]:
    """The names a body sees at `offset`: block parameters, then its defs made before."""
    if item is None:
        return []
    return [*item.params, *(d for d in item.defs
                            if d.visible <= offset and (d.until is None or offset <= d.until))]


def _top_lets(out: Outline, offset: int, in_body: bool) -> list[Item]:
    # Models are built after every `let` is read; a `let` sees only the ones before it.
    return [i for i in out.top_level("let") if in_body or i.end <= offset]


def resolve(a: Analysis, tok: Token) -> Target | None:
    """The definition the name `tok` (in this document) refers to."""
    out, name = a.outline, tok.text
    item = out.item_at(tok.start)
    own = [*(item.params if item else []), *(item.defs if item else [])]
    for d in own:
        if d.tok == tok:
            return Target(a.path, out, d.tok, d.kind, d)
    for top in out.items:
        if top.tok == tok and top.kind in ("let", "block", "model"):
            return Target(a.path, out, top.tok, top.kind, top)
    if item is not None and item.kind != "train":
        for d in reversed(_item_defs(item, tok.start)):
            if d.name == name:
                return Target(a.path, out, d.tok, d.kind, d)
    lets = _top_lets(out, tok.start, item is not None)
    for let in reversed(lets):
        if let.name == name:
            return Target(a.path, out, let.tok, "let", let)
    for top in out.items:
        if top.name == name and top.kind in ("block", "model"):
            return Target(a.path, out, top.tok, top.kind, top)
    for _, path, sub in a.used:
        for top in sub.items:
            if top.name == name and top.kind in ("block", "let"):
                return Target(path, sub, top.tok, top.kind, top)
    return None


def _op_location(name: str) -> types.Location | None:
    """The Python class of an op, for "go to definition" on an op name."""
    op = find_op(name)
    if op is None:
        return None
    cls = type(op)
    try:
        file = inspect.getsourcefile(cls)
        line = inspect.getsourcelines(cls)[1] - 1
    except (OSError, TypeError):  # made with type(): find its registration in the module
        module = inspect.getmodule(cls)
        file = inspect.getsourcefile(module) if module is not None else None
        line = 0
        if file is not None:
            for k, text in enumerate(Path(file).read_text(encoding="utf-8").splitlines()):
                if f'"{name}"' in text:
                    line = k
                    break
    if file is None:
        return None
    here = types.Position(line=line, character=0)
    return types.Location(uri=Path(file).as_uri(), range=types.Range(start=here, end=here))


def definition(a: Analysis, offset: int, encoding: str = "utf-16") -> list[types.Location]:
    tok = a.outline.token_at(offset)
    if tok is None:
        return []
    if tok.kind == "string":
        use = next((u for u in a.outline.uses() if u.tok == tok), None)
        if use is None:
            return []
        target = stdlib.resolve_use(a.path, use.name)
        if target is None or not target.is_file():
            return []
        start = types.Position(line=0, character=0)
        return [types.Location(uri=target.as_uri(), range=types.Range(start=start, end=start))]
    if tok.kind != "name":
        return []
    found = resolve(a, tok)
    if found is not None:
        positions = Positions(found.outline.text, encoding)
        return [types.Location(uri=uri_of(found.path),
                               range=positions.range(found.tok.start, found.tok.end))]
    location = _op_location(tok.text)
    return [location] if location is not None else []


# --- hover ---------------------------------------------------------------------------------

def _call_around(out: Outline, offset: int, item: Item | None) -> tuple[Token | None, int]:
    """The name of the innermost call whose parentheses hold `offset` (None if the innermost
    bracket is a list or there is none), and the index of its `(` in out.tokens."""
    lo = item.body[0] if item is not None and item.body is not None else 0
    stack: list[int] = []
    for k, t in enumerate(out.tokens):
        if t.start >= offset:
            break
        if t.start < lo:
            continue
        if t.text in "([":
            stack.append(k)
        elif t.text in ")]" and stack:
            stack.pop()
    if not stack:
        return None, -1
    k = stack[-1]
    if out.tokens[k].text == "(" and k > 0 and out.tokens[k - 1].kind == "name":
        return out.tokens[k - 1], k
    return None, k


def hover(a: Analysis, offset: int, encoding: str = "utf-16") -> types.Hover | None:
    tok = a.outline.token_at(offset)
    if tok is None or tok.kind != "name" or tok.text in KEYWORDS:
        return None
    text = _hover_text(a, tok)
    if text is None:
        return None
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text),
                       range=Positions(a.text, encoding).range(tok.start, tok.end))


def _hover_text(a: Analysis, tok: Token) -> str | None:
    out = a.outline
    item = out.item_at(tok.start)
    after = out.after(tok)
    func, _ = _call_around(out, tok.start, item)
    if func is not None and after is not None and after.text == "=":
        op = find_op(func.text)
        if op is not None and tok.text in op.Attrs.model_fields:
            return f"{help.attribute(op, tok.text)}\n\nattribute of `{op.name}`"
        block = resolve(a, func)
        if block is not None and isinstance(block.definition, Item):
            for p in block.definition.params:
                if p.name == tok.text:
                    return (f"`{_param_text(block.outline, p.tok)}`\n\n"
                            f"parameter of block `{func.text}`")
    target = resolve(a, tok)
    if target is not None:
        return _definition_text(a, target)
    op = find_op(tok.text)
    if op is not None:
        layers = a.layers.get((tok.line, tok.col))
        if layers:
            return help.layer_markdown(layers[0][0], [n for _, n in layers], op)
        return help.op_markdown(op)
    return None


def _line_of(out: Outline, tok: Token) -> str:
    """The source line a token is on, trimmed."""
    line_start = out.text.rfind("\n", 0, tok.start) + 1
    line_end = out.text.find("\n", tok.start)
    text = out.text[line_start:line_end if line_end >= 0 else len(out.text)].strip()
    return text[:200]


def _param_text(out: Outline, tok: Token) -> str:
    """`filters: int = 8`: a block parameter as written."""
    depth, end = 0, tok.end
    k = bisect.bisect_left(out.starts, tok.start)
    for t in out.tokens[k:]:
        if t.text in "([":
            depth += 1
        elif t.text in ")]" and depth > 0:
            depth -= 1
        elif depth == 0 and t.text in (",", ")", "{"):
            break
        end = t.end
    return " ".join(out.text[tok.start:end].split())


def _comment_above(out: Outline, tok: Token) -> str:
    """`#` comment lines right above the line of `tok`: a block's documentation."""
    lines = out.text[:out.text.rfind("\n", 0, tok.start) + 1].split("\n")[:-1]
    doc: list[str] = []
    while lines and lines[-1].strip().startswith("#"):
        doc.insert(0, lines.pop().strip().lstrip("#").strip())
    return "\n".join(doc)


def _definition_text(a: Analysis, t: Target) -> str:
    d = t.definition
    where = "" if t.path == a.path else f"\n\nfrom `{t.path.name}`"
    if t.kind == "block" and isinstance(d, Item):
        sig = _line_of(t.outline, t.tok).rstrip("{").strip()
        doc = _comment_above(t.outline, t.tok)
        return f"```dl\n{sig}\n```" + (f"\n\n{doc}" if doc else "") + where
    if t.kind == "model":
        return _model_text(a, t.tok.text) + where
    if t.kind == "let":
        value = d.value
        shown = t.outline.text[value[0]:value[1]] if value else "…"
        return f"```dl\nlet {t.tok.text} = {shown[:200]}\n```" + where
    if t.kind == "param":
        return f"`{_param_text(t.outline, t.tok)}`\n\nparameter of this block"
    if t.kind == "loop" and isinstance(d, Def):
        shown = t.outline.text[d.value[0]:d.value[1]] if d.value else "…"
        return (f"```dl\nfor {t.tok.text} in {shown[:200]}\n```\n\n"
                "loop variable: each element of the list in turn, in the loop's body")
    if t.kind == "input":
        return _input_text(a, t)
    if t.kind == "binding" and isinstance(d, Def):
        return _binding_text(a, t, d)
    return f"`{t.tok.text}`"


def _model_text(a: Analysis, name: str) -> str:
    graph = a.spec.models.get(name) if a.spec is not None else None
    if graph is None:
        return f"model `{name}`"
    ins = ", ".join(f"`{i.name}` {i.type}" for i in graph.inputs)
    outs = ", ".join(f"`{o}` {graph.type_of(o)}" for o in graph.outputs)
    return (f"**model `{name}`**: {len(graph.nodes):,} layers, {graph.param_count:,} parameters "
            f"({graph.trainable_param_count:,} trainable)\n\ninputs: {ins}\n\noutputs: {outs}")


def _input_text(a: Analysis, t: Target) -> str:
    item = a.outline.item_at(t.tok.start) if t.path == a.path else None
    if item is not None and item.kind == "model" and a.spec is not None:
        graph = a.spec.models.get(item.name)
        for i in graph.inputs if graph else []:
            if i.name == t.tok.text:
                return f"input `{i.name}`: `{i.type.dtype}{i.type}` (a sample; the batch axis is not written)"
    return f"`{_line_of(t.outline, t.tok)}`"


def _binding_text(a: Analysis, t: Target, d: Def) -> str:
    value = d.value
    if value is None:
        return f"`{t.tok.text}`"
    source = t.outline.text[value[0]:value[1]]
    head = f"```dl\n{t.tok.text} = {source[:200]}\n```"
    first = next((x for x in t.outline.tokens if x.start >= value[0]), None)
    if t.path == a.path and first is not None and first.kind == "name":
        op = find_op(first.text)
        layers = a.layers.get((first.line, first.col))
        if op is not None and layers:
            return head + "\n\n" + help.layer_markdown(layers[0][0], [n for _, n in layers], op)
    return head


# --- completion ----------------------------------------------------------------------------

K = types.CompletionItemKind
BODY_KEYWORDS = ("input", "output", "let", "repeat", "for")
TOP_KEYWORDS = ("model", "block", "train", "let", "use")
DTYPES = tuple(build.DTYPES)  # the spec names an input may be declared with


def _item(label: str, kind: K, detail: str | None = None, doc: str | None = None,
          insert: str | None = None, rank: int = 5) -> types.CompletionItem:
    return types.CompletionItem(
        label=label, kind=kind, detail=detail, insert_text=insert, sort_text=f"{rank}{label}",
        documentation=(types.MarkupContent(kind=types.MarkupKind.Markdown, value=doc)
                       if doc else None))


def completion(a: Analysis, offset: int) -> list[types.CompletionItem]:
    out = a.outline
    if any(c.start < offset <= c.end for c in out.comments):  # typing a comment
        return []
    tok = out.token_at(offset)
    if tok is not None and tok.kind == "string" and tok.start < offset:
        use = next((u for u in out.uses() if u.tok == tok), None)
        return _spec_files(a) if use is not None else []
    start = tok.start if tok is not None and tok.kind == "name" and tok.start < offset else offset
    before = [t for t in out.tokens if t.end <= start]
    prev = before[-1] if before else None
    item = out.item_at(start)
    if item is None or item.body is None or start <= item.body[0] - 1:
        if prev is not None and prev.text == "train":
            return [_item(m.name, K.Reference, "model") for m in out.top_level("model")]
        if prev is not None and prev.text in ("model", "block", "let", "use"):
            return []  # a new name, or a path
        if prev is not None and prev.text in ("=", "(", ",", "[", "+", "-", "*", "/"):
            return _lets(a, start, in_body=False)
        return [_item(k, K.Keyword, rank=4) for k in TOP_KEYWORDS]
    if item.kind == "train":
        return _train_completion(a, item, start, prev)
    func, paren = _call_around(out, start, item)
    if func is not None:
        given = _given(out, paren, start)
        if prev is not None and prev.text == "=" and len(before) > 1 and before[-2].is_name \
                and before[-2].text in _attr_names(a, func):
            return _attr_values(a, func, before[-2].text, start)
        return (_attributes(a, func, given) + _bindings(a, item, start) + _lets(a, start, True)
                + _ops() + _blocks(a))
    if prev is not None and prev.text in ("input", "for"):
        return []  # a new name
    if prev is not None and prev.text == ":" and len(before) > 2 and before[-3].text == "input":
        return [_item(t, K.TypeParameter, "dtype") for t in DTYPES]
    if prev is not None and prev.text in ("repeat", "in"):
        return _lets(a, start, True)
    keywords = [] if prev is not None and prev.text == "=" else \
        [_item(k, K.Keyword, rank=4) for k in BODY_KEYWORDS]
    return _bindings(a, item, start) + _lets(a, start, True) + _ops() + _blocks(a) + keywords


def _given(out: Outline, paren: int, stop: int) -> set[str]:
    """Attribute names already written in the call whose `(` is out.tokens[paren]."""
    depth, given = 0, set()
    for k in range(paren, len(out.tokens)):
        t = out.tokens[k]
        if t.start >= stop:
            break
        if t.text in "([":
            depth += 1
        elif t.text in ")]":
            depth -= 1
        elif depth == 1 and t.is_name and k + 1 < len(out.tokens) and out.tokens[k + 1].text == "=":
            given.add(t.text)
    return given


def _attr_names(a: Analysis, func: Token) -> list[str]:
    op = find_op(func.text)
    if op is not None:
        return list(op.Attrs.model_fields)
    target = resolve(a, func)
    if target is not None and isinstance(target.definition, Item):
        return [p.name for p in target.definition.params]
    return []


def _attributes(a: Analysis, func: Token, given: set[str]) -> list[types.CompletionItem]:
    op = find_op(func.text)
    if op is not None:
        return [_item(name, K.Field, help.attribute_default(op, name), help.attribute(op, name),
                      insert=f"{name}=", rank=0)
                for name in op.Attrs.model_fields if name not in given]
    target = resolve(a, func)
    if target is None or not isinstance(target.definition, Item):
        return []
    return [_item(p.name, K.Field, f"parameter of {func.text}",
                  f"`{_param_text(target.outline, p.tok)}`", insert=f"{p.name}=", rank=0)
            for p in target.definition.params if p.name not in given]


def _attr_values(a: Analysis, func: Token, name: str, offset: int) -> list[types.CompletionItem]:
    op = find_op(func.text)
    values = []
    if op is not None:
        field = op.Attrs.model_fields[name]
        default = None if field.is_required() else help.value_text(field.get_default())
        for v in help.choices(field.annotation):
            doc = find_op(v)
            values.append(_item(v, K.EnumMember, "default" if v == default else None,
                                doc.summary() if doc is not None else None, rank=0))
    return values + _lets(a, offset, True)


def _bindings(a: Analysis, item: Item, offset: int) -> list[types.CompletionItem]:
    seen: dict[str, Def] = {}
    for d in _item_defs(item, offset):
        if d.kind in ("input", "binding"):
            seen[d.name] = d
    return [_item(name, K.Variable, d.kind, rank=1) for name, d in seen.items()]


def _lets(a: Analysis, offset: int, in_body: bool) -> list[types.CompletionItem]:
    found: dict[str, str] = {}
    for _, path, sub in a.used:
        for let in sub.top_level("let"):
            found[let.name] = f"let, from {path.name}"
    for let in _top_lets(a.outline, offset, in_body):
        found[let.name] = "let"
    item = a.outline.item_at(offset)
    for d in _item_defs(item, offset) if in_body else []:
        if d.kind in ("let", "param", "loop"):
            found[d.name] = d.kind
    return [_item(name, K.Constant, detail, rank=2) for name, detail in found.items()]


def _ops() -> list[types.CompletionItem]:
    return [_item(name, K.Function, help.signature(op), help.op_markdown(op), rank=3)
            for name, op in all_ops().items()]


def _blocks(a: Analysis) -> list[types.CompletionItem]:
    found: dict[str, types.CompletionItem] = {}
    for _, path, sub in reversed(a.used):
        for b in sub.top_level("block"):
            found[b.name] = _item(b.name, K.Module, f"block, from {path.name}",
                                  f"```dl\n{_line_of(sub, b.tok).rstrip('{').strip()}\n```", rank=3)
    for b in a.outline.top_level("block"):
        found[b.name] = _item(b.name, K.Module, "block",
                              f"```dl\n{_line_of(a.outline, b.tok).rstrip('{').strip()}\n```", rank=3)
    return list(found.values())


def _spec_files(a: Analysis) -> list[types.CompletionItem]:
    folder = a.path.parent if a.path.is_absolute() else Path.cwd()
    try:
        names = sorted(p.name for p in folder.iterdir() if p.suffix == ".dl" and p != a.path)
    except OSError:
        names = []
    return ([_item(name, K.File, "spec") for name in names[:200]]
            + [_item(name, K.Module, "standard library") for name in stdlib.modules()])


def _train_completion(a: Analysis, item: Item, start: int,
                      prev: Token | None) -> list[types.CompletionItem]:
    """Setting names at the start of a setting; after `name =`, what that setting takes
    (data sources, steps, losses, optimizers, metrics) and, inside a call, its arguments."""
    from dslc.data.catalog import AUGMENT, PREPROCESS, SOURCES
    from dslc.passes.train_check import LOSS_ALIASES, METRICS, OPTIMIZERS, SETTINGS

    out = a.outline
    depth, setting = 0, None
    for t in out.tokens:
        if t.end > start:
            break
        if item.body is None or t.start < item.body[0]:
            continue
        if t.text in "([":
            depth += 1
        elif t.text in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and t.is_name and (nxt := out.after(t)) is not None and nxt.text == "=":
            setting = t.text
    in_value = depth > 0 or (prev is not None and prev.text in ("=", "+", "-", "*", "/"))
    if setting is None or not in_value:
        return [_item(s, K.Property, "train setting", insert=f"{s} = ", rank=0)
                for s in sorted(SETTINGS)]
    sources = {k: v.args for k, v in SOURCES.items()}
    catalogs: dict[str, dict[str, dict[str, object]]] = {
        "data": sources, "validation": sources,
        "preprocess": {k: v.args for k, v in PREPROCESS.items()},
        "augment": {k: v.args for k, v in AUGMENT.items()},
        "optimizer": {k: dict.fromkeys(sorted(v)) for k, v in OPTIMIZERS.items()},
        "loss": {k: {"from_logits": False} for k in LOSS_ALIASES},
        "metrics": {k: {} for k in sorted(METRICS)},
    }
    table = catalogs.get(setting, {})
    func, _ = _call_around(out, start, item)
    if func is not None and func.text in table:
        return [_item(k, K.Field, None if v is None else f"= {help.value_text(v)}",
                      insert=f"{k}=", rank=0) for k, v in table[func.text].items()]
    return [_item(k, K.Value, setting, rank=0) for k in table] + _lets(a, start, in_body=False)


# --- formatting ----------------------------------------------------------------------------

def formatting(a: Analysis, encoding: str = "utf-16") -> list[types.TextEdit]:
    """`dslc fmt` of the whole document as one edit; none when it is formatted, does not
    parse, or dslc has no formatter (dslc.fmt is optional here)."""
    try:
        from dslc.fmt import format_text
    except ImportError:
        return []
    try:
        formatted = format_text(a.text, str(a.path))
    except DslError:
        return []
    if formatted == a.text:
        return []
    return [types.TextEdit(range=Positions(a.text, encoding).range(0, len(a.text)),
                           new_text=formatted)]


__all__ = ["Analysis", "Positions", "analyse", "completion", "definition", "diagnostics",
           "formatting", "hover", "resolve"]
