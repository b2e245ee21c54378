"""The reference backend: a numpy interpreter of the IR, float64 inside, written from the op
definitions alone. It shares no code with the framework lowerings it checks; `dslc verify`
and the op test matrix hold every other backend against it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dslc.backends.base import Backend, Runtime

if TYPE_CHECKING:
    import numpy as np

    from dslc.backends.lowering import LoweringTable
    from dslc.ir.graph import Graph


class ReferenceBackend(Backend):
    name = "reference"
    summary = "numpy interpreter, float64: the oracle the frameworks are checked against"
    runs = True

    @property
    def lowerings(self) -> LoweringTable:
        from .interpret import LOWERINGS

        return LOWERINGS

    def build(self, graph: Graph, weights: dict[str, np.ndarray], device: str = "cpu",
              precision: str = "fp32") -> Runtime:
        self.check_options(None, precision)
        from .interpret import Interpreter

        return Interpreter(graph, weights)


BACKEND = ReferenceBackend()
