"""No secret in output, logs or process arguments: URL passwords are masked everywhere."""

from __future__ import annotations

import logging
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config.secrets import MASK, RedactingFormatter, redact_text, redact_url

_PASSWORD = st.text(
    alphabet=string.ascii_letters + string.digits + "!$%^*()-_=+[]{};,.~", min_size=6, max_size=40
)


def test_the_password_of_a_redis_url_is_masked() -> None:
    assert redact_url("redis://:s3cret@cache:6380/2") == f"redis://:{MASK}@cache:6380/2"
    assert redact_url("rediss://ada:s3cret@cache/0") == f"rediss://ada:{MASK}@cache/0"
    assert redact_url("redis://cache:6379/0?password=s3cret&db=1") == (
        f"redis://cache:6379/0?password={MASK.replace('*', '%2A')}&db=1"
    )
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


@settings(max_examples=50, deadline=None)
@given(
    password=_PASSWORD,
    user=st.sampled_from(["", "ada"]),
    scheme=st.sampled_from(["redis", "rediss", "amqp"]),
)
def test_no_password_survives_redaction(password: str, user: str, scheme: str) -> None:
    url = f"{scheme}://{user}:{password}@host.example:6379/0"
    assert password not in redact_url(url)
    assert redact_url(url).endswith("@host.example:6379/0")
    text = f"Error connecting to {url}: refused (and again {url})"
    assert password not in redact_text(text)
    assert redact_text(text).count(MASK) == 2


def test_the_log_formatter_masks_arguments_and_tracebacks() -> None:
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "cannot reach %s", ("redis://:hunter2@h/0",), None
    )
    try:
        raise ConnectionError("redis://:hunter2@h/0 refused")
    except ConnectionError:
        import sys

        record.exc_info = sys.exc_info()
    formatted = RedactingFormatter().format(record)
    assert "hunter2" not in formatted
    assert "cannot reach redis://:***@h/0" in formatted
    assert "ConnectionError" in formatted
    assert record.exc_info is not None and record.args  # the record is left as it was


# ------------------------------------------------- linear time (review finding 1)

#: Texts of 1 MB that a redaction starting a match anywhere (and scanning to the end of
#: the text each time) takes quadratic time on: hours, where linear takes milliseconds.
_MEGABYTE_SHAPES = [
    "a://:@@",  # an @ that another follows: each lookahead reads to the next @ only
    "@",
    "x",  # the review's command name: 60 000 of these froze a node for 16 s
    "a1",
    "a://:",  # a URL head again and again, never an @
    "redis://:",
    "a://",
    "x://u:p:",
    "://",
    ":/",
    "?password=",
    "&password=x",
    "a://:@",
]


# Linear, not quadratic: no time is asserted (speed belongs to benchmarks). A quadratic
# redaction of a megabyte is ~10**12 steps, hours, so the test's timeout is what fails.
@pytest.mark.timeout(60)
@pytest.mark.parametrize("unit", _MEGABYTE_SHAPES)
def test_a_megabyte_of_any_shape_redacts_in_linear_time(unit: str) -> None:
    text = unit * (1_000_000 // len(unit))
    assert redact_text(text) == _reference_redact(text)


@pytest.mark.timeout(60)
def test_a_megabyte_long_password_is_masked_in_linear_time() -> None:
    secret = "p" * 1_000_000
    redacted = redact_text(f"redis://ada:{secret}@host/0 and more")
    assert redacted == f"redis://ada:{MASK}@host/0 and more"


_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+.-")


def _last_at(text: str, k: int) -> bool:
    """Whether the @ at ``k`` is followed by no other @ before a space or a /."""
    m = k + 1
    while m < len(text) and text[m] not in "@/" and not text[m].isspace():
        m += 1
    return not (m < len(text) and text[m] == "@")


def _reference_redact(text: str) -> str:
    """What :func:`redact_text` does, written as the plainest loop (quadratic at worst:
    fine for test-sized texts)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:  # scheme://user:password@ → scheme://user:***@
        if i > 0 and text[i - 1] in _SCHEME_CHARS and text.startswith("://", i):
            j = i + 3
            while j < n and text[j] not in ":/@" and not text[j].isspace():
                j += 1  # the user name
            if j < n and text[j] == ":":
                k = j + 1
                while (
                    k < n
                    and not (text[k] == "@" and _last_at(text, k))
                    and not text[k].isspace()
                    and not text.startswith("://", k)
                ):
                    k += 1  # the password, up to its last @
                if k < n and text[k] == "@":
                    out.append(text[i : j + 1] + MASK + "@")
                    i = k + 1
                    continue
        out.append(text[i])
        i += 1
    text = "".join(out)
    out, i, n = [], 0, len(text)
    while i < n:  # ?password=value → ?password=***
        name = text[i + 1 : i + 10]
        if text[i] in "?&" and name.isascii() and name.lower() == "password=":
            k = i + 10
            while k < n and text[k] != "&" and not text[k].isspace():
                k += 1
            out.append(text[i : i + 10] + MASK)
            i = k
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


_PIECES = st.sampled_from([
    "a", "Z", "9", "+", ".", "-", "_", ":", "/", "//", "://", "@", " ", "\n", "\u00a0",
    "?", "&", "=", "password=", "PassWord=", "redis", "redis://", "u", "pw", "host",
    "\u017f", "\u212a",  # long s and the Kelvin sign: Unicode case-folds them to s and k
])  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(text=st.one_of(st.lists(_PIECES, max_size=40).map("".join), st.text(max_size=80)))
def test_redaction_equals_the_reference(text: str) -> None:
    assert redact_text(text) == _reference_redact(text)


def test_the_reference_masks_what_it_should() -> None:
    # The reference itself is checked on known answers, so the property above
    # compares against something right.
    assert _reference_redact("x redis://u:pw@h/0 y") == f"x redis://u:{MASK}@h/0 y"
    assert _reference_redact("redis://h/0?db=1&password=pw&x=1") == (
        f"redis://h/0?db=1&password={MASK}&x=1"
    )
    assert _reference_redact("...redis://:pw@h") == f"...redis://:{MASK}@h"
    assert _reference_redact("1redis://:pw@h") == f"1redis://:{MASK}@h"
    assert _reference_redact("redis://:p@ss@h/0 x@y") == f"redis://:{MASK}@h/0 x@y"


@pytest.mark.parametrize("password", ["p@ss", "@lead", "trail@", "a@b@c", "Zq9@Xy:é%1"])
def test_a_password_with_a_raw_at_is_masked_whole(password: str) -> None:
    # redis-py reads the password up to the last @ (it connects with it): mask all of it.
    url = f"redis://:{password}@cache:6379/0"
    assert redact_url(url) == f"redis://:{MASK}@cache:6379/0"
    text = f"cannot reach {url} (refused) nor {url}"
    masked = f"redis://:{MASK}@cache:6379/0"
    assert redact_text(text) == f"cannot reach {masked} (refused) nor {masked}"
    assert _reference_redact("://:pw@h") == "://:pw@h"  # no scheme: not a URL
