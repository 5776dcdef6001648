"""``snakepool controller``: promote, hold or roll back from the lanes' metrics."""

from __future__ import annotations

import json

import click

from snakepool.tasks.cli._common import console, fails_cleanly, settings_with

__all__ = ["controller"]


@click.command()
@click.option("--interval", default=10.0, show_default=True, help="Seconds between decisions.")
@click.option("--once", is_flag=True, help="Decide (and act) once, print why, exit.")
@click.option("--bake", "bake_seconds", default=300.0, show_default=True, help="Seconds per step.")
@click.option("--min-samples", default=50, show_default=True, help="V3 requests per window.")
@click.option("--max-error-rate", default=0.05, show_default=True)
@fails_cleanly
def controller(
    interval: float, once: bool, bake_seconds: float, min_samples: int, max_error_rate: float
) -> None:
    """The rollout controller: promote, hold or roll back from the lanes' metrics."""
    import signal
    import threading

    from snakepool.config.flags import FlagStore
    from snakepool.sessions import redis_from_url
    from snakepool.tasks.rollout.controller import ControllerPolicy, RolloutController
    from snakepool.tasks.rollout.metrics import LaneMetrics

    settings = settings_with()
    client = redis_from_url(settings.redis_url)
    policy = ControllerPolicy(
        bake_seconds=bake_seconds, min_samples=min_samples, max_error_rate=max_error_rate
    )
    rollout_controller = RolloutController(
        FlagStore(client, prefix=settings.key_prefix),
        LaneMetrics(client, prefix=settings.key_prefix),
        policy,
    )
    if once:
        decision = rollout_controller.evaluate()
        rollout_controller.apply(decision)
        console.print(f"{decision.action}: {decision.reason}")
        console.print_json(json.dumps(decision.snapshot))
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    console.print(f"controller: deciding every {interval:g}s (Ctrl-C stops)")
    rollout_controller.run(interval=interval, stop=stop)
