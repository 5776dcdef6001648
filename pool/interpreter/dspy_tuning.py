"""What DSPy rebuilds on every program, made once: applied by the DSPy adapter at import.

An interpreter is forked from a template that has imported DSPy and run a warm-up
program; every page the interpreter then writes is its own copy. Two things DSPy does
for each program cost both time and such pages, for nothing an interpreter needs:

- A signature is a pydantic model class that DSPy reads fields from but never validates
  or serializes; pydantic still builds its validator and serializer when the class is
  created (every new program's compile). :func:`tune` sets ``defer_build`` on
  ``dspy.Signature``'s config, which every signature inherits: pydantic builds them on
  first use, if ever.
- DSPy turns every field value into JSON-able data (inputs, outputs, the dummy LM's
  answers) and validates every parsed output through a new ``pydantic.TypeAdapter`` of
  its type: a schema built and thrown away several times per run. :func:`tune` gives
  ``dspy.adapters.utils`` — the module doing both — a TypeAdapter that keeps the last
  :data:`TYPE_ADAPTERS` per type, so ``str`` (built by the template's warm-up, shared
  by every interpreter) and each program's output types are built once.

Measured on a forked interpreter's first ``execute_program`` (compile + run of a new
definition), in a pool of 8: ~0.65 MB fewer pages copied from the template per
interpreter (0.35 MB of it the deferred build); a run of a compiled
program ~30 % faster (0.26 → 0.18 ms with ``DummyLM``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

#: ``(input names, output names, instructions)`` → a ``dspy.Signature`` class.
SignatureFromNames = Callable[[list[str], list[str], Any], Any]

__all__ = ["TYPE_ADAPTERS", "OneDummyLM", "cached_type_adapter", "signature_from_names", "tune"]

#: TypeAdapters kept per interpreter (least recently used dropped first). A program's
#: output types are usually ``str`` and a few more; a dropped one is rebuilt when needed.
TYPE_ADAPTERS = 256


def cached_type_adapter(type_adapter: type) -> Any:
    """A drop-in for ``TypeAdapter``: ``factory(type)`` is the same adapter each time for
    a hashable type; any other call (more arguments, an unhashable type) builds a new
    one, as ``TypeAdapter`` itself would."""
    cached = functools.lru_cache(maxsize=TYPE_ADAPTERS)(type_adapter)

    def factory(annotation: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return type_adapter(annotation, *args, **kwargs)
        try:
            return cached(annotation)
        except TypeError:  # unhashable: nothing to key a cache with
            return type_adapter(annotation)

    factory.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return factory


def tune(dspy: ModuleType) -> None:
    """Apply both to an imported ``dspy`` (idempotent)."""
    dspy.Signature.model_config["defer_build"] = True
    utils = dspy.adapters.utils
    if not hasattr(utils.TypeAdapter, "cache_info"):
        utils.TypeAdapter = cached_type_adapter(utils.TypeAdapter)


def signature_from_names(dspy: ModuleType) -> SignatureFromNames | None:
    """The ``dspy.Signature`` of a plain signature (``a, b -> c``: names only, see
    :func:`~snakepool.pool.interpreter.programs.plain_names`), built from its names.

    DSPy reads a signature's text with Python's parser (``ast.parse`` of each side,
    ``signature.py``'s ``_parse_field_string``), then builds the class from a dict of
    ``name → (type, field)``; given that dict, it skips the parsing. For names without a
    type it makes ``(str, InputField(IS_TYPE_UNDEFINED=True))`` and
    ``(str, OutputField())``. The compiler has checked the names already, so this
    builds the dict itself.

    That dict is DSPy's own detail: the builder is returned only if, on this DSPy, it
    makes the same class as the text does (name, signature text, instructions, every
    field's repr), and None otherwise (the caller then passes the text, as before).
    """

    def build(inputs: list[str], outputs: list[str], instructions: Any) -> Any:
        fields: dict[str, Any] = {
            name: (str, dspy.InputField(IS_TYPE_UNDEFINED=True)) for name in inputs
        }
        fields.update((name, (str, dspy.OutputField())) for name in outputs)
        return dspy.Signature(fields, instructions)

    def same(a: Any, b: Any) -> bool:
        return (a.__name__, a.signature, a.instructions, repr(a.fields)) == (
            b.__name__,
            b.signature,
            b.instructions,
            repr(b.fields),
        )

    try:
        for instructions in ("Answer the question.", None):
            built = build(["question", "context"], ["answer", "score"], instructions)
            parsed = dspy.Signature("question, context -> answer, score", instructions)
            if not same(built, parsed):
                return None
    except Exception:  # another DSPy: its own way, through the text
        return None
    return build


class OneDummyLM:
    """``answers`` → this interpreter's one ``DummyLM``, now answering ``answers``.

    A ``DummyLM`` is built per run otherwise (the compile's trial run and every
    ``execute_program`` on the dummy LM): a ``BaseLM``, a ``ChatAdapter`` and two
    engines each time, ~30 µs and, in a forked interpreter, pages of the template
    copied. Built once (by the template's warm-up, so it is shared), it is given each
    run's answers instead: in its dict mode DummyLM reads ``self.answers`` on every
    call and keeps nothing else of a run (LM history is off, ``RUN_CONTEXT``). One
    request runs at a time in an interpreter, so runs never share it at once.
    """

    def __init__(self, dummy_lm: Any) -> None:
        self._class = dummy_lm
        self._lm: Any = None

    def __call__(self, answers: dict[str, dict[str, Any]]) -> Any:
        if self._lm is None:
            self._lm = self._class(answers)
        else:
            self._lm.answers = answers
        return self._lm
