"""Timeouts a caller passes (``Pool.execute``, ``Client.execute``, ``AsyncClient.wait``),
checked at the door.

A timeout is a finite number of seconds above 0 and at most :data:`MAX_TIMEOUT_SECONDS`
(the ceiling of ``REQUEST_TIMEOUT`` and ``RESULT_TIMEOUT``). It is checked before
anything is sent or leased: once a request is on its way, a timeout that cannot be
waited on (``inf`` or ``1e300`` overflow the system's poll and timer calls, ``"5"``
cannot be compared) would fail after the command ran — the request lost to its
caller, an interpreter recycled for nothing.
"""

from __future__ import annotations

from snakepool.config.quoting import describe
from snakepool.errors import InvalidArguments

__all__ = ["MAX_TIMEOUT_SECONDS", "checked_timeout"]

#: The longest timeout accepted, in seconds (one day: the ceiling of the
#: ``REQUEST_TIMEOUT`` and ``RESULT_TIMEOUT`` settings).
MAX_TIMEOUT_SECONDS = 86400.0


def checked_timeout(
    value: object, *, what: str = "timeout", maximum: float = MAX_TIMEOUT_SECONDS
) -> float:
    """``value`` as seconds, if it is a finite number in ``(0, maximum]``.

    Args:
        value: What the caller passed.
        what: How to name it in the error (``"timeout"``).
        maximum: The largest accepted, in seconds.

    Raises:
        InvalidArguments: not an ``int`` or ``float`` (a ``bool``, a string, a list …),
            NaN, infinite, 0 or less, or over ``maximum``.
    """
    # Comparisons, not math.isfinite: NaN and inf fail them too, and an int too large
    # for a float (10**400) is compared exactly instead of raising OverflowError.
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= maximum:
        return float(value)
    raise InvalidArguments(
        f"{what} must be a number of seconds above 0 and at most {maximum:g}, "
        f"not {describe(value)}",
        option=what,
    )
