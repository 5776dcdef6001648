"""(e) Memory: the parent's growth, the template, and what each forked interpreter owns.

An interpreter forked from the template shares the template's pages (the heavy
adapter's ~40 MB of heap included) until it writes to them; ``gc.freeze()`` in the
template keeps the collector from touching them. USS (memory unique to the process)
is what one more interpreter really costs; RSS counts the shared pages again in every
process. Measured right after start, idle — the best case: a busy interpreter that
touches shared objects copies their pages.

Run first in a fresh benchmark process, so that round 1's parent growth is what the
first pool costs a program; later rounds show the steady state.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import psutil

from benchmarks.harness import Harness
from benchmarks.startup import HEAVY
from benchmarks.stats import Figure, summarize

__all__ = ["bench_memory"]

MB = 1024 * 1024
#: Seconds for output and bookkeeping to settle after start, before measuring.
SETTLE_SECONDS = 0.5


def bench_memory(harness: Harness, *, rounds: int = 3, size: int = 8) -> dict[str, Any]:
    """RSS / USS / PSS in MB of the parent, the template and the interpreters."""
    me = psutil.Process()
    growth: list[float] = []
    template_rss: list[float] = []
    uss: list[float] = []
    rss: list[float] = []
    ratio: list[float] = []
    total_uss: list[float] = []
    total_pss: list[float] = []
    for _ in range(rounds):
        gc.collect()
        before = me.memory_info().rss
        pool = harness.pool(size=size, adapter=HEAVY)
        try:
            pool.start()
            time.sleep(SETTLE_SECONDS)
            growth.append((me.memory_info().rss - before) / MB)
            template = harness.template_pid(pool)
            if template is None:
                raise RuntimeError("template process not found")
            template_info = psutil.Process(template).memory_full_info()
            template_rss.append(template_info.rss / MB)
            round_uss = round_pss = 0.0
            pids = pool.interpreter_pids()
            if len(pids) != size:
                raise RuntimeError(f"expected {size} interpreters, found {len(pids)}")
            for pid in pids:
                info = psutil.Process(pid).memory_full_info()
                uss.append(info.uss / MB)
                rss.append(info.rss / MB)
                ratio.append(info.uss / info.rss)
                round_uss += info.uss / MB
                round_pss += info.pss / MB
            total_uss.append(round_uss)
            total_pss.append(round_pss + template_info.pss / MB)
        finally:
            harness.stop_pool(pool)
    growth_s, template_s = summarize(growth), summarize(template_rss)
    uss_s, rss_s, ratio_s = summarize(uss), summarize(rss), summarize(ratio)
    total_s, pss_s = summarize(total_uss), summarize(total_pss)
    fmt = "{:.1f}"
    figures = [
        Figure(
            "e.parent_growth_first",
            f"(e) parent RSS growth, first pool of {size}",
            growth[0],
            " MB",
            "",
            note="one sample: the first pool in this process",
        ),
        Figure(
            "e.parent_growth",
            "    parent RSS growth, all rounds",
            growth_s.median,
            " MB",
            growth_s.spread(fmt),
            note=f"{rounds} pools in turn",
        ),
        Figure(
            "e.template_rss", "    template RSS", template_s.median, " MB", template_s.spread(fmt)
        ),
        Figure(
            "e.interp_uss",
            "    one interpreter USS",
            uss_s.median,
            " MB",
            uss_s.spread(fmt),
            note="idle, right after start",
        ),
        Figure("e.interp_rss", "    one interpreter RSS", rss_s.median, " MB", rss_s.spread(fmt)),
        Figure(
            "e.uss_rss",
            "    one interpreter USS / RSS",
            ratio_s.median,
            "",
            ratio_s.spread("{:.2f}"),
        ),
        Figure(
            "e.total_uss",
            f"    total USS of {size} interpreters",
            total_s.median,
            " MB",
            total_s.spread(fmt),
        ),
        Figure(
            "e.total_pss",
            f"    total PSS, template + {size} interpreters",
            pss_s.median,
            " MB",
            pss_s.spread(fmt),
            note="shared pages split fairly",
        ),
    ]
    return {
        "figures": figures,
        "data": {
            "rounds": rounds,
            "size": size,
            "parent_rss_growth_mb": growth_s.as_dict(),
            "template_rss_mb": template_s.as_dict(),
            "interpreter_uss_mb": uss_s.as_dict(),
            "interpreter_rss_mb": rss_s.as_dict(),
            "interpreter_uss_over_rss": ratio_s.as_dict(),
            "total_uss_mb": total_s.as_dict(),
            "total_pss_mb": pss_s.as_dict(),
        },
    }
