"""No secret in output, logs or process arguments: URL passwords are masked everywhere."""

from __future__ import annotations

import logging
import string

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
