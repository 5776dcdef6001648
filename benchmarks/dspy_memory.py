"""(h) DSPy: what a pool of 8 interpreters takes in memory, template included, once it
has worked, against one fresh interpreter that has imported DSPy (see
:mod:`benchmarks.dspy_pool` for (f) and (g))."""

from __future__ import annotations

import select
import threading
import time
from typing import Any

import psutil

from benchmarks.dspy_pool import DSPY, PRELUDE, PROGRAM, QUESTION, SETTLE_SECONDS, python_argv
from benchmarks.harness import STARTUP_TIMEOUT, Harness
from benchmarks.stats import Figure, ratio_summary, summarize
from snakepool.pool import Pool

__all__ = ["bench_dspy_memory"]

MB = 1024 * 1024
#: (h) a fresh interpreter that has imported DSPy, waiting to be measured.
IDLE_IMPORTED = PRELUDE + "import dspy, time, sys; print('ready', flush=True); time.sleep(60)"


def _cold_rss(harness: Harness) -> tuple[float, float]:
    """RSS and USS (MB) of a fresh interpreter that has imported DSPy; then killed."""
    process = harness.popen(python_argv(IDLE_IMPORTED), capture=True)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT)
        if not ready or process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the fresh DSPy interpreter did not say ready")
        info = psutil.Process(process.pid).memory_full_info()
        return info.rss / MB, info.uss / MB
    finally:
        process.kill()
        harness.reap(process)
        if process.stdout is not None:
            process.stdout.close()


def _run_one_program_each(pool: Pool, size: int) -> None:
    """Make every interpreter run ``execute_program`` once.

    Idle interpreters are leased most-recently-used first, so plain requests one after
    another would all go to one interpreter. Instead ``size`` concurrent ``sleep``
    requests with distinct affinity keys bind one key to each interpreter, and the
    program then runs once under each key.
    """
    keys = [f"warm-{i}" for i in range(size)]
    threads = [
        threading.Thread(
            target=pool.execute, args=("sleep", {"seconds": 0.3}), kwargs=dict(affinity=key)
        )
        for key in keys
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len({pool.affinity_of(key) for key in keys}) != size:
        raise RuntimeError("could not bind one affinity key to each interpreter")
    request = {"program": PROGRAM, "inputs": {"question": QUESTION}}
    for key in keys:
        pool.execute("execute_program", request, affinity=key)


def _pool_memory(harness: Harness, size: int) -> dict[str, float]:
    pool = harness.pool(size=size, adapter=DSPY)
    try:
        pool.start()
        time.sleep(0.5)  # output and bookkeeping settle, as in (e)
        template = harness.template_pid(pool)
        pids = pool.interpreter_pids()
        if template is None or len(pids) != size:
            raise RuntimeError(f"expected a template and {size} interpreters, found {pids}")
        infos = [psutil.Process(pid).memory_full_info() for pid in pids]
        template_info = psutil.Process(template).memory_full_info()
        _run_one_program_each(pool, size)
        time.sleep(0.5)  # as for the idle figures
        after = [psutil.Process(pid).memory_full_info() for pid in pids]
        template_after = psutil.Process(template).memory_full_info()
        used = [info.uss for info in after]
        return {
            "total_pss_used": (sum(i.pss for i in after) + template_after.pss) / MB,
            "total_uss": sum(i.uss for i in infos) / MB,
            "interp_uss": sum(i.uss for i in infos) / size / MB,
            "interp_rss": sum(i.rss for i in infos) / size / MB,
            "template_rss": template_info.rss / MB,
            "total_pss": (sum(i.pss for i in infos) + template_info.pss) / MB,
            "total_uss_used": sum(used) / MB,
        }
    finally:
        harness.stop_pool(pool)


def bench_dspy_memory(harness: Harness, *, rounds: int = 3, size: int = 8) -> dict[str, Any]:
    """(h) total PSS of a DSPy pool — the template and its 8 interpreters, after each has
    run one program — vs the RSS of one fresh interpreter that has imported DSPy.

    PSS divides each shared page among the processes sharing it, so the total counts
    the template's pages once and every page an interpreter copied or allocated: what
    the pool really takes, template included, once it has worked. The idle figures
    (right after start) are shown beside it.
    """
    pools: list[dict[str, float]] = []
    cold_rss: list[float] = []
    cold_uss: list[float] = []
    for index in range(rounds):
        for side in ("cold", "pool") if index % 2 == 0 else ("pool", "cold"):
            time.sleep(SETTLE_SECONDS)
            if side == "pool":
                pools.append(_pool_memory(harness, size))
                continue
            rss, uss = _cold_rss(harness)
            cold_rss.append(rss)
            cold_uss.append(uss)
    by_key = {key: summarize([p[key] for p in pools]) for key in pools[0]}
    cold_s = summarize(cold_rss)
    per_round = ratio_summary([p["total_pss_used"] for p in pools], cold_rss)
    idle_ratio = by_key["total_uss"].median / cold_s.median
    fmt = "{:.1f}"

    def row(key: str, label: str, note: str = "") -> Figure:
        s = by_key[key]
        return Figure(f"h.{key}", label, s.median, " MB", s.spread(fmt), note=note)

    figures = [
        Figure(
            "h.ratio",
            f"(h) DSPy pool: PSS of template + {size} after a program each / one fresh "
            "import dspy RSS",
            by_key["total_pss_used"].median / cold_s.median,
            "x",
            f"per round {per_round.spread('{:.2f}')}",
            ("<=", 1.5),
            "ratio of medians; every interpreter has run execute_program once",
        ),
        row("total_pss_used", f"    total PSS, template + {size}, after a program each"),
        Figure(
            "h.cold_rss",
            "    one fresh interpreter after import dspy, RSS",
            cold_s.median,
            " MB",
            cold_s.spread(fmt),
            note=f"its USS {summarize(cold_uss).median:.1f} MB",
        ),
        row("total_pss", f"    total PSS, template + {size}, idle", "right after start"),
        row("template_rss", "    template RSS"),
        row(
            "total_uss",
            f"    total USS of {size} interpreters, idle",
            f"{idle_ratio:.2f}x one fresh import (the old headline: template left out)",
        ),
        row("interp_uss", "    one interpreter USS, idle"),
        row("interp_rss", "    one interpreter RSS, idle"),
        row(
            "total_uss_used",
            f"    total USS of {size} after one program each",
            "copy-on-write of a used interpreter",
        ),
    ]
    return {
        "figures": figures,
        "data": {
            "rounds": rounds,
            "size": size,
            "per_round_ratio": per_round.as_dict(),
            "cold_rss_mb": cold_s.as_dict(),
            "cold_uss_mb": summarize(cold_uss).as_dict(),
            **{f"{key}_mb": s.as_dict() for key, s in by_key.items()},
        },
    }
