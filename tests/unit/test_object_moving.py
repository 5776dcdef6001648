"""Moving functions to packed copies (:func:`object_moving.move_functions`): wherever the
function was, the copy is; where it cannot be repointed, nothing moves. Their closure
cells and the classmethod/staticmethod/property wrapping them move with them."""

from __future__ import annotations

import functools
import gc
import weakref
from collections.abc import Callable
from types import FunctionType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.pool.interpreter import code_packing, object_moving

_SOURCE = """
def double(x, *, by=2):
    "Twice x."
    return x * by

def make_reader():
    target = double
    return lambda x: target(x)

class Base:
    def area(self, side):
        return side * side

    @classmethod
    def build(cls, side):
        return cls().area(side)

    @staticmethod
    def unit():
        return 1

    def _get_size(self):
        "The size."
        return 7

    size = property(_get_size)

    def _get_weight(self):
        return 3

    weight = property(_get_weight, doc="Its own docstring.")

class Square(Base):
    def area(self, side):
        return super().area(side) + 0
"""


def _module() -> dict[str, Any]:
    """Functions of their own, so that moving them touches no other test."""
    namespace: dict[str, Any] = {"__name__": "moving_test"}
    exec(compile(_SOURCE, "<moving-test>", "exec"), namespace)
    return namespace


def _movable(ns: dict[str, Any]) -> list[Any]:
    base = vars(ns["Base"])
    return [
        ns["double"],
        base["area"],
        base["build"].__func__,
        base["unit"].__func__,
        base["size"].fget,
        base["weight"].fget,
    ]


def test_a_moved_function_is_the_one_object_everywhere_it_was() -> None:
    # No local variable may hold a function: a running frame's reference cannot be
    # repointed, so a function held by one is (rightly) not moved.
    ns = _module()
    base = ns["Base"]
    registry = {"double": ns["double"]}
    listed = [ns["double"], vars(base)["area"]]
    reader = ns["make_reader"]()
    ns["double"].tag = "kept"  # a function attribute
    before = {id(f) for f in _movable(ns)}

    moved = object_moving.move_functions(_movable(ns))

    assert moved == 6
    assert not before & {id(f) for f in _movable(ns)}  # every one is a new object
    assert registry["double"] is ns["double"] and listed[0] is ns["double"]
    assert listed[1] is vars(base)["area"]
    cell = reader.__closure__[0]  # type: ignore[index]
    assert cell.cell_contents is ns["double"] and reader(5) == 10
    assert base.build(3) == 9 and base.unit() == 1 and base().size == 7
    # Attributes, defaults, names and docstrings come along.
    new_double = ns["double"]
    assert new_double.tag == "kept" and new_double(4, by=3) == 12
    assert (new_double.__name__, new_double.__qualname__, new_double.__module__) == (
        "double", "double", "moving_test",
    )  # fmt: skip
    assert new_double.__doc__ == "Twice x." and new_double.__kwdefaults__ == {"by": 2}
    assert base.size.__doc__ == "The size." and base.weight.__doc__ == "Its own docstring."
    # A subclass override and super() still resolve as before.
    assert ns["Square"]().area(4) == 16 and base().area(4) == 16


def test_a_function_a_running_frame_holds_stays() -> None:
    ns = _module()
    held = ns["double"]
    assert object_moving.move_functions([ns["double"]]) == 0
    assert ns["double"] is held


def test_a_function_held_where_it_cannot_be_repointed_stays() -> None:
    kinds: list[Callable[[Any], Any]] = [
        lambda f: (f,),  # a tuple
        lambda f: {f: 1},  # a dict key
        lambda f: ({"f": f}, weakref.ref(f)),  # a weak reference (beside a dict)
        lambda f: functools.partial(f, 1),  # C state
        lambda f: f.__get__(object()),  # a bound method
    ]
    holders, ids = [], []
    for make in kinds:
        namespace = _module()
        holders.append(make(namespace["double"]))
        ids.append(id(namespace["double"]))
        namespace.clear()
    del namespace
    functions = [f for f in gc.get_objects() if id(f) in ids and callable(f)]
    assert len(functions) == len(kinds)
    assert object_moving.move_functions(functions) == 0
    assert sorted(id(f) for f in functions) == sorted(ids)


_HOLDERS = ("dict", "list", "cell", "tuple", "key", "weakref")
_MOVABLE = {"dict", "list", "cell"}


def _closure_over(function: Any) -> Callable[[], Any]:
    return lambda: function  # a closure: the function in a cell


def _hold(kinds: list[str]) -> tuple[list[Any], int]:
    """A fresh function held once per kind, and nowhere else; its id."""
    function = _module()["double"]
    del function.__globals__["double"]
    held: list[Any] = []
    for kind in kinds:
        if kind == "dict":
            held.append({"f": function})
        elif kind == "list":
            held.append([function])
        elif kind == "cell":
            held.append(_closure_over(function))
        elif kind == "tuple":
            held.append((function,))
        elif kind == "key":
            held.append({function: None})
        else:  # a weak reference, beside a dict keeping the function alive
            held.append((weakref.ref(function), {"f": function}))
    return held, id(function)


def _now(kind: str, holder: Any) -> Any:
    """What ``holder`` holds now."""
    if kind in ("list", "tuple"):
        return holder[0]
    if kind == "key":
        return next(iter(holder))
    if kind == "weakref":
        return holder[0]()
    return holder() if kind == "cell" else holder["f"]


@settings(max_examples=60, deadline=None)
@given(kinds=st.lists(st.sampled_from(_HOLDERS), min_size=1, max_size=6), x=st.integers())
def test_moved_exactly_when_every_holder_can_be_repointed(kinds: list[str], x: int) -> None:
    held, original = _hold(kinds)

    moved = object_moving.move_functions([_now(kinds[0], held[0])])

    found = [_now(kind, holder) for kind, holder in zip(kinds, held, strict=True)]
    assert moved == (1 if set(kinds) <= _MOVABLE else 0)
    assert len({id(f) for f in found}) == 1  # one object, wherever it is held
    assert (id(found[0]) != original) == bool(moved)
    assert found[0](x) == 2 * x


def test_methods_called_often_before_the_move_still_dispatch_right() -> None:
    # The class attribute set resets what CPython cached and specialised for the class.
    ns = _module()
    base, square = ns["Base"], ns["Square"]

    def call_all() -> int:
        return sum(base().area(2) + square().area(3) + base.build(1) for _ in range(50))

    assert call_all() == 50 * (4 + 9 + 1)
    assert object_moving.move_functions([vars(base)["area"], vars(base)["build"].__func__]) == 2
    # Looked up through the class (CPython's attribute cache), the copies are found.
    assert base.area is vars(base)["area"] and square.build.__func__ is vars(base)["build"].__func__
    assert call_all() == 50 * (4 + 9 + 1)
    square.area = lambda self, side: -side  # a later change is still seen
    assert square().area(3) == -3 and base().area(3) == 9


def test_pack_moves_the_functions_it_packs() -> None:
    ns = _module()
    before = id(ns["double"])
    code_packing.pack(code_packing.hot_code(lambda: ns["double"](1)))
    assert id(ns["double"]) != before and ns["double"](21) == 42
    assert not any(kept is ns["double"].__code__ for kept in code_packing._originals)
    assert any(id(moved) == before for moved in object_moving._moved)


def test_pack_without_methods_moves_module_functions_only() -> None:
    ns = _module()
    base = ns["Base"]
    before = {"double": id(ns["double"]), "area": id(vars(base)["area"])}
    code = vars(base)["area"].__code__
    code_packing.pack(
        code_packing.hot_code(lambda: (ns["double"](1), base().area(2))), methods=False
    )
    assert id(ns["double"]) != before["double"] and ns["double"](2) == 4
    assert id(vars(base)["area"]) == before["area"]  # a method: stays, on packed code
    assert vars(base)["area"].__code__ is not code and base().area(3) == 9


def test_the_cells_and_wrappers_of_moved_functions_move_with_them() -> None:
    ns = _module()
    base = ns["Base"]
    held = {"reader": ns["make_reader"]()}  # not a local variable: a frame's reference
    wrappers = {name: id(vars(base)[name]) for name in ("build", "unit", "size", "weight")}
    cell = id(held["reader"].__closure__[0])

    assert object_moving.move_functions([held["reader"], *_movable(ns)]) == 7

    for name, old in wrappers.items():
        assert id(vars(base)[name]) != old, name  # a new classmethod, staticmethod, property
    assert type(vars(base)["build"]) is classmethod and base.build(3) == 9
    assert vars(base)["build"].__func__ is not None and base.unit() == 1
    assert base().size == 7 and base.size.__doc__ == "The size."
    assert base.weight.__doc__ == "Its own docstring." and base().weight == 3
    assert vars(base)["build"].__name__ == "build"  # what the wrapper copied stays
    assert id(held["reader"].__closure__[0]) != cell and held["reader"](4) == 8


_COUNTER = """
def make():
    count = 0
    def bump():
        nonlocal count
        count += 1
        return count
    def read():
        return count
    return {'bump': bump}, read
"""


def _counter() -> tuple[dict[str, Any], Any]:
    """Two closures sharing one cell: ``bump`` in a dict, ``read`` returned."""
    namespace: dict[str, Any] = {}
    exec(compile(_COUNTER, "<cells-test>", "exec"), namespace)
    return namespace["make"]()  # type: ignore[no-any-return]


def test_a_cell_two_moved_closures_share_stays_shared() -> None:
    pair, read = _counter()
    pair["read"] = read
    del read  # only the dict holds both now
    shared = id(pair["bump"].__closure__[0])
    assert object_moving.move_functions(list(pair.values())) == 2
    assert id(pair["bump"].__closure__[0]) != shared  # a new cell ...
    assert pair["bump"].__closure__[0] is pair["read"].__closure__[0]  # ... still one
    assert (pair["bump"](), pair["bump"](), pair["read"]()) == (1, 2, 2)


def test_a_cell_something_else_holds_stays() -> None:
    moving, staying = _counter()  # read is held here, by a running frame
    shared = id(moving["bump"].__closure__[0])
    assert object_moving.move_functions(list(moving.values())) == 1
    assert id(moving["bump"].__closure__[0]) == shared  # read's closure holds it too
    assert (moving["bump"](), staying()) == (1, 1)


def test_a_closure_tuple_an_unmoved_function_shares_keeps_its_cells() -> None:
    # The "copy a function" idiom shares the closure tuple: a new cell for the moved one
    # alone would split the state in two.
    holder: dict[str, Any] = {"bump": _counter()[0]["bump"]}
    bump = holder["bump"]
    alias = FunctionType(bump.__code__, bump.__globals__, "alias", None, bump.__closure__)
    del bump
    assert object_moving.move_functions([holder["bump"]]) == 1
    assert (holder["bump"](), alias(), holder["bump"]()) == (1, 2, 3)


def test_replaced_wrappers_keep_their_name_and_what_was_set_on_them() -> None:
    class Thing:
        @property
        def fixed(self) -> int:
            return 1

        @classmethod
        def make(cls) -> str:
            "Original doc."
            return "made"

    vars(Thing)["make"].__doc__ = "Custom doc."
    vars(Thing)["make"].extra = 5
    before = {name: id(vars(Thing)[name]) for name in ("fixed", "make")}
    functions = [vars(Thing)["fixed"].fget, vars(Thing)["make"].__func__]
    assert object_moving.move_functions(functions) == 2
    del functions
    assert {name: id(vars(Thing)[name]) for name in before}.keys() == before.keys()
    assert all(id(vars(Thing)[name]) != old for name, old in before.items())  # replaced
    with pytest.raises(AttributeError, match=r"property 'fixed' of '[\w.<>]*Thing' object"):
        Thing().fixed = 2  # type: ignore[misc]
    assert (vars(Thing)["make"].__doc__, vars(Thing)["make"].extra) == ("Custom doc.", 5)
    assert Thing.make() == "made" and Thing().fixed == 1


def test_a_wrapper_held_elsewhere_keeps_its_function() -> None:
    class Thing:
        @classmethod
        def make(cls) -> str:
            return "made"

    kept = vars(Thing)["make"]  # a second holder: the wrapper cannot be replaced
    assert object_moving.move_functions([vars(Thing)["make"].__func__]) == 0
    assert vars(Thing)["make"] is kept and Thing.make() == "made"


def test_a_class_namespace_it_cannot_write_leaves_the_function_whole() -> None:
    def handler() -> str:
        return "handled"

    odd = type("Odd", (), {"named": handler, 1: handler})  # a non-string key too
    del handler
    assert object_moving.move_functions([vars(odd)["named"]]) == 0  # no error either
    assert vars(odd)[1] is vars(odd)["named"] and odd.named() == "handled"


def test_a_metaclass_hiding_dict_does_not_stop_it() -> None:
    class Hiding(type):
        def __getattribute__(cls, name: str) -> Any:
            if name == "__dict__":
                raise TypeError("no __dict__ here")
            return super().__getattribute__(name)

    class Thing(metaclass=Hiding):
        def act(self) -> str:
            return "acted"

    before = id(type.__dict__["__dict__"].__get__(Thing)["act"])
    namespace = type.__dict__["__dict__"].__get__(Thing)
    assert object_moving.move_functions([namespace["act"]]) == 1
    assert id(namespace["act"]) != before and Thing().act() == "acted"
