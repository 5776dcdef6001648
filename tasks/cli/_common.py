"""What every ``snakepool`` command shares: the console, settings, a client, clean failures."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from contextlib import ContextDecorator
from functools import wraps
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from snakepool.config import Settings, load_settings
from snakepool.config.secrets import redact_text
from snakepool.errors import SnakepoolError
from snakepool.tasks.cli._terminal import Neutraliser

if TYPE_CHECKING:
    from snakepool.tasks.client import Client

__all__ = [
    "MISSING",
    "UnreadableData",
    "cell",
    "console",
    "fails_cleanly",
    "keyed_rows",
    "make_client",
    "reads_stored_data",
    "settings_with",
    "styled",
    "table",
]

#: Where every command prints (rich: tables, JSON, colours). Neither markup nor emoji
#: codes: what it prints comes from users and from Redis (session ids, command names,
#: reasons in the audit trail, error messages), and rich would read ``[/]`` in it as
#: markup (and crash), ``[link=…]`` as a link on the operator's screen, ``:cat:`` (a valid
#: session id) as an emoji. Our own colours go through :func:`styled` instead.
console = Console(markup=False, emoji=False)
#: ... and no control characters: a stored ESC is printed as ``\x1b``, never acted on.
console.push_render_hook(Neutraliser())
#: How a figure that does not exist yet prints (a latency before the first request).
MISSING = "\N{EN DASH}"


def styled(text: str, style: str) -> Text:
    """``text`` in ``style`` (``"red"``, ``"bold"``), never read as markup."""
    return Text(text, style=style)


def cell(value: Any) -> str:
    """A table cell: the value, or :data:`MISSING` for None."""
    return MISSING if value is None else str(value)


def table(title: str, *columns: str, wrap: Sequence[str] = (), caption: str | None = None) -> Table:
    """A table that stays readable at 80 columns: light borders, and no cell ever cut
    to "no…".

    Args:
        wrap: The columns that give up width when the terminal is narrow (names, free
            text): they wrap, at spaces first. The others (figures) keep their width.
    """
    made = Table(
        title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0)
    )
    for column in columns:
        made.add_column(column, overflow="fold", no_wrap=column not in wrap)
    return made


def keyed_rows(
    title: str, key: str, columns: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]
) -> None:
    """Print rows led by an id an operator copies into another command (``deadletter
    show ID``, ``sessions show ID``): the id always whole, on one line, at any width.

    A table when the longest id and every other column at its longest word fit the
    terminal (so no id and no word is ever cut); else one entry per id, the id alone on
    its line (never wrapped by us) and ``column value`` pairs indented under it.

    Args:
        title: The table's title.
        key: The id column's heading (``"task id"``).
        columns: The other columns' headings.
        rows: ``(id, [cell per other column])`` each.
    """
    widest = max([len(key), *(len(row_key) for row_key, _ in rows)])
    words = [
        max(len(word) for text in (name, *(cells[i] for _, cells in rows)) for word in text.split())
        for i, name in enumerate(columns)
    ]
    if widest + sum(width + 1 for width in words) < console.width:
        made = table(title, key, *columns, wrap=columns)
        for column, width in zip(made.columns, [widest, *words], strict=True):
            column.min_width = width  # narrower columns wrap at spaces, never inside
        for row_key, cells in rows:
            made.add_row(row_key, *cells)
        console.print(made)
        return
    console.print(title, style="italic")
    for row_key, cells in rows:
        console.print(row_key, soft_wrap=True, highlight=False)
        details = " · ".join(f"{name} {value}" for name, value in zip(columns, cells, strict=True))
        console.print(Padding(Text(details), (0, 0, 0, 2)), highlight=False)


def fails_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print an error as one line and exit with its code, instead of a traceback.

    Exit codes: 2 a snakepool error (and click's usage errors), 3 Redis or the broker
    unreachable, 4 no result in time, 5 Redis refused a command (a key holding another
    type of data than snakepool wrote there, a read-only replica, …) or holds data that
    cannot be read (:data:`reads_stored_data`).
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis
        from celery.exceptions import TimeoutError as ResultTimeout
        from kombu.exceptions import OperationalError

        try:
            return _with_raw_causes(fn, *args, **kwargs)
        except SnakepoolError as exc:
            console.print(styled(f"{type(exc).__name__}:", "red"), redact_text(exc.message))
            sys.exit(2)
        except (redis.ConnectionError, redis.TimeoutError, OperationalError) as exc:
            console.print(styled("cannot reach Redis / the broker:", "red"), redact_text(str(exc)))
            sys.exit(3)
        except ResultTimeout:
            console.print(
                styled("no result in time:", "red"), "are worker nodes running? (snakepool status)"
            )
            sys.exit(4)
        except redis.RedisError as exc:
            message = redact_text(str(exc))
            if message.startswith("WRONGTYPE"):
                message += (
                    " (a key holds another type of data than snakepool writes there: "
                    "docs/redis-keys.md lists each key and its type)"
                )
            console.print(styled("Redis refused a command:", "red"), message)
            sys.exit(5)
        except UnreadableData as exc:
            console.print(styled("cannot read what Redis holds:", "red"), str(exc))
            sys.exit(5)

    return wrapper


def _with_raw_causes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn()``; a typed error that only stands for Redis's own failure (the clients map
    every raw redis/kombu error: :mod:`~snakepool.tasks.worker.unreachable`) is raised as
    that failure, so the exit code says unreachable (3) or refused (5), as it always has."""
    from snakepool.tasks.worker.unreachable import RAW_ERRORS

    try:
        return fn(*args, **kwargs)
    except SnakepoolError as exc:
        cause = exc.__cause__
        if isinstance(cause, RAW_ERRORS) and not isinstance(cause, SnakepoolError):
            raise cause from None
        raise


class UnreadableData(Exception):
    """What Redis handed back cannot be read (see :data:`reads_stored_data`)."""


class _ReadingStoredData(ContextDecorator):
    """Around code that shows what Redis holds (``status``, ``report``, the nodes ``call``
    looks for, …): data that cannot be read there — a heartbeat that is not JSON, a
    counter that is not a number, a field missing — becomes :class:`UnreadableData`
    (one line and exit 5 under :func:`fails_cleanly`), not a traceback; ``snakepool
    -vv`` logs the traceback too. As a decorator or a ``with`` block.

    Arguments were checked before the command ran (click's types and callbacks), so what
    fails to parse inside is what Redis handed back.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or not isinstance(exc, ValueError | KeyError | TypeError):
            return
        logging.getLogger("snakepool.cli").debug("unreadable data", exc_info=exc)
        raise UnreadableData(
            f"{type(exc).__name__}: {redact_text(str(exc))[:300]} (a key snakepool reads "
            "holds data it did not write: docs/redis-keys.md lists each key; "
            "`snakepool -vv …` shows where)"
        ) from exc


#: See :class:`_ReadingStoredData`.
reads_stored_data = _ReadingStoredData()


def settings_with(**overrides: Any) -> Settings:
    """The settings from the environment, with the options given on the command line."""
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def make_client(settings: Settings, routing: str = "router") -> Client:
    """A :class:`~snakepool.tasks.client.Client` (imported here: Celery is slow to load)."""
    from snakepool.tasks.client import Client

    return Client(settings=settings, routing=routing)
