"""The V2 API for callers not yet migrated: ``client.v2`` (deprecated: use ``Client``)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from snakepool.tasks.client import Client

__all__ = ["V2Api"]


class V2Api:
    """The V2 API for callers not yet migrated (deprecated: use :class:`Client`)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def execute_in_session(
        self, session_id: str, command: str, args: dict[str, Any] | None = None
    ) -> Any:
        """V2's ``execute_in_session``; use ``Client.execute(..., session_id=...)``."""
        warnings.warn(
            "client.v2.execute_in_session is deprecated; use Client.execute(session_id=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._client.execute(command, args, session_id=session_id)

    def execute_anonymous(self, command: str, args: dict[str, Any] | None = None) -> Any:
        """V2's ``execute_anonymous``; use ``Client.execute``."""
        warnings.warn(
            "client.v2.execute_anonymous is deprecated; use Client.execute",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._client.execute(command, args)
