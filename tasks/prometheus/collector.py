"""Figures read when Prometheus scrapes a node: its pool, the rollout, breakers, dead letters.

Nothing here is updated on the request path: each scrape asks the pool for its
``stats()``, the flag cache for the flags (at most one cheap Redis GET), the breaker for
each lane, and Redis for the dead-letter count. A figure that cannot be read (Redis
down) is left out of that scrape and logged; the scrape itself never fails.

================================================  =======  ==========================
name                                              type     labels
================================================  =======  ==========================
``snakepool_node_info``                           gauge    node, lanes, version
``snakepool_pool_size``                           gauge    node
``snakepool_interpreters``                        gauge    node, state (idle/busy/starting)
``snakepool_queued_requests``                     gauge    node
``snakepool_interpreter_starts_total``            counter  node
``snakepool_interpreter_crashes_total``           counter  node
``snakepool_interpreter_timeouts_total``          counter  node
``snakepool_interpreter_recycles_total``          counter  node
``snakepool_interpreter_restarts_total``          counter  node
``snakepool_rollout_percent``                     gauge
``snakepool_rollout_flags_version``               gauge
``snakepool_rollout_state``                       gauge    state (one is 1)
``snakepool_rollout_finalized``                   gauge
``snakepool_rollout_updated_timestamp_seconds``   gauge
``snakepool_rollout_excluded_commands``           gauge
``snakepool_rollout_command_excluded``            gauge    command (≤ 100, each 1)
``snakepool_rollout_v3_allow_list``               gauge
``snakepool_rollout_v3_only_commands``            gauge
``snakepool_rollout_v3_only``                     gauge    command (≤ 100, each 1)
``snakepool_breaker_open``                        gauge    lane
``snakepool_dead_letters``                        gauge
================================================  =======  ==========================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from snakepool.config.flags import RolloutFlags
from snakepool.config.keys import LANES, Keys

if TYPE_CHECKING:
    from snakepool.tasks.worker.node import Node

__all__ = [
    "MAX_COMMAND_LABELS",
    "ROLLOUT_STATES",
    "NodeCollector",
    "dead_letter_count",
    "rollout_state",
]

log = logging.getLogger("snakepool.prometheus")

#: The states of ``snakepool_rollout_state`` (exactly one is 1 at a time). ``complete``
#: is 100 % with V2-compat still in reserve; ``finalized`` is the end (V3 only).
ROLLOUT_STATES = ("not_started", "rolling", "paused", "forced", "complete", "finalized")
#: Most ``command`` label values one family exports (the first, in name order): commands
#: are validated ids, and this bounds the series a scrape adds however long the lists
#: get (the flags allow 1000). The ``..._commands`` gauges count them all.
MAX_COMMAND_LABELS = 100


def rollout_state(flags: RolloutFlags) -> str:
    """One of :data:`ROLLOUT_STATES`: finalized first (it excludes the others), then the
    kill switch, then pause, then percent."""
    if flags.finalized:
        return "finalized"
    if flags.forced_lane:
        return "forced"
    if flags.paused:
        return "paused"
    if flags.percent <= 0:
        return "not_started"
    return "complete" if flags.percent >= 100 else "rolling"


def dead_letter_count(client: redis.Redis, keys: Keys) -> int:
    """How many requests are dead-lettered: the members of the dead-letter index.

    The one place the ``snakepool_dead_letters`` gauge is fed from: the sorted set
    :attr:`Keys.dead_letter_index <snakepool.config.keys.Keys.dead_letter_index>` kept
    by :mod:`snakepool.tasks.worker.recovery` (pruned as records expire).

    Raises:
        redis.RedisError: Redis cannot be reached (or the key is not a sorted set).
    """
    return int(client.zcard(keys.dead_letter_index))


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("snakepool")
    except PackageNotFoundError:
        return "unknown"


class NodeCollector(Collector):
    """Yields a node's scrape-time figures (see the module docstring).

    Args:
        node: The worker node.
        starts: Interpreter starts so far (from the pool's observer).
    """

    def __init__(self, node: Node, *, starts: Callable[[], int]) -> None:
        self.node = node
        self.starts = starts

    def collect(self) -> Iterator[Metric]:
        """Every family that can be read now."""
        for part in (self._node, self._pool, self._rollout, self._breakers, self._dead_letters):
            try:
                yield from part()
            except Exception:
                log.exception("metrics: %s could not be read for this scrape", part.__name__)

    def _node(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "snakepool_node_info", "This worker node: its name, lanes and snakepool version.",
            labels=("node", "lanes", "version"),
        )  # fmt: skip
        info.add_metric([self.node.name, ",".join(self.node.lanes), _version()], 1)
        yield info

    def _pool(self) -> Iterator[Metric]:
        pool = self.node.pool
        if pool is None:  # the router hosts no pool
            return
        stats: dict[str, Any] = pool.stats()
        node = [self.node.name]
        yield _gauge("snakepool_pool_size", "Interpreters the pool keeps.", node, stats["size"])
        states = GaugeMetricFamily(
            "snakepool_interpreters", "Interpreters by state.", labels=("node", "state")
        )
        for state in ("idle", "busy", "starting"):
            states.add_metric([*node, state], stats[state])
        yield states
        yield _gauge(
            "snakepool_queued_requests", "Requests waiting for a free interpreter.", node,
            stats["queued"],
        )  # fmt: skip
        for name, value, text in (
            ("starts", self.starts(), "Interpreters started (passed the readiness handshake)."),
            ("crashes", stats["crashes"], "Interpreters that crashed or failed a health check."),
            ("timeouts", stats["timeouts"], "Interpreters killed for a request's timeout."),
            ("recycles", stats["recycled"], "Interpreters recycled (requests, memory, age)."),
            ("restarts", stats["restarts"], "Unplanned replacements asked of the template."),
        ):
            family = CounterMetricFamily(f"snakepool_interpreter_{name}", text, labels=("node",))
            family.add_metric(node, value)
            yield family

    def _rollout(self) -> Iterator[Metric]:
        flags = self.node.flags.get()
        yield _gauge("snakepool_rollout_percent", "Percent of traffic sent to V3.", [],
                     flags.percent)  # fmt: skip
        yield _gauge("snakepool_rollout_flags_version", "Version of the rollout flags.", [],
                     flags.version)  # fmt: skip
        yield _gauge(
            "snakepool_rollout_updated_timestamp_seconds", "When the flags last changed.", [],
            flags.updated_at,
        )  # fmt: skip
        state = GaugeMetricFamily(
            "snakepool_rollout_state",
            "The rollout's state: not_started, rolling, paused, forced (kill switch) or "
            "complete; the current one is 1.",
            labels=("state",),
        )
        current = rollout_state(flags)
        for name in ROLLOUT_STATES:
            state.add_metric([name], 1 if name == current else 0)
        yield state
        yield _gauge(
            "snakepool_rollout_finalized",
            "1 once the migration is finalized (V3 only, V2-compat retired), 0 before; "
            "100 % and not finalized is rollout_state complete.", [], int(flags.finalized),
        )  # fmt: skip
        yield from _commands(flags)

    def _breakers(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "snakepool_breaker_open",
            "1 while the lane's circuit breaker sheds its traffic to the other lane.",
            labels=("lane",),
        )
        for lane in LANES:
            family.add_metric([lane], 1 if self.node.breaker.is_open(lane) else 0)
        yield family

    def _dead_letters(self) -> Iterator[Metric]:
        count = dead_letter_count(self.node.redis, self.node.keys)
        yield _gauge("snakepool_dead_letters", "Requests in the dead-letter list.", [], count)


def _gauge(name: str, documentation: str, node: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=("node",) if node else ())
    family.add_metric(node, value)
    return family


def _commands(flags: RolloutFlags) -> Iterator[Metric]:
    """The operation-specific rollout: exclusions and the V3 allow-list, each command a
    series (at most :data:`MAX_COMMAND_LABELS`), with counts of the whole lists."""
    excluded = sorted(flags.excluded_commands)
    yield _gauge(
        "snakepool_rollout_excluded_commands",
        "Commands kept on V2-compat whatever the percentage (rollout exclude).", [],
        len(excluded),
    )  # fmt: skip
    yield _per_command(
        "snakepool_rollout_command_excluded",
        "1 for each command kept on V2-compat (rollout exclude; the first "
        f"{MAX_COMMAND_LABELS} by name).",
        excluded,
    )
    allowed = sorted(flags.v3_commands) if flags.v3_commands is not None else []
    yield _gauge(
        "snakepool_rollout_v3_allow_list",
        "1 while only the commands of the V3 allow-list may go to V3 (rollout only), "
        "0 while every command may.", [], int(flags.v3_commands is not None),
    )  # fmt: skip
    yield _gauge(
        "snakepool_rollout_v3_only_commands",
        "Commands on the V3 allow-list (0 with no allow-list: every command may go).", [],
        len(allowed),
    )  # fmt: skip
    yield _per_command(
        "snakepool_rollout_v3_only",
        "1 for each command on the V3 allow-list (rollout only; the first "
        f"{MAX_COMMAND_LABELS} by name).",
        allowed,
    )


def _per_command(name: str, documentation: str, commands: list[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=("command",))
    for command in commands[:MAX_COMMAND_LABELS]:
        family.add_metric([command], 1)
    return family
