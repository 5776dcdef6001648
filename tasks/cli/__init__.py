"""The ``snakepool`` command line: run nodes, send requests, watch and steer the rollout.

One module per command (group); this package assembles them under :func:`main`, the
console script (``snakepool = "snakepool.tasks.cli:main"``; ``python -m
snakepool.tasks.cli`` runs it too). Commands import Celery and the rest lazily, so
``snakepool --help`` stays quick.
"""

from __future__ import annotations

import logging

import click

from snakepool.config.secrets import RedactingFormatter
from snakepool.tasks.cli.bench import bench
from snakepool.tasks.cli.call import call
from snakepool.tasks.cli.check import check
from snakepool.tasks.cli.controller import controller
from snakepool.tasks.cli.deadletter import deadletter
from snakepool.tasks.cli.demo import demo
from snakepool.tasks.cli.report import report
from snakepool.tasks.cli.rollout import rollout
from snakepool.tasks.cli.sessions import sessions
from snakepool.tasks.cli.shadow import shadow
from snakepool.tasks.cli.status import status
from snakepool.tasks.cli.up import up
from snakepool.tasks.cli.worker import worker

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """snakepool: warm Python interpreter pools behind a task queue."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig, but no URL password reaches a log
        handler = logging.StreamHandler()
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)


for _command in (
    demo, worker, up, call, check, status, report, rollout, shadow, controller, bench, sessions,
    deadletter,
):  # fmt: skip
    main.add_command(_command)
