"""Validation: refuse a request whose command, args, session id or options do not hold up.

A command name must be 1-128 characters of ``A-Z a-z 0-9 _ . : -`` (``COMMAND_NAME`` in
:mod:`snakepool.config.ids`), all of it.

Runs first, so nothing else (no interpreter, no session lookup) sees an unchecked request.
A refusal is an :class:`~snakepool.errors.InvalidArguments` outcome — a client error,
never counted against the lane.
"""

from __future__ import annotations

import logging

from snakepool.config.ids import validate_command_name
from snakepool.errors import InvalidArguments, SnakepoolError
from snakepool.tasks.worker.options import LaneOptions, checked_session_id
from snakepool.tasks.worker.pipeline.step import LaneCall, LaneStep

__all__ = ["Validate"]

log = logging.getLogger("snakepool.lanes")


class Validate(LaneStep):
    """Checks the request and fills in ``call.args`` (a dict) and ``call.timeout``.

    A guard: if it fails, the request is refused, never run unchecked.
    """

    guard = True

    def before(self, call: LaneCall) -> SnakepoolError | None:
        """None when the request may run, else the InvalidArguments refusing it.

        Fails closed: the runner treats a hook's exception as "no opinion", which here
        would run a request nobody checked — so whatever else the checks raise refuses it.
        """
        try:
            return self._check(call)
        except RecursionError:
            # A value nested so deeply that describing it (its repr in the refusal)
            # overflows the stack here, though it was decoded: the caller's doing.
            return InvalidArguments(
                "the request's command, session id or options are nested too deeply"
            )
        except Exception as exc:
            log.exception("checking a %.80r request failed; it is refused", call.command)
            return InvalidArguments(
                f"the request could not be checked ({type(exc).__name__}); it was not run"
            )

    @staticmethod
    def _check(call: LaneCall) -> SnakepoolError | None:
        try:
            # A full match of COMMAND_NAME: the name reaches logs, metrics and flags, so
            # 60 000 characters of it never get past here.
            validate_command_name(call.command)
        except InvalidArguments as exc:
            return exc
        if call.args is None:
            call.args = {}
        elif not isinstance(call.args, dict):
            return InvalidArguments(f"args must be an object, not {type(call.args).__name__}")
        node = call.node
        try:
            if call.session_id is not None:
                checked_session_id(call.session_id)
            options = LaneOptions.parse(call.options, max_timeout=node.settings.request_timeout)
        except InvalidArguments as exc:
            return exc
        if node.pool is None:
            return InvalidArguments(f"node {node.name} does not serve the {call.lane} lane")
        call.timeout = options.timeout
        return None
