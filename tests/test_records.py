"""dslc/records.py: what `@dataclass` gave the front end's classes, without its per-class cost."""

from __future__ import annotations

import copy
import pickle
from dataclasses import FrozenInstanceError, field

import pytest

from dslc.diagnostics import Collector, Diagnostic, Span
from dslc.ir.graph import BlockCall
from dslc.records import frozen, record, replace


@frozen
class Point:
    x: int
    y: int = 0


@record
class Bag:
    name: str
    items: list[int] = field(default_factory=list)
    size: int = 1


def test_construction_by_position_and_keyword():
    assert Point(1, 2) == Point(x=1, y=2) == Point(1, y=2)
    assert Point(3).y == 0
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point()
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        Point(1, z=2)
    with pytest.raises(TypeError, match="multiple values"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="positional"):
        Point(1, 2, 3)


def test_default_factories_give_each_record_its_own_value():
    a, b = Bag("a"), Bag("b")
    a.items.append(1)
    assert b.items == [] and a.items == [1]
    a.size = 5  # mutable records take assignment
    assert a == Bag("a", [1], 5) and a != Bag("a", [1], 4)


def test_frozen_records_are_immutable_and_hashable_mutable_ones_unhashable():
    p = Point(1, 2)
    with pytest.raises(FrozenInstanceError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del p.x  # type: ignore[misc]
    assert {Point(1, 2): "a"}[Point(1, 2)] == "a"
    assert hash(Span("f.dl", 1, 2)) == hash(Span("f.dl", 1, 2))
    with pytest.raises(TypeError):
        hash(Bag("a"))
    with pytest.raises(AttributeError):
        Point(1).z = 1  # type: ignore[attr-defined]  # slots: no stray attributes


def test_copies_and_pickles_rebuild_through_the_constructor():
    p = Point(1, 2)
    for twin in (copy.copy(p), copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        assert twin == p and type(twin) is Point
    bag = Bag("a", [1, 2])
    deep = copy.deepcopy(bag)
    assert deep == bag and deep.items is not bag.items
    assert replace(p, y=5) == Point(1, 5)
    errors = Collector()
    errors.error("bad", Span("f.dl", 1, 1), "hint")
    assert errors.diagnostics == [Diagnostic("bad", Span("f.dl", 1, 1), "hint")]


def test_a_span_in_a_pydantic_model_is_taken_as_is_and_dumped_as_a_dict():
    span = Span("f.dl", 3, 4, 3, 9)
    call = BlockCall(instance="b", block="blk", span=span)
    assert call.span is span
    assert call.model_dump()["span"] == {"file": "f.dl", "line": 3, "col": 4, "end_line": 3,
                                         "end_col": 9}
    assert '"span":{"file":"f.dl","line":3,"col":4,"end_line":3,"end_col":9}' in \
        call.model_dump_json()
    with pytest.raises(ValueError):
        BlockCall(instance="b", block="blk", span={"file": "f.dl"})  # a Span, nothing else
