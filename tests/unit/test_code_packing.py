"""Packing the code a sample runs (the template's warm-up): same behaviour, new copies."""

from __future__ import annotations

import cProfile
import pstats
import sys
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from snakepool.pool.interpreter import code_packing


def _scale(x: int, factor: int = 3, *, offset: int = 1) -> int:
    return x * factor + offset


def _never_called(x: int) -> int:
    return -x


def _adder(n: int) -> Callable[[int], int]:
    return lambda x: x + n  # a closure: one code object, a function per call


def _squares(n: int) -> Iterator[int]:
    yield from (i * i for i in range(n))


class _Greeter:
    def greet(self, name: str) -> str:
        return f"hello {name}"


def _sample() -> None:
    _scale(2)
    _adder(1)(1)
    list(_squares(3))
    _Greeter().greet("x")


def test_hot_code_is_what_the_sample_called() -> None:
    found = code_packing.hot_code(_sample)
    assert len({id(code) for code in found}) == len(found)  # each once
    for function in (_scale, _adder, _squares, _Greeter.greet, _sample):
        assert any(code is function.__code__ for code in found)
    assert not any(code is _never_called.__code__ for code in found)
    inner = [c for c in found if c.co_name == "<lambda>"]
    assert inner and inner[0].co_firstlineno == _adder.__code__.co_firstlineno + 1


def test_under_a_profiler_nothing_is_recorded_and_the_profiler_stays() -> None:
    seen: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        seen.append(event)

    sys.setprofile(profile)
    try:
        assert code_packing.hot_code(_sample) == []
        assert sys.getprofile() is profile and "call" in seen  # the sample ran under it
    finally:
        sys.setprofile(None)


def test_cprofile_keeps_profiling_through_it() -> None:
    # A C profiler cannot be put back from Python: setting it again broke cProfile.
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        assert code_packing.hot_code(_sample) == []
        _never_called(1)
    finally:
        profiler.disable()
    called = {f[2] for f in pstats.Stats(profiler).stats}  # type: ignore[attr-defined]
    assert {"_sample", "_scale", "_never_called"} <= called


def _kept(code: CodeType) -> bool:
    """Whether this very object (code objects compare equal by value) is kept."""
    return any(kept is code for kept in code_packing._originals)


def _same_source(a: CodeType, b: CodeType) -> bool:
    # Not co_code: CPython 3.11 may hand back a run code object's bytes quickened.
    return (a.co_filename, a.co_firstlineno, a.co_qualname, a.co_names) == (
        b.co_filename, b.co_firstlineno, b.co_qualname, b.co_names,
    )  # fmt: skip


def _fresh_module() -> dict[str, Any]:
    """Functions of their own (a module's worth), so packing them touches no other test."""
    namespace: dict[str, Any] = {}
    source = (
        "def scale(x, factor=3, *, offset=1):\n"
        "    return x * factor + offset\n"
        "def adder(n):\n"
        "    return lambda x: x + n\n"
        "def squares(n):\n"
        "    yield from (i * i for i in range(n))\n"
        "def cold(x):\n"
        "    return -x\n"
        "class Greeter:\n"
        "    def greet(self, name):\n"
        "        return f'hello {name}'\n"
    )
    exec(compile(source, "<packing-test>", "exec"), namespace)
    return namespace


def _run_all(ns: dict[str, Any]) -> None:
    ns["scale"](2)
    ns["adder"](1)(1)
    list(ns["squares"](3))
    ns["Greeter"]().greet("x")


def test_packed_functions_get_new_code_objects_and_keep_their_originals() -> None:
    ns = _fresh_module()
    add_one = ns["adder"](1)  # made before packing: its code is packed too
    before = {name: ns[name].__code__ for name in ("scale", "adder", "squares", "cold")}
    greet = ns["Greeter"].greet.__code__
    hot = code_packing.hot_code(lambda: _run_all(ns))

    repointed = code_packing.pack_code(hot)

    assert repointed >= 5  # scale, adder, the lambda made before, squares, greet (+ genexpr)
    for name in ("scale", "adder", "squares"):
        new, old = ns[name].__code__, before[name]
        assert new is not old and _same_source(new, old)
        assert _kept(old) and not _kept(new)  # freed, its blocks would be reused
    assert ns["cold"].__code__ is before["cold"]  # not run by the sample: left alone
    assert ns["Greeter"].greet.__code__ is not greet
    nested = [c for c in ns["adder"].__code__.co_consts if isinstance(c, CodeType)]
    assert add_one.__code__ is nested[0] and add_one(1) == 2  # repointed, still adds


def test_functions_made_after_packing_use_the_packed_nested_code() -> None:
    ns = _fresh_module()
    hot = code_packing.hot_code(lambda: _run_all(ns))
    lambdas = [c for c in hot if c.co_name == "<lambda>" and c.co_filename == "<packing-test>"]
    old_lambda = lambdas[0]
    code_packing.pack_code(hot)
    made_after = ns["adder"](5)
    assert made_after.__code__ is not old_lambda
    assert _same_source(made_after.__code__, old_lambda) and made_after(1) == 6
    nested = [c for c in ns["adder"].__code__.co_consts if isinstance(c, CodeType)]
    assert nested == [made_after.__code__]  # the outer copy holds the inner copy


_PACKED: dict[str, Any] = {}


def _packed_module() -> dict[str, Any]:
    """One namespace packed once (packing scans every object: once is enough)."""
    if not _PACKED:
        ns = _fresh_module()
        code_packing.pack_code(code_packing.hot_code(lambda: _run_all(ns)))
        _PACKED.update(ns)
    return _PACKED


@given(
    x=st.integers(-(10**6), 10**6),
    factor=st.integers(-100, 100),
    offset=st.integers(-100, 100),
    n=st.integers(0, 30),
    name=st.text(max_size=20),
)
def test_packed_functions_compute_what_they_computed(
    x: int, factor: int, offset: int, n: int, name: str
) -> None:
    ns = _packed_module()
    assert not _kept(ns["scale"].__code__)  # running the copy
    assert ns["scale"](x) == x * 3 + 1
    assert ns["scale"](x, factor, offset=offset) == x * factor + offset
    assert ns["adder"](n)(x) == x + n
    assert list(ns["squares"](n)) == [i * i for i in range(n)]
    assert ns["Greeter"]().greet(name) == f"hello {name}"
    assert ns["cold"](x) == -x


def test_equal_code_of_two_files_stays_two() -> None:
    # Code objects compare equal whatever their file: packing one must not touch the other.
    source = "def handler(x):\n    return x + 1\n"
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    exec(compile(source, "first.py", "exec"), first)
    exec(compile(source, "second.py", "exec"), second)
    assert first["handler"].__code__ == second["handler"].__code__  # what == says
    untouched = second["handler"].__code__
    hot = code_packing.hot_code(lambda: first["handler"](1))
    assert [c.co_filename for c in hot if c.co_name == "handler"] == ["first.py"]
    code_packing.pack_code(hot)
    assert second["handler"].__code__ is untouched
    assert first["handler"].__code__ is not untouched
    assert first["handler"].__code__.co_filename == "first.py"


def test_nothing_hot_packs_nothing() -> None:
    assert code_packing.pack_code(set()) == 0


def test_pack_and_quicken_runs_the_sample_once_then_to_quicken_it() -> None:
    ns = _fresh_module()
    runs: list[int] = []

    def sample() -> None:
        runs.append(1)
        _run_all(ns)

    before = ns["scale"].__code__
    repointed = code_packing.pack_and_quicken(sample)
    assert len(runs) == 1 + code_packing.QUICKEN_RUNS
    assert repointed >= 5 and ns["scale"].__code__ is not before and _kept(before)
    assert ns["scale"](2) == 7
