"""The run's output: a rich table on the terminal and the same figures as JSON."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from benchmarks.stats import Figure

__all__ = ["LogCollector", "machine_info", "print_table", "write_json"]


class LogCollector(logging.Handler):
    """Keeps the pool's warnings and errors out of the table, counted for the summary."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        """Count the record by level and first line of its message."""
        first_line = record.getMessage().splitlines()[0] if record.getMessage() else ""
        self.messages[f"{record.levelname}: {_normalize(first_line)[:160]}"] += 1

    def summary(self) -> dict[str, int]:
        """Distinct messages (pids and numbers blanked) with their counts."""
        return dict(self.messages.most_common())


def _normalize(text: str) -> str:
    """Blank out digits so the same message about different pids is counted once."""
    return "".join("#" if ch.isdigit() else ch for ch in text).replace("##", "#")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "cpu_affinity": len(psutil.Process().cpu_affinity() or []),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "memory_mb": round(psutil.virtual_memory().total / 2**20),
    }


def _value(figure: Figure) -> str:
    value = figure.value
    text = f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return text + figure.unit


def print_table(console: Console, figures: Iterable[Figure], title: str) -> None:
    """One row per figure: value, spread, target, met."""
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("benchmark")
    table.add_column("median", justify="right")
    table.add_column("spread: min-max (IQR)")
    table.add_column("target", justify="right")
    table.add_column("met", justify="center")
    table.add_column("note", style="dim")
    for figure in figures:
        met = figure.met
        mark = "" if met is None else "[green]yes[/]" if met else "[red]NO[/]"
        headline = figure.target is not None
        table.add_row(
            f"[bold]{figure.label}[/]" if headline else figure.label,
            _value(figure),
            figure.spread,
            figure.target_text(),
            mark,
            figure.note,
        )
    console.print(table)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (figures as dicts) to ``path``, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"written": datetime.now(UTC).isoformat(timespec="seconds"), **payload}
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, Figure):
        return value.as_dict()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")
