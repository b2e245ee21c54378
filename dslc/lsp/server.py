"""`dslc lsp`: the Language Server, over stdin/stdout. pygls speaks the protocol; the answers
come from dslc/lsp/features.py. The server reads the documents the editor opened and the
.dl files they `use` (as `dslc check` does); it never opens a path a request names.

Handlers run one at a time on pygls' event loop: the parser is shared and not re-entrant.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import BinaryIO

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from dslc import __version__
from dslc.lsp import features
from dslc.lsp.features import Analysis, Positions

# Seconds without a change before a document is checked again (a 5,000-layer spec takes
# seconds to check; checking each keystroke would fall ever further behind).
SETTLE_S = 0.3


class DslcServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("dslc", __version__)
        self.analyses: dict[str, Analysis] = {}
        self.pending: dict[str, asyncio.TimerHandle] = {}

    @property
    def encoding(self) -> str:
        return str(self.workspace.position_encoding or "utf-16")

    def document(self, uri: str) -> TextDocument | None:
        doc = self.workspace.text_documents.get(uri)
        return doc if isinstance(doc, TextDocument) else None

    def analysis(self, uri: str) -> Analysis | None:
        """The analysis of the open document's current text (made again if it changed)."""
        doc = self.document(uri)
        if doc is None:
            return None
        text = doc.source
        cached = self.analyses.get(uri)
        if cached is None or cached.text != text:
            cached = features.analyse(text, Path(doc.path) if doc.path else Path("untitled.dl"))
            self.analyses[uri] = cached
        return cached

    def schedule(self, uri: str) -> None:
        """Publish diagnostics once typing pauses: a burst of changes is checked once, at
        its last version (handlers run on the event loop, which holds later messages)."""
        pending = self.pending.pop(uri, None)
        if pending is not None:
            pending.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (pygls' synchronous mode): publish now
            self.publish(uri)
            return
        self.pending[uri] = loop.call_later(SETTLE_S, self.publish, uri)

    def publish(self, uri: str) -> None:
        self.pending.pop(uri, None)
        a = self.analysis(uri)
        if a is None:
            return
        doc = self.document(uri)
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, version=doc.version if doc is not None else None,
            diagnostics=features.diagnostics(a, self.encoding)))

    def offset(self, a: Analysis, position: types.Position) -> int:
        return Positions(a.text, self.encoding).offset(position)


def make_server() -> DslcServer:
    server = DslcServer()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: DslcServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: DslcServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.schedule(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: DslcServer, params: types.DidSaveTextDocumentParams) -> None:
        # Files this one `use`s may have changed on disk: check again.
        ls.analyses.pop(params.text_document.uri, None)
        ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: DslcServer, params: types.DidCloseTextDocumentParams) -> None:
        pending = ls.pending.pop(params.text_document.uri, None)
        if pending is not None:
            pending.cancel()
        ls.analyses.pop(params.text_document.uri, None)
        ls.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: DslcServer, params: types.HoverParams) -> types.Hover | None:
        a = ls.analysis(params.text_document.uri)
        if a is None:
            return None
        return features.hover(a, ls.offset(a, params.position), ls.encoding)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=["(", ",", "=", '"', ":"]))
    def completion(ls: DslcServer, params: types.CompletionParams) -> types.CompletionList:
        a = ls.analysis(params.text_document.uri)
        items = [] if a is None else features.completion(a, ls.offset(a, params.position))
        return types.CompletionList(is_incomplete=False, items=items)

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: DslcServer, params: types.DefinitionParams) -> list[types.Location]:
        a = ls.analysis(params.text_document.uri)
        if a is None:
            return []
        return features.definition(a, ls.offset(a, params.position), ls.encoding)

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    def formatting(ls: DslcServer, params: types.DocumentFormattingParams) -> list[types.TextEdit]:
        a = ls.analysis(params.text_document.uri)
        return [] if a is None else features.formatting(a, ls.encoding)

    return server


def serve(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    make_server().start_io(stdin, stdout)
