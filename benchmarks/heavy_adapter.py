"""A benchmark adapter whose import is expensive, like a real ML / DSPy stack.

Importing it costs about :data:`IMPORT_CPU_SECONDS` of CPU time: it builds a lookup
table of :data:`TABLE_ENTRIES` small objects (a few tens of MB of heap, standing in for
the module-level state of a heavy library) and then runs a pure-Python loop until the
process's CPU clock (``time.process_time``) has advanced by one second since the import
began. CPU time, not wall time, is the budget, so a busy neighbour on the machine makes
the import slower in wall time exactly as it would a real import.

The loop also calibrates :func:`spin`: it counts how many fixed-size work chunks fit in
its CPU time, so ``spin {"ms": n}`` does a fixed amount of work (about ``n`` ms of one
core when the import ran undisturbed) rather than "until the clock says so" — two
interpreters on two hyper-threads of one core are then measured honestly, not flattered.
"""

from __future__ import annotations

import math
import time
from typing import Any

from benchmarks.kernel import CHUNK_ITERATIONS, work
from snakepool.pool.interpreter import InvalidArguments, command
from snakepool.pool.interpreter.core import get_stats, ping

__all__ = ["IMPORT_CPU_SECONDS", "TABLE_ENTRIES", "get_stats", "info", "ping", "spin"]

#: CPU seconds the import takes, table included.
IMPORT_CPU_SECONDS = 1.0
#: Entries of the module-level lookup table (each a tuple of an int and a str).
TABLE_ENTRIES = 200_000
#: Longest ``spin`` accepted, in milliseconds.
MAX_SPIN_MS = 10_000


def _heavy_import() -> tuple[list[tuple[int, str]], float, int]:
    """Build the table, then burn CPU up to the budget; return (table, chunks/ms, checksum)."""
    started = time.process_time()
    table = [(i, f"entry-{i:08d}") for i in range(TABLE_ENTRIES)]
    spin_started = time.process_time()
    chunks = 0
    acc = 0
    while time.process_time() - started < IMPORT_CPU_SECONDS:
        acc = work(CHUNK_ITERATIONS, acc)
        chunks += 1
    spin_ms = (time.process_time() - spin_started) * 1000
    return table, max(chunks / max(spin_ms, 1e-3), 1.0), acc


_TABLE, CHUNKS_PER_MS, _CHECKSUM = _heavy_import()


@command(read_only=True)
def spin(args: dict[str, Any]) -> int:
    """Burn about ``{"ms": n}`` milliseconds of CPU in a pure-Python loop; return a checksum.

    ``{"chunks": k}`` asks for an exact amount of work instead (``k`` kernel chunks), so
    that pools whose templates calibrated differently still get identical requests.
    """
    chunks = args.get("chunks")
    if chunks is not None:
        if isinstance(chunks, bool) or not isinstance(chunks, int) or not 0 <= chunks <= 10**7:
            raise InvalidArguments("'chunks' must be an integer between 0 and 10**7")
    else:
        ms = args.get("ms", 5)
        if isinstance(ms, bool) or not isinstance(ms, int | float) or math.isnan(ms):
            raise InvalidArguments("spin needs 'ms' as a number")
        if not 0 <= ms <= MAX_SPIN_MS:
            raise InvalidArguments(f"'ms' must be between 0 and {MAX_SPIN_MS}")
        chunks = max(1, round(ms * CHUNKS_PER_MS)) if ms else 0
    acc = 1
    for _ in range(chunks):
        acc = work(CHUNK_ITERATIONS, acc)
    return acc


@command(read_only=True)
def info(args: dict[str, Any]) -> dict[str, Any]:
    """The import's calibration: table size and work chunks per millisecond."""
    return {"table_entries": len(_TABLE), "chunks_per_ms": CHUNKS_PER_MS}
