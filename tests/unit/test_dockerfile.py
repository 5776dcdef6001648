"""The Dockerfile builds what compose.yaml runs, from files that exist and that
.dockerignore does not exclude (no Docker engine needed; see :mod:`tests.unit.test_compose`).
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_compose import DOCKERFILE, DOCKERIGNORE, ROOT, SERVICES


def test_dockerfile_builds_what_compose_runs() -> None:
    text = DOCKERFILE.read_text()
    instructions = [  # [keyword, rest] of each instruction's first line
        line.split(None, 1)
        for line in text.splitlines()
        if line and not line[0].isspace() and not line.startswith("#")
    ]
    keywords = [parts[0].upper() for parts in instructions]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    assert "ENTRYPOINT" not in keywords
    assert "pip install --no-cache-dir '.[dspy]'" in text
    assert "python -m compileall" in text
    assert "LITELLM_LOCAL_MODEL_COST_MAP=True" in text
    assert "PYTHONUNBUFFERED=1" in text
    users = [parts[1].strip() for parts in instructions if parts[0] == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    for service in SERVICES.values():
        if "build" in service:
            assert service["build"] in (".", {"context": "."}), service["build"]


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = [
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".venv", ".git", "tests"} <= set(ignored)
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith(("COPY ", "ADD ")) and "--from" not in line:
            sources += line.split()[1:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not any(Path(source).match(pattern) for pattern in ignored), (
            f"COPY {source}: excluded by .dockerignore"
        )
    # pyproject.toml names README.md as the readme: the build needs it.
    assert "README.md" in sources
