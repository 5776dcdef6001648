"""The V2 API for callers not yet migrated: ``client.v2`` (deprecated: use ``Client``)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from snakepool.errors import InvalidArguments

if TYPE_CHECKING:
    from snakepool.tasks.client import Client

__all__ = ["V2Api", "anonymous_options"]


def anonymous_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of an anonymous V2 call, to pass on to ``execute`` (which refuses every
    unknown one with ``InvalidArguments``, as for any caller).

    Raises:
        InvalidArguments: ``session_id``: an anonymous call runs outside any session.
    """
    if "session_id" in options:
        raise InvalidArguments(
            "execute_anonymous runs outside any session: use execute_in_session",
            option="session_id",
        )
    return options


class V2Api:
    """The V2 API for callers not yet migrated (deprecated: use :class:`Client`)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def execute_in_session(
        self, session_id: str, command: str, args: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """V2's ``execute_in_session``; use ``Client.execute(..., session_id=...)``.

        ``options`` are :meth:`Client.execute`'s (``timeout``); any other is
        ``InvalidArguments``, never a raw ``TypeError``.
        """
        warnings.warn(
            "client.v2.execute_in_session is deprecated; use Client.execute(session_id=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._client.execute(command, args, session_id=session_id, **options)

    def execute_anonymous(
        self, command: str, args: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """V2's ``execute_anonymous``; use ``Client.execute`` (``options`` as there)."""
        warnings.warn(
            "client.v2.execute_anonymous is deprecated; use Client.execute",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._client.execute(command, args, **anonymous_options(options))
