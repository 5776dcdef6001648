"""``snakepool controller``: promote, hold or roll back from the lanes' metrics.

The policy is the ``ROLLOUT_*`` settings (environment, TOML file, profile preset); the
options below override them for this run. Only one controller acts at a time: each
takes a Redis lease (``ROLLOUT_LEASE_TTL``) and a second one stands by, saying so, until
the acting one stops or dies. Each acquisition of the lease has a fencing token, and a
change is written only while that token is current: a controller that paused past its
lease and woke after another took over writes nothing, says so, and stands by.
"""

from __future__ import annotations

import json

import click

from snakepool.tasks.cli._common import console, fails_cleanly, settings_with
from snakepool.tasks.cli._params import setting_range

__all__ = ["controller"]


@click.command()
@click.option(
    "--interval", type=setting_range("rollout_interval"), default=None,
    help="Seconds between decisions [ROLLOUT_INTERVAL].",
)  # fmt: skip
@click.option("--once", is_flag=True, help="Decide (and act, if no other acts) once, exit.")
@click.option(
    "--bake", "bake_seconds", type=setting_range("rollout_bake_seconds"), default=None,
    help="Seconds a step bakes [ROLLOUT_BAKE_SECONDS].",
)  # fmt: skip
@click.option(
    "--min-samples", type=setting_range("rollout_min_samples"), default=None,
    help="V3 requests per window [ROLLOUT_MIN_SAMPLES].",
)  # fmt: skip
@click.option(
    "--max-error-rate", type=setting_range("rollout_max_error_rate"), default=None,
    help="V3 error rate [ROLLOUT_MAX_ERROR_RATE].",
)  # fmt: skip
@fails_cleanly
def controller(
    interval: float | None,
    once: bool,
    bake_seconds: float | None,
    min_samples: int | None,
    max_error_rate: float | None,
) -> None:
    """The rollout controller: promote, hold or roll back from the lanes' metrics."""
    import signal
    import threading

    from snakepool.config.flags import FlagStore
    from snakepool.sessions import redis_from_url
    from snakepool.tasks.rollout.controller import ControllerPolicy, RolloutController
    from snakepool.tasks.rollout.lease import ControllerLease, controller_id
    from snakepool.tasks.rollout.metrics import LaneMetrics

    settings = settings_with(
        rollout_interval=interval,
        rollout_bake_seconds=bake_seconds,
        rollout_min_samples=min_samples,
        rollout_max_error_rate=max_error_rate,
    )
    client = redis_from_url(settings.redis_url)
    policy = ControllerPolicy.from_settings(settings)
    rollout_controller = RolloutController(
        FlagStore(client, prefix=settings.key_prefix),
        LaneMetrics(client, prefix=settings.key_prefix),
        policy,
    )
    lease = ControllerLease(
        client, prefix=settings.key_prefix, holder=controller_id(), ttl=settings.rollout_lease_ttl
    )
    if once:
        decision = rollout_controller.evaluate()
        if lease.acquire():
            try:
                rollout_controller.apply(decision, acting=lease.holder, fence=lease.fence())
            finally:
                lease.release()
            console.print(f"{decision.action}: {decision.reason}")
        else:
            console.print(
                f"standby: controller {lease.current()} is acting; "
                f"not applying {decision.action}: {decision.reason}"
            )
        console.print_json(json.dumps(decision.snapshot))
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    schedule = ", ".join(str(p) for p in policy.schedule)
    console.print(
        f"controller {lease.holder}: deciding every {settings.rollout_interval:g} s "
        f"(bake {policy.bake_seconds:g} s, ≥ {policy.min_samples} V3 samples in "
        f"{policy.window_seconds} s, error rate ≤ {policy.max_error_rate:g}, "
        f"p99 ≤ {policy.max_p99_ratio:g}x V2-compat's, rollback to "
        f"{'the previous step' if policy.rollback_to_previous else '0 %'}, "
        f"schedule {schedule}); Ctrl-C stops",
        highlight=False,
        soft_wrap=True,
    )
    rollout_controller.run(
        interval=settings.rollout_interval,
        stop=stop,
        lease=lease,
        announce=lambda message: console.print(message, highlight=False, soft_wrap=True),
    )
