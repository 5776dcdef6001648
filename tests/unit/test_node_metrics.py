"""A node's metrics without processes: a stand-in pool, fakeredis, the exporter's registry."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from snakepool.config import load_settings
from snakepool.errors import CommandFailed, ConfigError, InvalidArguments, SessionNotFound
from snakepool.tasks.prometheus.collector import (
    MAX_COMMAND_LABELS,
    dead_letter_count,
    rollout_state,
)
from snakepool.tasks.prometheus.exporter import MetricsExporter
from snakepool.tasks.prometheus.requests import OTHER_COMMAND, outcome_of
from snakepool.tasks.worker.bootstep import flat_info
from snakepool.tasks.worker.node import Node
from tests.conftest import free_port


class StandInPool:
    def __init__(self) -> None:
        self.figures = {"size": 3, "idle": 1, "busy": 2, "starting": 0, "queued": 4,
                        "crashes": 5, "timeouts": 6, "recycled": 7, "restarts": 8}  # fmt: skip

    def commands(self) -> dict[str, dict[str, bool]]:
        return {"ping": {}, "calculate": {"read_only": True}}

    def stats(self) -> dict[str, Any]:
        return dict(self.figures)


@pytest.fixture
def node() -> Node:
    settings = load_settings(redis_url="fakeredis://node-metrics", key_prefix="nm:")
    node = Node(settings, name="unit@test", lanes=("v3",))
    node.redis.flushall()
    node.pool = StandInPool()  # type: ignore[assignment]
    return node


def samples(exporter: MetricsExporter) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(exporter.scrape().decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def test_scrape_reads_the_pool_flags_and_dead_letters(node: Node) -> None:
    exporter = MetricsExporter(node, port=0)
    node.flags.store.set_percent(25, who="t", why="t")
    node.redis.zadd(node.keys.dead_letter_index, {"a": 1, "b": 2})
    exporter.pool_events.on_interpreter_ready(1, 1, 0.1)
    found = samples(exporter)
    me = ("node", "unit@test")
    assert found[("snakepool_interpreters", frozenset({me, ("state", "busy")}))] == 2
    assert found[("snakepool_queued_requests", frozenset({me}))] == 4
    for name, expected in (("starts", 1), ("crashes", 5), ("timeouts", 6), ("recycles", 7)):
        assert found[(f"snakepool_interpreter_{name}_total", frozenset({me}))] == expected
    assert found[("snakepool_rollout_percent", frozenset())] == 25
    assert found[("snakepool_rollout_state", frozenset({("state", "rolling")}))] == 1
    assert found[("snakepool_dead_letters", frozenset())] == 2


def test_requests_are_counted_with_a_bounded_command_label(node: Node) -> None:
    exporter = MetricsExporter(node, port=0)
    observer = exporter.requests
    observer.on_request("v3", "calculate", 0.01, None)
    observer.on_request("v3", "anything-a-caller-invents", 0.01, InvalidArguments("x"))
    observer.on_request("v2compat", "ping", 0.02, CommandFailed("y"))
    observer.on_shadow("v3", "ping", False)
    observer.on_step_failure("v3", "RecordMetrics")
    found = samples(exporter)

    def count(lane: str, command: str, outcome: str, error_type: str) -> float:
        labels = {("lane", lane), ("command", command), ("outcome", outcome),
                  ("error_type", error_type)}  # fmt: skip
        return found.get(("snakepool_requests_total", frozenset(labels)), 0)

    assert count("v3", "calculate", "ok", "") == 1
    assert count("v3", OTHER_COMMAND, "client_error", "InvalidArguments") == 1
    assert count("v2compat", "ping", "server_error", "CommandFailed") == 1
    assert not any("invents" in str(labels) for _, labels in found)
    key = (
        "snakepool_shadow_comparisons_total",
        frozenset({("lane", "v3"), ("result", "mismatched")}),
    )
    assert found[key] == 1
    step = frozenset({("lane", "v3"), ("step", "RecordMetrics")})
    assert found[("snakepool_lane_step_failures_total", step)] == 1


@settings(max_examples=30, deadline=None)
@given(command=st.text(max_size=40))
def test_no_command_a_caller_sends_becomes_a_label_unless_declared(command: str) -> None:
    settings_ = load_settings(redis_url="fakeredis://node-metrics-h", key_prefix="nh:")
    node = Node(settings_, name="unit@test", lanes=("v3",))
    node.pool = StandInPool()  # type: ignore[assignment]
    label = MetricsExporter(node, port=0).requests.command_label(command)
    assert label == (command if command in ("ping", "calculate") else OTHER_COMMAND)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, ("ok", "")),
        (SessionNotFound("s"), ("client_error", "SessionNotFound")),
        (CommandFailed("c"), ("server_error", "CommandFailed")),
        (KeyError("bug"), ("server_error", "KeyError")),
    ],
)
def test_outcome_labels(error: BaseException | None, expected: tuple[str, str]) -> None:
    assert outcome_of(error) == expected


def test_a_broken_figure_leaves_the_scrape_working(node: Node) -> None:
    node.redis.set(node.keys.dead_letter_index, "a string, not a sorted set")
    node.pool.stats = None  # type: ignore[union-attr, method-assign, assignment]
    found = samples(MetricsExporter(node, port=0))
    assert ("snakepool_dead_letters", frozenset()) not in found  # that figure is left out
    assert not any(name == "snakepool_interpreters" for name, _ in found)
    assert found[("snakepool_rollout_percent", frozenset())] == 0


def test_dead_letter_count_is_the_size_of_the_index(node: Node) -> None:
    client, keys = node.redis, node.keys
    assert dead_letter_count(client, keys) == 0
    client.zadd(keys.dead_letter_index, {"a": 1, "b": 2, "c": 3})
    assert dead_letter_count(client, keys) == 3


def test_rollout_state_precedence() -> None:
    from snakepool.config.flags import RolloutFlags

    assert rollout_state(RolloutFlags()) == "not_started"
    assert rollout_state(RolloutFlags(percent=100)) == "complete"
    assert rollout_state(RolloutFlags(percent=100, paused=True)) == "paused"
    assert rollout_state(RolloutFlags(percent=5, paused=True, forced_lane="v3")) == "forced"
    assert rollout_state(RolloutFlags(percent=100, finalized=True)) == "finalized"


def test_command_labels_are_capped_and_counted_whole(node: Node) -> None:
    from dataclasses import replace

    from snakepool.config.flags import FlagStore

    many = tuple(f"cmd{i:04d}" for i in range(MAX_COMMAND_LABELS + 50))
    FlagStore(node.redis, prefix=node.keys.prefix).update(
        lambda f: replace(f, excluded_commands=many, v3_commands=many), who="t", why="t"
    )
    found = samples(MetricsExporter(node, port=0))
    for family, count in (("snakepool_rollout_command_excluded", "excluded_commands"),
                          ("snakepool_rollout_v3_only", "v3_only_commands")):  # fmt: skip
        labelled = sorted(dict(labels)["command"] for name, labels in found if name == family)
        assert labelled == sorted(many)[:MAX_COMMAND_LABELS]
        assert found[(f"snakepool_rollout_{count}", frozenset())] == len(many)


def test_a_port_in_use_is_a_config_error_naming_the_setting(node: Node) -> None:
    first = MetricsExporter(node, port=free_port(), address="127.0.0.1")
    first.start()
    try:
        second = MetricsExporter(node, port=first.port, address="127.0.0.1")
        with pytest.raises(ConfigError, match="SNAKEPOOL_METRICS_PORT") as caught:
            second.start()
        assert caught.value.data["setting"] == "METRICS_PORT"
    finally:
        first.stop()


def test_flat_info_is_one_scalar_per_key() -> None:
    described = {"name": "v3-1@h", "lanes": ["v3"], "pool": {"idle": 2, "pids": [1, 2]},
                 "open_breakers": [], "metrics_port": None}  # fmt: skip
    assert flat_info(described) == {
        "snakepool_node": "v3-1@h",
        "snakepool_lanes": "v3",
        "snakepool_pool_idle": 2,
        "snakepool_pool_pids": "1,2",
        "snakepool_open_breakers": "",
        "snakepool_metrics_port": None,
    }
