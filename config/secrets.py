"""Keeping secrets out of output, logs and process arguments.

The only secrets snakepool handles are the credentials inside connection URLs
(``redis://user:password@host/0``, ``rediss://:password@host``, or redis-py's
``?password=`` query parameter). They come from settings or the environment and are
handed to child processes through the environment, never on a command line (where
``ps`` shows them to every user of the machine). Anything printed or logged that may
hold a URL goes through :func:`redact_url` / :func:`redact_text`; the CLI formats its
logs with :class:`RedactingFormatter` so a library that logs a URL cannot leak it.

Redaction runs on every log line, and log lines hold text a caller chose (a command
name, an argument), so it must take time linear in the text's length: a pattern that
may start a match anywhere and scan to the end of the text each time is quadratic
(60 000 characters froze a node for 16 s). See :data:`_USERINFO` for why this one
cannot.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["MASK", "RedactingFormatter", "redact_text", "redact_url"]

#: What a password is replaced with.
MASK = "***"

#: ``scheme://[user]:password@`` — the password part, whatever the scheme.
#:
#: Linear time, by construction rather than by bounds on the input:
#:
#: - a match may start only at ``://`` right after a scheme character (a fixed-width
#:   lookbehind), never at every letter of a long word;
#: - the user part stops at the first ``:``, ``/``, ``@`` or space, so it cannot run
#:   into the next URL (whose ``://`` holds a ``:`` and a ``/``);
#: - the password stops at its last ``@`` (one followed by no other ``@`` before a
#:   space or ``/``), at a space, or at the next ``://``; each character is matched by
#:   exactly one of three branches (not ``@``/``:``; ``:`` not followed by ``//``; ``@``
#:   with another ``@`` ahead), so they never backtrack between them, and an ``@``'s
#:   lookahead reads only up to the next ``@``.
#:
#: So the text the attempts starting at two different ``://`` read overlaps by at most
#: one ``://``: every character is read a bounded number of times, whatever the text
#: (``"x" * 10**6``, ``"a://:" * 200_000`` …). A password that itself contains ``://``
#: is not a URL password (RFC 3986 allows no ``/`` in userinfo: a URL parser would end
#: the host there) and is not masked.
_USERINFO = re.compile(
    r"(?<=[A-Za-z0-9+.-])"  # the last character of a scheme
    r"(?P<head>://[^:/@\s]*:)"  # ://user:
    # The password, up to its last @ (no "://" in it). An "@" is part of it when another
    # "@" follows before a space or "/": redis-py reads redis://:p@ss@host as password
    # "p@ss" (the host starts after the last @), so masking up to the first @ left "ss".
    # Each lookahead reads only up to the next @, so the text is still read linearly.
    r"(?P<secret>(?:[^@\s:]|:(?!//)|@(?=[^@\s/]*@))*)"
    r"@"
)
#: ``?password=…`` / ``&password=…`` (the name in any ASCII case). Each attempt reads a
#: fixed-length name; a match consumes what it read, so this is linear too.
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&][Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]=)(?P<secret>[^&\s]*)")


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
    """Every URL password inside free text (an error message, a log line) masked.

    Takes time linear in ``len(text)`` (see :data:`_USERINFO`): it runs on every log
    line, whatever a caller put in it.

    Args:
        text: Any text.

    Returns:
        ``text`` with each ``scheme://user:password@`` password and each
        ``?password=`` / ``&password=`` value replaced by :data:`MASK`.
    """
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose output has every URL password masked.

    Redacting the formatted text (message, arguments and traceback alike) leaves the
    record itself untouched for any other handler.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))
