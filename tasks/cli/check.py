"""``snakepool check``: go/no-go before a step of the migration; exit 0 only if all pass."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from snakepool.tasks.cli._common import console, styled
from snakepool.tasks.cli._params import Seconds

__all__ = ["check"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--adapter-timeout",
    type=Seconds(),
    default=None,
    help="Seconds the adapter import may take (default: STARTUP_TIMEOUT).",
)
def check(as_json: bool, adapter_timeout: float | None) -> None:
    """Go/no-go: Redis, settings, the adapter in PYTHON, a live consumer on router, v3
    and v2compat, one snakepool version on every node, readable flags.

    Prints each item with pass/fail and why; exits 0 only when every item passes (1
    otherwise).
    """
    from snakepool.config import load_settings
    from snakepool.tasks.worker.checks import run_checks

    items = run_checks(load_settings, adapter_timeout=adapter_timeout)
    passed = all(item.ok for item in items)
    if as_json:
        click.echo(json.dumps({"ok": passed, "items": [i.to_dict() for i in items]}, indent=2))
    else:
        table = Table(title="snakepool check")
        table.add_column("item", no_wrap=True)
        table.add_column("", no_wrap=True)
        table.add_column("why", overflow="fold")
        for item in items:
            mark = styled("pass", "green") if item.ok else styled("FAIL", "red")
            table.add_row(item.name, mark, item.detail)
        console.print(table)
        failed = [item.name for item in items if not item.ok]
        if passed:
            console.print("go")
        else:
            console.print(styled("no-go:", "red"), f"{', '.join(failed)} failed")
    sys.exit(0 if passed else 1)
