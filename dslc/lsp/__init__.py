"""Editor support: a Language Server for .dl files (`dslc lsp`, needs pygls: the `lsp` extra).

- outline.py: a lexical view of a file that never fails on half-typed text
- features.py: diagnostics, hover, completion, definition, formatting, without a server
- help.py: what hovers and completions say about ops, from the op registry
- server.py: the pygls server over stdio
- textmate.py: the editors' TextMate grammar, made from the op registry
"""
