"""Identifiers: what a session id, program id, node name or command name may be.

Every check matches the WHOLE string (``re.fullmatch``). ``re.match`` with ``^...$``
does not: ``$`` also matches just before a final newline, which is how ``"abc\\n"`` once
became a session id, a rollout override key and a program id. The character classes
are explicit ASCII ranges (never ``\\w`` or ``\\d``, which match Unicode letters and
digits), so look-alikes such as a Cyrillic a (U+0430) or a fullwidth a (U+FF41)
never pass.

Ids become parts of Redis keys (:mod:`snakepool.config.keys`), rollout flags and
audit entries, so they are checked where they come in and again where a key is built.
"""

from __future__ import annotations

import re

from snakepool.config.quoting import describe
from snakepool.errors import InvalidArguments

__all__ = [
    "COMMAND_NAME",
    "CONTROL_CHARACTER",
    "DOTTED_PATH",
    "INCARNATION",
    "KEY_PREFIX",
    "NODE_NAME",
    "PROGRAM_ID",
    "REQUEST_ID",
    "SESSION_ID",
    "is_valid",
    "validate_command_name",
    "validate_incarnation",
    "validate_node_name",
    "validate_program_id",
    "validate_request_id",
    "validate_session_id",
]

#: A character a terminal may act on: the C0 controls but tab, DEL and the C1 controls.
#: Never in operator text that is stored and printed later (reasons, ``OPERATOR``).
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
#: Session ids: 1-128 characters of letters, digits and ``_ . : -`` (DESIGN.md §5).
SESSION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
#: Program ids: the same alphabet as session ids.
PROGRAM_ID = SESSION_ID
#: Request (Celery task) ids: the same alphabet; Celery's own are UUID strings.
REQUEST_ID = SESSION_ID
#: Command names, as adapters declare them and rollout flags list them.
COMMAND_NAME = SESSION_ID
#: Worker node names: Celery hostnames, ``name@host`` (host names are letters, digits,
#: dots and hyphens; RFC 1123 caps a host name at 253 characters).
NODE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}@[A-Za-z0-9_.-]{1,253}|[A-Za-z0-9_.:-]{1,128}")
#: One run of a worker node (a node restarted under the same name is a new one): 32
#: lower-case hex digits (``uuid4().hex``).
INCARNATION = re.compile(r"[0-9a-f]{32}")
#: Dotted Python paths (adapter modules or ``module.Class``): ASCII identifiers.
DOTTED_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
#: Redis key prefixes (setting ``KEY_PREFIX``).
KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

_ALPHABET = "1-128 characters of A-Z a-z 0-9 _ . : -"


def is_valid(pattern: re.Pattern[str], value: object) -> bool:
    """Whether ``value`` is a string that ``pattern`` matches from start to end."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _refuse(what: str, value: object, accepts: str) -> InvalidArguments:
    return InvalidArguments(f"invalid {what} {describe(value)}: use {accepts}")


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it is 1-128 characters of ``[A-Za-z0-9_.:-]``.

    Raises:
        InvalidArguments: it is not (``"abc\\n"``, ``""``, ``"a b"``, 129 characters).
    """
    if not is_valid(SESSION_ID, session_id):
        raise _refuse("session id", session_id, _ALPHABET)
    assert isinstance(session_id, str)
    return session_id


def validate_program_id(program_id: object) -> str:
    """Return ``program_id`` if it is 1-128 characters of ``[A-Za-z0-9_.:-]``.

    Raises:
        InvalidArguments: it is not.
    """
    if not is_valid(PROGRAM_ID, program_id):
        raise _refuse("program id", program_id, _ALPHABET)
    assert isinstance(program_id, str)
    return program_id


def validate_request_id(request_id: object) -> str:
    """Return ``request_id`` if it is 1-128 characters of ``[A-Za-z0-9_.:-]``.

    Raises:
        InvalidArguments: it is not.
    """
    if not is_valid(REQUEST_ID, request_id):
        raise _refuse("request id", request_id, _ALPHABET)
    assert isinstance(request_id, str)
    return request_id


def validate_command_name(command: object) -> str:
    """Return ``command`` if it is 1-128 characters of ``[A-Za-z0-9_.:-]``.

    Raises:
        InvalidArguments: it is not.
    """
    if not is_valid(COMMAND_NAME, command):
        raise _refuse("command name", command, _ALPHABET)
    assert isinstance(command, str)
    return command


def validate_node_name(node: object) -> str:
    """Return ``node`` if it is a Celery node name (``name@host``) or a plain name.

    Raises:
        InvalidArguments: it is not.
    """
    if not is_valid(NODE_NAME, node):
        raise _refuse("node name", node, "name@host of A-Z a-z 0-9 _ . : - (at most 64@253)")
    assert isinstance(node, str)
    return node


def validate_incarnation(incarnation: object) -> str:
    """Return ``incarnation`` if it is 32 lower-case hex digits (one run of a node).

    Raises:
        InvalidArguments: it is not.
    """
    if not is_valid(INCARNATION, incarnation):
        raise _refuse("node incarnation", incarnation, "32 lower-case hex digits")
    assert isinstance(incarnation, str)
    return incarnation
