"""``snakepool check``'s adapter item runs the adapter's import in the configured
``PYTHON``. A ``PYTHON`` that is not a Python at all but exits 0 (``/bin/true``, a
wrapper script that prints something else) used to pass ("…builtin:  commands"): a go
for nodes that cannot start. It fails now, naming PYTHON and what it printed; one that
exits non-zero without a word says so, not "no output"."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from snakepool.config import load_settings
from snakepool.tasks.worker.checks import check_adapter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    ("program", "detail"),
    [
        (lambda tmp: "/bin/true", "is not a Python that runs snakepool (PYTHON): asked to "
         "import snakepool.pool.interpreter.builtin and count its commands, it printed nothing"),
        (lambda tmp: _script(tmp, "echo hello"), "it printed 'hello'"),
        (lambda tmp: "/bin/false", "does not import: /bin/false exited 1 with no message"),
        (lambda tmp: _script(tmp, "kill -9 $$"), "was killed by SIGKILL with no message"),
    ],
    ids=["true", "prints-other", "false", "killed"],
)  # fmt: skip
def test_a_python_that_cannot_run_the_adapter_fails_the_item(
    tmp_path: Path, program: object, detail: str
) -> None:
    python = program(tmp_path)  # type: ignore[operator]
    settings = load_settings(redis_url=f"fakeredis://{uuid.uuid4().hex}", python=python)
    item = check_adapter(settings, timeout=60)
    assert not item.ok, item
    assert detail in item.detail, item.detail


def test_this_python_passes() -> None:
    settings = load_settings(redis_url=f"fakeredis://{uuid.uuid4().hex}", python=sys.executable)
    item = check_adapter(settings, timeout=60)
    assert item.ok, item
    assert item.detail.startswith("snakepool.pool.interpreter.builtin: ")
    assert int(item.detail.split(": ")[1].split()[0]) > 0  # its commands, counted
