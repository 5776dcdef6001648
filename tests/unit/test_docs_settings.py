"""Every set of ``SNAKEPOOL_*`` variables the docs show, with the defaults, loads.

Found in review: docs/deploy.md showed ``SNAKEPOOL_REQUEST_TIMEOUT: "60"`` alone, which
contradicts the default ``RESULT_TIMEOUT`` (60 s): a reader who copied it got a
``ConfigError`` at the node's start.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from snakepool.config import load_settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
FENCED_YAML = re.compile(r"```yaml\n(.*?)```", re.S)


def _environments() -> list[tuple[str, dict[str, str]]]:
    found: list[tuple[str, dict[str, str]]] = []
    for page in sorted(DOCS.glob("*.md")):
        for block in FENCED_YAML.findall(page.read_text()):
            document: Any = YAML(typ="safe").load(block)
            services = (document or {}).get("services") or {}
            for name, service in services.items():
                environment = (service or {}).get("environment") or {}
                ours = {
                    key: str(value)
                    for key, value in environment.items()
                    if key.startswith("SNAKEPOOL_") and "${" not in str(value)
                }
                if ours:
                    found.append((f"{page.name}:{name}", ours))
    return found


ENVIRONMENTS = _environments()


def test_the_docs_show_settings() -> None:
    assert ENVIRONMENTS, "no SNAKEPOOL_* environment found in docs/*.md: the parser broke"


@pytest.mark.parametrize(("where", "environment"), ENVIRONMENTS, ids=[w for w, _ in ENVIRONMENTS])
def test_each_documented_environment_loads(
    where: str, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("SNAKEPOOL_"):
            monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(redis_url="redis://localhost:6379/0")  # raises on a contradiction
    for key, value in environment.items():
        field = key.removeprefix("SNAKEPOOL_").lower()
        if isinstance(getattr(settings, field, None), int | float):
            assert getattr(settings, field) == float(value), key
