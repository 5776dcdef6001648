"""The lane pipeline's vocabulary: one request (:class:`LaneCall`), its :class:`Outcome`,
and :class:`LaneStep`, the no-op base class every step of the pipeline derives from.

In the style of dramatiq's middleware: a step overrides only the hooks it needs;
:class:`~snakepool.tasks.worker.pipeline.runner.Pipeline` calls ``before`` in order and
``after`` in reverse order. A step changes a request's outcome only through the return
values documented on the hooks; anything a hook raises is logged and ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from snakepool.errors import SnakepoolError
from snakepool.tasks.worker.node import Node
from snakepool.tasks.worker.options import ShadowTag

__all__ = ["LaneCall", "LaneStep", "Outcome"]


@dataclass
class LaneCall:
    """One request on its way through a lane (the steps read it and fill it in).

    ``command``, ``args``, ``session_id`` and ``options`` are exactly what the message
    carried until the validation step has checked them; it then sets ``args`` to a dict
    and ``timeout`` from the options.
    """

    node: Node
    #: ``"v3"`` or ``"v2compat"``.
    lane: str
    command: Any
    args: Any
    session_id: Any
    #: The caller's options (keyword arguments of the task), unchecked.
    options: Mapping[str, Any]
    #: Set only by our own dispatch code (a message header), never by a caller.
    shadow: ShadowTag | None = None
    #: Seconds the command may run (None: the pool's REQUEST_TIMEOUT); set by validation.
    timeout: float | None = None
    #: Runs of the command so far minus one: 0 during the first run.
    attempt: int = 0
    #: ``time.perf_counter()`` when the request entered the pipeline.
    started: float = field(default_factory=time.perf_counter)
    #: Observation a step leaves for after the result is out (step name, work): the
    #: lane task runs it once its result is stored, so it never delays the caller.
    after_result: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    @property
    def is_shadow_copy(self) -> bool:
        """Whether this is the fire-and-forget copy of a shadowed request."""
        return self.shadow is not None and self.shadow.role == "shadow"


@dataclass
class Outcome:
    """What the request came to: a result, or the exception it ended with.

    Any :class:`Exception` is an outcome (a bug is an outcome too, counted by its type);
    a ``BaseException`` that is not an ``Exception`` (shutdown, interrupt) is not: it
    passes through the pipeline untouched.
    """

    result: Any = None
    error: Exception | None = None
    #: True when a step refused the request before it ran (the error says why).
    refused: bool = False

    def unwrap(self) -> Any:
        """The result, or raise the error (the original exception object)."""
        if self.error is not None:
            raise self.error
        return self.result


class LaneStep:
    """A step of the lane pipeline; every hook is a no-op here.

    Hooks must not raise: the pipeline logs whatever they raise and carries on as if the
    hook had returned None, so an observer's failure never changes an outcome — except
    for a :attr:`guard`, whose ``before`` failing refuses the request.
    """

    #: A step that checks what may run (validation). Its ``before`` failing must never
    #: let an unchecked request through: the request is refused with a
    #: :class:`~snakepool.errors.SnakepoolError` (the step's fault, not the caller's).
    guard: ClassVar[bool] = False

    def before(self, call: LaneCall) -> SnakepoolError | None:
        """Called before the command runs, in pipeline order.

        Returns:
            None to let the request through, or the error that refuses it: the command
            then does not run, the error is the outcome, and later steps' ``before``
            hooks are skipped (every step's ``after`` still runs).
        """
        return None

    def after(self, call: LaneCall, outcome: Outcome) -> float | None:
        """Called after the command ran (or was refused), in reverse pipeline order.

        ``outcome`` is for reading; a step may add data to ``outcome.error`` (as the V2
        classification does) but never replaces it.

        Returns:
            None, or a number of seconds after which the command runs again (retries);
            the ``after`` hooks then start over from the last step on the new outcome.
            Ignored for a refused request.
        """
        return None
