"""What the command line accepts, checked by click before a command runs.

A value the CLI cannot use is a usage error (exit 2, ``Invalid value for …``) before
anything connects or starts — never a traceback from deep inside Celery or json, and
never something accepted and then misused (``--timeout -1``):

- **seconds** (:data:`SECONDS`): a finite number above 0 and at most a day;
- **ids** (:func:`command_name`, :func:`session_id`, :func:`task_id`,
  :func:`node_name`): full matches of the patterns in :mod:`snakepool.config.ids`;
- **JSON objects** (:func:`json_object`): JSON, an object, nested at most
  ``MAX_NESTING`` levels (what a request may carry), so ``[[[…]]]`` 3000 deep is an
  error naming the depth, not a ``RecursionError``; numbers finite (``NaN`` and
  ``1e999`` are not JSON numbers), integers exact at any length up to
  :data:`MAX_INT_DIGITS` digits (Python's own parser stops at 4300, with a traceback);
- **counts** (:data:`COUNT`): whole numbers from 1 to :data:`MAX_COUNT`;
- **options that set a setting** (:func:`setting_range`: ``--pool-size``, ``--ttl``,
  the controller's policy): the setting's own range, finite, named as the option.
"""

from __future__ import annotations

import decimal
import json
import math
from typing import TYPE_CHECKING, Any

import click

from snakepool.config.ids import (
    NODE_NAME,
    validate_command_name,
    validate_request_id,
    validate_session_id,
)
from snakepool.errors import InvalidArguments

__all__ = [
    "COUNT",
    "LOG_LEVELS",
    "MAX_COUNT",
    "MAX_INT_DIGITS",
    "MAX_SECONDS",
    "REASON",
    "SECONDS",
    "SHARE",
    "FiniteFloatRange",
    "Seconds",
    "command_name",
    "json_object",
    "node_name",
    "refuse_control_characters",
    "session_id",
    "setting_range",
    "stored_text_object",
    "task_id",
]

#: The longest wait any option accepts: a day (``MAX_TIMEOUT_SECONDS`` of the lanes).
MAX_SECONDS = 86400.0
#: The largest count an option takes (``-n``): Redis takes counts as 64-bit integers.
MAX_COUNT = 1_000_000
#: The longest integer a JSON argument may hold, in digits (converting more takes
#: seconds: the conversion is quadratic).
MAX_INT_DIGITS = 100_000
#: Python converts longer digit strings only through ``decimal`` (its int() refuses).
_INT_DIGITS_PLAIN = 4000
#: What ``--loglevel`` accepts (Python's level names).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: A node name without its ``@host`` part (the name part of ``NODE_NAME``).
_NAME_PART = "1-64 characters of A-Z a-z 0-9 _ . : -"

if TYPE_CHECKING:  # click 8.2+ types ParamType by its value; 8.1 cannot subscript it
    _FloatParam = click.ParamType[float]
else:
    _FloatParam = click.ParamType


class Seconds(_FloatParam):
    """A number of seconds: finite, above 0, at most ``maximum``.

    Args:
        maximum: The largest value accepted.
    """

    name = "seconds"

    def __init__(self, maximum: float = MAX_SECONDS) -> None:
        self.maximum = maximum

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """The value as a float.

        Raises:
            click.BadParameter: not a number, not finite, not in ``(0, maximum]``.
        """
        try:
            seconds = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            seconds = math.nan
        if not math.isfinite(seconds) or not 0 < seconds <= self.maximum:
            self.fail(
                f"{str(value)[:40]!r} is not a number of seconds above 0 and at most "
                f"{self.maximum:g}",
                param,
                ctx,
            )
        return seconds


#: Seconds, up to a day.
SECONDS = Seconds()
#: A count: 1 to ``MAX_COUNT``.
COUNT = click.IntRange(1, MAX_COUNT)


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, finite: click's own lets ``nan`` through (no comparison with it
    is true), to fail later and elsewhere."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number!r} is not a finite number", param, ctx)
        return number


#: A share (a rate): a finite number from 0 to 1.
SHARE = FiniteFloatRange(0, 1)


def setting_range(name: str) -> click.IntRange | click.FloatRange:
    """The click type of an option that sets the setting ``name`` (``pool_size``): its
    range taken from the settings model, so the option and the setting never disagree
    and a bad value is a usage error naming the option, before anything starts.

    Raises:
        KeyError: no such setting.
    """
    import annotated_types

    from snakepool.config.settings import Settings

    field = Settings.model_fields[name]
    bounds: dict[str, Any] = {}
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge | annotated_types.Gt):
            bounds["min"] = rule.ge if isinstance(rule, annotated_types.Ge) else rule.gt
            bounds["min_open"] = isinstance(rule, annotated_types.Gt)
        elif isinstance(rule, annotated_types.Le | annotated_types.Lt):
            bounds["max"] = rule.le if isinstance(rule, annotated_types.Le) else rule.lt
            bounds["max_open"] = isinstance(rule, annotated_types.Lt)
    if field.annotation is int:
        return click.IntRange(**bounds)
    return FiniteFloatRange(**bounds)


def _checked(check: Any, value: Any) -> Any:
    try:
        return check(value)
    except InvalidArguments as exc:
        raise click.BadParameter(exc.message) from None


def command_name(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback: ``value`` (a name, or a tuple of names) if each fully matches
    ``COMMAND_NAME``.

    Raises:
        click.BadParameter: one does not.
    """
    if isinstance(value, tuple):
        return tuple(_checked(validate_command_name, v) for v in value)
    return _checked(validate_command_name, value)


def session_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: ``value`` if it is a session id (or None when not given).

    Raises:
        click.BadParameter: it is not 1-128 characters of ``[A-Za-z0-9_.:-]``.
    """
    return None if value is None else _checked(validate_session_id, value)


def task_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A click callback: ``value`` if it is a request (task) id.

    Raises:
        click.BadParameter: it is not 1-128 characters of ``[A-Za-z0-9_.:-]``.
    """
    checked: str = _checked(validate_request_id, value)
    return checked


def node_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: a node name as ``--name`` takes it: ``name`` (``@host`` is
    added) or a whole ``name@host``, each a full match of ``NODE_NAME``.

    Raises:
        click.BadParameter: anything else (``a b``, a final newline, 65 characters).
    """
    if value is None:
        return None
    whole = value if "@" in value else f"{value}@host"
    if NODE_NAME.fullmatch(whole) is None:
        raise click.BadParameter(
            f"{value[:70]!r} is not a node name: use {_NAME_PART}, optionally followed by "
            "@host (letters, digits, dots and hyphens)"
        )
    return value


def _depth(value: Any) -> int:
    """How many containers deep ``value`` nests (iteratively: no recursion limit)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _exact_int(digits: str) -> int:
    count = len(digits.lstrip("-"))
    if count > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {count} digits (at most {MAX_INT_DIGITS})")
    return int(digits) if count <= _INT_DIGITS_PLAIN else int(decimal.Decimal(digits))


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:40]} is beyond a finite number")
    return number


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def json_object(text: str, *, param_hint: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object that a request may carry.

    Args:
        text: What the user typed.
        param_hint: How the parameter is named in the error (``ARGS``, ``--metadata``).

    Raises:
        click.BadParameter: not JSON (``NaN``, ``Infinity`` and ``1e999`` included), an
            integer longer than ``MAX_INT_DIGITS``, not an object, or nested deeper
            than ``MAX_NESTING`` (:mod:`snakepool.pool.request`).
    """
    from snakepool.pool.request import MAX_NESTING

    too_deep = f"nested more than {MAX_NESTING} levels deep (at most {MAX_NESTING})"
    try:
        value = json.loads(
            text, parse_int=_exact_int, parse_float=_finite_float, parse_constant=_not_json
        )
    except ValueError as exc:  # JSONDecodeError, or a number refused above
        raise click.BadParameter(f"not JSON: {exc}", param_hint=param_hint) from None
    except RecursionError:  # deeper than the parser goes: far past MAX_NESTING
        raise click.BadParameter(too_deep, param_hint=param_hint) from None
    if not isinstance(value, dict):
        raise click.BadParameter(
            f"must be a JSON object ({{...}}), not {type(value).__name__}", param_hint=param_hint
        )
    if _depth(value) > MAX_NESTING:
        raise click.BadParameter(too_deep, param_hint=param_hint)
    return value


def stored_text_object(text: str, *, param_hint: str) -> dict[str, Any]:
    """:func:`json_object` for data that is stored and shown to operators later
    (``--metadata``): no string in it, key or value, may hold a control character.

    Raises:
        click.BadParameter: as :func:`json_object`, or a control character in a string.
    """
    value = json_object(text, param_hint=param_hint)
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, str):
            refuse_control_characters(item, what="a string", param_hint=param_hint)
    return value


def _a_reason(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("say why: the reason is kept in the audit trail")
    refuse_control_characters(value, what="the reason")
    return value


def refuse_control_characters(text: str, *, what: str, param_hint: str | None = None) -> None:
    """Refuse operator text that is stored and printed later if it holds a control
    character (ESC, a newline, a C1 code…; a tab is fine): it would drive the terminal
    of whoever reads it back.

    Raises:
        click.BadParameter: naming the characters found.
    """
    from snakepool.tasks.cli._terminal import control_characters

    found = control_characters(text)
    if found:
        raise click.BadParameter(
            f"{what} holds control characters ({', '.join(found)}): it is kept and printed "
            "to terminals later; use printable text",
            param_hint=param_hint,
        )


#: ``--reason``: why a rollout change is made (required, not blank; audited).
REASON = click.option(
    "--reason", required=True, callback=_a_reason, help="Why (kept in the audit trail)."
)
