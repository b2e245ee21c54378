"""Passes over the syntax tree and the graph: build (names, blocks, repeat), shapes, train checks."""
