"""The TypeAdapter cache the DSPy adapter gives DSPy (no DSPy needed here)."""

from __future__ import annotations

from typing import Any, ClassVar

from snakepool.pool.interpreter.dspy_tuning import TYPE_ADAPTERS, OneDummyLM, cached_type_adapter


class _Adapter:
    built: ClassVar[list[Any]] = []

    def __init__(self, annotation: Any, *args: Any, **kwargs: Any) -> None:
        self.annotation, self.args, self.kwargs = annotation, args, kwargs
        _Adapter.built.append(annotation)


def _factory() -> Any:
    _Adapter.built = []
    return cached_type_adapter(_Adapter)


def test_one_adapter_per_hashable_type() -> None:
    factory = _factory()
    assert factory(str) is factory(str)
    assert factory(list[str]) is factory(list[str])
    assert factory(int) is not factory(str)
    assert _Adapter.built == [str, list[str], int]


def test_other_calls_build_as_the_class_would() -> None:
    factory = _factory()
    unhashable = [str]
    assert factory(unhashable) is not factory(unhashable)  # nothing to key a cache with
    configured = factory(str, config={"strict": True})
    assert configured.kwargs == {"config": {"strict": True}} and configured is not factory(str)
    assert len(_Adapter.built) == 4


def test_the_cache_is_bounded() -> None:
    factory = _factory()
    first = factory(0)
    for key in range(1, TYPE_ADAPTERS + 1):
        factory(key)
    assert factory(0) is not first  # least recently used, dropped
    assert factory.cache_info().currsize == TYPE_ADAPTERS


class _Scripted:
    built = 0

    def __init__(self, answers: dict[str, Any]) -> None:
        _Scripted.built += 1
        self.answers = answers


def test_one_dummy_lm_is_built_then_given_each_runs_answers() -> None:
    one = OneDummyLM(_Scripted)
    first = one({"": {"answer": "a"}})
    second = one({"": {"answer": "b"}})
    assert first is second and _Scripted.built == 1
    assert second.answers == {"": {"answer": "b"}}  # what the run asked for, not the first
