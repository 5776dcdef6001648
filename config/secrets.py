"""Keeping secrets out of output, logs and process arguments.

The only secrets snakepool handles are the credentials inside connection URLs
(``redis://user:password@host/0``, ``rediss://:password@host``, or redis-py's
``?password=`` query parameter). They come from settings or the environment and are
handed to child processes through the environment, never on a command line (where
``ps`` shows them to every user of the machine). Anything printed or logged that may
hold a URL goes through :func:`redact_url` / :func:`redact_text`; the CLI formats its
logs with :class:`RedactingFormatter` so a library that logs a URL cannot leak it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["MASK", "RedactingFormatter", "redact_text", "redact_url"]

#: What a password is replaced with.
MASK = "***"

# scheme://[user]:password@ — the password part, whatever scheme.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<secret>[^&\s]*)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (userinfo and ``?password=``).

    Args:
        url: A connection URL (any scheme); text that is not a URL comes back unchanged.

    Returns:
        The URL, safe to print.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        name = user.split(":", 1)[0]
        netloc = f"{name}:{MASK}@{host}"
    query = parts.query
    if query and "password" in query.lower():
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if k.lower() == "password" else v) for k, v in pairs])
    return parts._replace(netloc=netloc, query=query).geturl()


def redact_text(text: str) -> str:
    """Every URL password inside free text (an error message, a log line) masked."""
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose output has every URL password masked.

    Redacting the formatted text (message, arguments and traceback alike) leaves the
    record itself untouched for any other handler.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))
