"""compose.yaml: the V3 lane scales, and no secret is on a command line (see
:mod:`tests.unit.test_compose` for how the file is read and checked).
"""

from __future__ import annotations

import re

import pytest

from tests.unit.test_compose import COMPOSE, ENV, RAW, SERVICES, argv, environment, interpolate


def test_worker_v3_scales() -> None:
    """`--scale worker-v3=N`: nothing may pin one name, hostname or host port."""
    worker = SERVICES["worker-v3"]
    assert "container_name" not in worker
    assert "hostname" not in worker
    assert not worker.get("ports"), "a published host port collides between replicas"
    command = argv(worker)
    assert not any(t in ("--name", "-n") or t.startswith("--name=") for t in command), command


def test_flower_basic_auth_comes_from_the_environment() -> None:
    flower = RAW["services"]["flower"]
    # Never on the command line (which every user of the host can read): environment only.
    assert not [t for t in map(str, flower["command"]) if "basic-auth" in t or "://" in t]
    auth = str(flower["environment"]["FLOWER_BASIC_AUTH"])
    # Required (compose stops with the message when unset), never a default in the file.
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", auth), auth
    assert "FLOWER_BASIC_AUTH:-" not in COMPOSE.read_text()
    with pytest.raises(KeyError, match="FLOWER_BASIC_AUTH"):
        interpolate(RAW, {})
    assert environment(SERVICES["flower"])["FLOWER_BASIC_AUTH"] == ENV["FLOWER_BASIC_AUTH"]
    assert environment(SERVICES["flower"])["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert any(str(p).split(":")[-1] == "5555" for p in SERVICES["flower"]["ports"])


def test_no_command_line_carries_a_secret() -> None:
    for name, service in SERVICES.items():
        for token in map(str, service.get("command") or []):
            assert ENV["FLOWER_BASIC_AUTH"] not in token, name
            assert "@" not in token or "://" not in token, f"{name}: credentials in {token!r}"
