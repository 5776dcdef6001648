"""The ``snakepool`` command line."""

from __future__ import annotations

import logging
import sys

import click
from rich.console import Console

from config import load_settings
from pool.errors import SnakepoolError

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """snakepool: warm Python interpreter pools behind a task queue."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--requests", "-n", default=400, show_default=True, help="Requests to send.")
@click.option("--pool-size", type=int, default=None, help="Interpreters (default: POOL_SIZE).")
def demo(requests: int, pool_size: int | None) -> None:
    """Start a pool, send a mix of work (and one crash) through it, print a summary."""
    from tasks.demo import run_dspy_demo, run_pool_demo

    console = Console()
    try:
        overrides = {"pool_size": pool_size} if pool_size else {}
        settings = load_settings(**overrides)
        code = run_pool_demo(settings, requests=requests, console=console)
        code = code or run_dspy_demo(settings, console=console)
        sys.exit(code)
    except SnakepoolError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        sys.exit(2)


if __name__ == "__main__":
    main()
