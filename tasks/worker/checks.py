"""Go/no-go before each step of the migration: what ``snakepool check`` verifies.

Each item passes or fails with the reason; all must pass:

========== =============================================================================
settings   every setting valid and coherent (``load_settings``: names, values, rules)
redis      Redis answers at ``REDIS_URL`` (and the broker at ``BROKER_URL``)
flags      the rollout flags in Redis can be read
adapter    the adapter imports in the configured ``PYTHON`` (a child process, timed)
router     a live node consumes the ``router`` queue
v3         a live node consumes the ``v3`` queue
v2compat   a live node consumes ``v2compat`` (not needed once the rollout is finalized)
versions   every live node runs the same snakepool version (live: a heartbeat AND an
           answer to the broadcast; a heartbeat without an answer is named apart)
========== =============================================================================

A consumer is proven by the node itself: it answers Celery's ``active_queues``
broadcast (so its consumer loop runs) listing the queue, and its heartbeat is live.
When an item fails, the items that depend on it say so instead of guessing.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from typing import Any

import redis

from snakepool.config import Settings
from snakepool.config.flags import FlagStore, RolloutFlags
from snakepool.config.keys import Keys
from snakepool.config.secrets import redact_url
from snakepool.errors import ConfigError
from snakepool.sessions import redis_answers, redis_from_url
from snakepool.tasks.worker.app import LANE_QUEUES, ROUTER_QUEUE, create_app
from snakepool.tasks.worker.node import live_nodes
from snakepool.tasks.worker.node_facts import snakepool_version

__all__ = ["CheckItem", "run_checks"]

#: Seconds nodes have to answer the ``active_queues`` broadcast.
INSPECT_TIMEOUT = 2.0
#: What the adapter check runs in the configured Python.
_IMPORT_ADAPTER = (
    "import sys\n"
    "from snakepool.pool.interpreter.adapter import load_adapter\n"
    "print(len(load_adapter(sys.argv[1]).specs))\n"
)


@dataclass(frozen=True)
class CheckItem:
    """One go/no-go item: its name, whether it passed, and why."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def check_adapter(settings: Settings, *, timeout: float) -> CheckItem:
    """Import the adapter in ``PYTHON`` with the interpreters' environment, timed."""
    from snakepool.pool import Pool

    pool = Pool.from_settings(settings)
    try:
        env = pool.child_env()
    finally:
        pool.stop()
    try:
        done = subprocess.run(
            [settings.python, "-c", _IMPORT_ADAPTER, settings.adapter],
            capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return CheckItem("adapter", False, f"importing {settings.adapter} took over {timeout:g}s")
    except OSError as exc:
        return CheckItem("adapter", False, f"cannot run {settings.python}: {exc}")
    if done.returncode != 0:
        quiet = f"{settings.python} {_ended(done.returncode)} with no message"
        last = (done.stderr.strip().splitlines() or [quiet])[-1]
        return CheckItem("adapter", False, f"{settings.adapter} does not import: {last}")
    commands = done.stdout.strip()
    if not commands.isdigit():  # it ran, but not our script: PYTHON is not a Python
        said = repr(commands[-80:]) if commands else "nothing"
        return CheckItem(
            "adapter", False,
            f"{settings.python} is not a Python that runs snakepool (PYTHON): asked to "
            f"import {settings.adapter} and count its commands, it printed {said}",
        )  # fmt: skip
    return CheckItem(
        "adapter", True, f"{settings.adapter}: {commands} commands ({settings.python})"
    )


def _ended(code: int) -> str:
    """How a process ended, in words: ``exited 1``, ``was killed by SIGKILL``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited {code}"


def _consumers(settings: Settings) -> dict[str, list[str]]:
    """Node → the queues it consumes, as the nodes answer (empty when none does)."""
    app = create_app(settings)
    try:
        replies = app.control.inspect(timeout=INSPECT_TIMEOUT).active_queues() or {}
    finally:
        app.close()
    return {node: [q.get("name", "") for q in queues or []] for node, queues in replies.items()}


def check_consumers(
    consumers: dict[str, list[str]], nodes: list[dict[str, Any]], flags: RolloutFlags | None
) -> list[CheckItem]:
    """One item per queue (router, v3, v2compat): proven live consumers, or why not."""
    alive = {node["name"] for node in nodes}
    items = []
    for queue in (ROUTER_QUEUE, *LANE_QUEUES):
        serving = sorted(n for n, queues in consumers.items() if queue in queues and n in alive)
        silent = sorted(n for n, queues in consumers.items() if queue in queues and n not in alive)
        if serving:
            items.append(CheckItem(queue, True, f"consumed by {', '.join(serving)}"))
        elif queue == "v2compat" and flags is not None and flags.finalized:
            items.append(CheckItem(queue, True, "not needed: the rollout is finalized"))
        else:
            why = f"no live consumer on {queue}: start one (`snakepool worker --lane {queue}`)"
            if silent:
                why += f"; {', '.join(silent)} consume it but have no live heartbeat"
            items.append(CheckItem(queue, False, why))
    return items


def check_versions(
    nodes: list[dict[str, Any]], *, answering: Collection[str], now: float | None = None
) -> CheckItem:
    """Every live node on one snakepool version.

    Args:
        nodes: The heartbeats found (``live_nodes``).
        answering: The nodes that answered the broadcast. Only a node with a heartbeat
            that also answers counts: one whose heartbeat has not expired yet but that
            does not answer (frozen: SIGSTOPped, swapped out) is named apart, never
            silently counted.
        now: The time to age heartbeats by (default: now).
    """
    live = [node for node in nodes if node["name"] in answering]
    stale = [node for node in nodes if node["name"] not in answering]
    note = _stale_note(stale, time.time() if now is None else now)
    if not live:
        return CheckItem("versions", False, "no live nodes" + note)
    by_version: dict[str, list[str]] = {}
    for node in live:
        by_version.setdefault(str(node.get("version") or "unknown"), []).append(node["name"])
    mine = snakepool_version()
    if len(by_version) == 1:
        (version,) = by_version
        mine_note = "" if version == mine else f" (this command: {mine})"
        ok = version != "unknown"
        return CheckItem("versions", ok, f"{len(live)} node(s) on {version}{mine_note}{note}")
    mixed = "; ".join(f"{v}: {', '.join(names)}" for v, names in sorted(by_version.items()))
    return CheckItem("versions", False, f"nodes on different versions: {mixed}{note}")


def _stale_note(stale: list[dict[str, Any]], now: float) -> str:
    """What the versions item says of heartbeats whose node did not answer."""
    if not stale:
        return ""

    def age(node: dict[str, Any]) -> str:
        at = node.get("at")
        if not isinstance(at, int | float) or isinstance(at, bool):
            return "heartbeat of unknown age"
        return f"heartbeat {max(0.0, now - at):.1f}s old"

    named = ", ".join(f"{node['name']} ({age(node)})" for node in stale)
    return f"; not counted, no answer to the broadcast (frozen or gone?): {named}"


def _answers(url: str, settings: Settings) -> bool:
    """Whether the Redis (or, for another broker scheme, the broker) at ``url`` answers."""
    if url.startswith(("redis://", "rediss://", "unix://", "fakeredis://")):
        return redis_answers(url)
    app = create_app(settings)  # e.g. sentinel://: let kombu connect the way nodes do
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=INSPECT_TIMEOUT)
        return True
    except Exception:  # any failure to connect is the finding
        return False
    finally:
        app.close()


def check_redis(settings: Settings) -> CheckItem:
    """Redis answers at ``REDIS_URL``, and the broker at ``BROKER_URL``."""
    urls = dict.fromkeys((settings.redis_url, settings.broker_url or settings.redis_url))
    silent = [redact_url(url) for url in urls if not _answers(url, settings)]
    if silent:
        return CheckItem("redis", False, "no answer at " + ", ".join(silent))
    return CheckItem("redis", True, "answers at " + ", ".join(map(redact_url, urls)))


def check_flags(client: redis.Redis, prefix: str) -> tuple[CheckItem, RolloutFlags | None]:
    """The rollout flags can be read (and parsed)."""
    try:
        flags = FlagStore(client, prefix=prefix).read()
    except Exception as exc:  # any failure to read them is the finding
        return CheckItem("flags", False, f"unreadable: {type(exc).__name__}: {exc}"), None
    return CheckItem("flags", True, f"version {flags.version}, {flags.percent}% to V3"), flags


def run_checks(
    load: Callable[[], Settings], *, adapter_timeout: float | None = None
) -> list[CheckItem]:
    """Every go/no-go item, in order (later items say when an earlier failure stops them).

    Args:
        load: Reads the settings (``load_settings``); a ``ConfigError`` fails ``settings``.
        adapter_timeout: Seconds the adapter import may take (default ``STARTUP_TIMEOUT``).
    """
    dependents = ("redis", "flags", "adapter", ROUTER_QUEUE, *LANE_QUEUES, "versions")
    try:
        settings = load()
    except ConfigError as exc:
        return [CheckItem("settings", False, exc.message)] + [
            CheckItem(name, False, "not checked: the settings are invalid") for name in dependents
        ]
    items = [CheckItem("settings", True, f"valid (REDIS_URL {redact_url(settings.redis_url)})")]
    reachable = check_redis(settings)
    items.append(reachable)
    timeout = settings.startup_timeout if adapter_timeout is None else adapter_timeout
    if not reachable.ok:
        unchecked = "not checked: Redis does not answer"
        items.append(CheckItem("flags", False, unchecked))
        items.append(check_adapter(settings, timeout=timeout))  # needs no Redis
        return items + [CheckItem(n, False, unchecked) for n in dependents[3:]]
    client = redis_from_url(settings.redis_url)
    try:
        flag_item, flags = check_flags(client, settings.key_prefix)
        items += [flag_item, check_adapter(settings, timeout=timeout)]
        nodes = live_nodes(client, Keys(settings.key_prefix))
    finally:
        client.close()
    consumers = _consumers(settings)
    items += check_consumers(consumers, nodes, flags)
    items.append(check_versions(nodes, answering=consumers))
    return items
