"""Who changes the rollout, as the audit trail names them."""

from __future__ import annotations

import os
import socket

from snakepool.config.ids import CONTROL_CHARACTER
from snakepool.errors import ConfigError

__all__ = ["operator_name"]


def operator_name() -> str:
    """Who is changing the rollout, for the audit trail: ``SNAKEPOOL_OPERATOR`` if set
    (e.g. in a shared container), else ``user@host``.

    Raises:
        ConfigError: ``SNAKEPOOL_OPERATOR`` holds a control character (it is stored in
            the audit trail and printed to terminals).
    """
    import getpass

    if operator := os.environ.get("SNAKEPOOL_OPERATOR"):
        if CONTROL_CHARACTER.search(operator):
            raise ConfigError(
                "SNAKEPOOL_OPERATOR holds a control character: it is kept in the audit "
                "trail and printed to terminals; use printable text",
                setting="OPERATOR",
            )
        return operator
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
