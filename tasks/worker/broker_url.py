"""A broker URL as kombu reads it.

redis-py, and so the SessionStore, the result backend and ``snakepool status``, takes
the credentials from the user part of a URL or from its query (``?password=…``,
``?username=…``). kombu passes every query parameter on as a connection argument, next
to the ``password`` it took from the user part: ``redis://host:6379/0?password=…`` was a
``TypeError`` ("got multiple values for keyword argument 'password'") on every connection
— a node could not start, a client could send nothing, Flower could not watch.
:func:`kombu_url` moves them into the user part, where kombu reads them (and masks the
password wherever it shows the URL).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["kombu_url"]

#: Query parameters redis-py reads as credentials, and their place in the user part.
_CREDENTIALS = ("username", "password")


def kombu_url(url: str) -> str:
    """``url`` with ``?username=`` / ``?password=`` moved into its user part.

    As in redis-py, a credential already in the user part wins over the query's.
    Anything else comes back unchanged (a URL without such parameters, or not a URL).
    """
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return url
    given = {name: value for name, value in pairs if name in _CREDENTIALS}
    if not given:
        return url
    user = unquote(parts.username) if parts.username else given.get("username", "")
    password = unquote(parts.password) if parts.password else given.get("password", "")
    userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{userinfo}@{host}" if userinfo else host
    query = urlencode([(name, value) for name, value in pairs if name not in _CREDENTIALS])
    return urlunsplit(parts._replace(netloc=netloc, query=query))
