"""Field names DSPy keeps for itself, read from the installed DSPy.

A signature's input fields reach a DSPy module as keyword arguments, and its fields
become attributes of a pydantic model, so some names can never be fields — DSPy either
refuses the signature with an unrelated message (``instructions -> answer``: "'NoneType'
object is not subscriptable") or, worse, accepts it and then fails, or silently does
something else, on every call (``config -> answer``: the input is taken as the LM
configuration; ``lm``, ``demos`` likewise). Those names, and why:

- the keywords a module call consumes (``Predict._forward_preprocess`` in
  ``dspy/predict/predict.py`` pops ``signature``, ``demos``, ``config``, ``lm``,
  ``new_signature`` and ``prediction`` before the inputs are read);
- the named parameters on the call path (``Module.__call__`` and its callback wrapper
  ``instance``, ``self``; ``Predict._forward_postprocess``'s ``completions``, …), read
  with :mod:`inspect` so a DSPy upgrade is followed;
- the attributes of every ``dspy.Signature`` class, defined on its metaclass
  (``instructions``, ``signature``, ``fields``, ``input_fields``, ``output_fields``, …);
- pydantic's ``model_*`` members (a signature is a pydantic model);
- for ``chain_of_thought``, ``reasoning``: the output field ChainOfThought adds.

Attributes of modules and predictions (``history``, ``callbacks``, ``keys``, …) are not
reserved: inputs travel as keyword arguments and outputs are read by key, so they never
meet (``history: dspy.History`` is DSPy's own idiom).
"""

from __future__ import annotations

import inspect
from functools import cache
from types import ModuleType
from typing import Any

__all__ = ["CALL_KEYWORDS", "reserved_field_names"]

#: Keyword arguments ``Predict._forward_preprocess`` takes for itself (DSPy 3).
CALL_KEYWORDS = ("signature", "demos", "config", "lm", "new_signature", "prediction")

# Where a DSPy call passes the inputs as **kwargs: (class attribute, method name).
_CALL_PATH = (
    ("Module", "__call__"),
    ("Predict", "__call__"),
    ("Predict", "forward"),
    ("Predict", "_forward_preprocess"),
    ("Predict", "_forward_postprocess"),
    ("ChainOfThought", "forward"),
)
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _parameters(function: Any) -> set[str]:
    names: set[str] = set()
    for follow in (False, True):  # the callback wrapper's own names, and the wrapped one's
        try:
            signature = inspect.signature(function, follow_wrapped=follow)
        except (TypeError, ValueError):
            continue
        names |= {p.name for p in signature.parameters.values() if p.kind in _NAMED}
    return names


@cache
def _reserved(dspy: ModuleType) -> dict[str, str]:
    reasons: dict[str, str] = {}
    for class_name, method in _CALL_PATH:
        function = getattr(getattr(dspy, class_name, None), method, None)
        for name in _parameters(function) if function is not None else ():
            reasons[name] = f"a parameter of DSPy's {class_name}.{method}"
    for name in CALL_KEYWORDS:
        reasons[name] = "a keyword argument every DSPy module call takes for itself"
    meta = type(dspy.Signature)
    for name in set(dir(meta)) - set(dir(type)):
        if not name.startswith("_"):
            reasons[name] = "an attribute of every dspy.Signature class"
    import pydantic

    for name in dir(pydantic.BaseModel):
        if name.startswith("model_"):
            reasons[name] = "a pydantic model member (a dspy.Signature is a pydantic model)"
    return reasons


def reserved_field_names(dspy: ModuleType, module_kind: str) -> dict[str, str]:
    """Field names a program of ``module_kind`` cannot use, each with the reason.

    Args:
        dspy: The imported ``dspy`` package (passed in: this module never imports it).
        module_kind: ``predict`` or ``chain_of_thought``.
    """
    reasons = _reserved(dspy)
    if module_kind == "chain_of_thought":
        return {**reasons, "reasoning": "the output field dspy.ChainOfThought adds"}
    return reasons
