"""(f) (g) (h): the real workload — DSPy programs — on a pool vs fresh interpreters.

The adapter :mod:`snakepool.pool.interpreter.dspy_programs` is imported once in the template, so
every interpreter starts with DSPy imported: a pool of 8 should cost about one
``import dspy`` to start (f), a request should cost a warm ``Predict`` call instead of
a whole interpreter (g), and 8 interpreters should share most of DSPy's memory with
their template (h). The other side of each ratio is a fresh ``python -c`` process
doing the same, measured in the same run, rounds alternating which side goes first.

The LM is DSPy's ``DummyLM`` on both sides (the pool's default ``LM=dummy``): offline,
deterministic, and what a program costs without the model's own latency.
"""

from __future__ import annotations

import select
import sys
import threading
import time
from typing import Any

import psutil

from benchmarks.harness import STARTUP_TIMEOUT, Harness
from benchmarks.startup import start_report, time_starts
from benchmarks.stats import Figure, ratio_summary, summarize
from snakepool.pool import Pool

__all__ = ["DSPY", "bench_dspy_execute", "bench_dspy_memory", "bench_dspy_start"]

#: The adapter under test.
DSPY = "snakepool.pool.interpreter.dspy_programs"
#: The inline program of (g): what the V3 lane sends for ``execute_program``.
PROGRAM = {"signature": "question -> answer"}
QUESTION = "What is the capital of France?"
#: Seconds to let exiting processes finish between timed sections.
SETTLE_SECONDS = 0.3
MB = 1024 * 1024

# Every fresh interpreter first ignores SIGINT (a terminal Ctrl-C is for the benchmark,
# which kills its children in order) and sets what the adapter sets for itself at import
# (no litellm network fetch; litellm is not imported with the dummy LM anyway). Both
# modules are loaded at interpreter start-up: this line costs nothing measurable.
_PRELUDE = (
    "import os, signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.environ.setdefault('LITELLM_LOCAL_MODEL_COST_MAP', 'True')\n"
)
#: (f) one cold interpreter: import DSPy and exit.
COLD_IMPORT = _PRELUDE + "import dspy"
#: (g) one request in a fresh interpreter: the same program, run once, then exit.
FRESH_REQUEST = (
    _PRELUDE
    + f"""\
import dspy
from dspy.utils import DummyLM
program = dspy.Predict(dspy.Signature({PROGRAM["signature"]!r}))
with dspy.context(lm=DummyLM({{"": {{"answer": "x"}}}})):
    print(program(question={QUESTION!r}).answer)
"""
)
#: (h) a fresh interpreter that has imported DSPy, waiting to be measured.
IDLE_IMPORTED = _PRELUDE + "import dspy, time, sys; print('ready', flush=True); time.sleep(60)"


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# ------------------------------------------------------------------------- (f)


def bench_dspy_start(harness: Harness, *, rounds: int = 5, size: int = 8) -> dict[str, Any]:
    """(f) ``Pool(size=8, adapter=DSPY).start()`` vs one cold ``python -c "import dspy"``.

    The cold side is timed from launch to exit; the pool from ``Pool.start()`` to its
    return (template started, DSPy imported in it, 8 forks ready). One untimed cold
    import first warms the page cache for both.
    """
    harness.timed_run(_python(COLD_IMPORT))
    cold, pooled, ready = time_starts(
        harness,
        rounds=rounds,
        cold=lambda: harness.timed_run(_python(COLD_IMPORT))[0],
        make_pool=lambda ready: harness.pool(size=size, adapter=DSPY, observer=ready),
    )
    return start_report(
        "f",
        ratio_label=f"(f) DSPy Pool(size={size}).start() / cold import dspy",
        pool_label=f"    DSPy pool of {size} start",
        cold=("cold_import", '    python -c "import dspy", launch to exit', cold),
        target=1.5,
        note=f"ratio of medians; {rounds} rounds",
        rounds=rounds,
        size=size,
        pooled=pooled,
        ready=ready,
    )


# ------------------------------------------------------------------------- (g)


def _execute(pool: Pool, program: dict[str, Any]) -> float:
    started = time.perf_counter()
    result = pool.execute("execute_program", {"program": program, "inputs": {"question": QUESTION}})
    elapsed = time.perf_counter() - started
    if not isinstance(result, dict) or "answer" not in result:
        raise RuntimeError(f"execute_program answered {result!r}")
    return elapsed


def _fresh_request(harness: Harness) -> float:
    elapsed, output = harness.timed_run(_python(FRESH_REQUEST))
    if output.strip() != b"x":
        raise RuntimeError(f"the fresh interpreter answered {output!r}")
    return elapsed


def bench_dspy_execute(
    harness: Harness, *, rounds: int = 5, calls: int = 60, warmup: int = 20
) -> dict[str, Any]:
    """(g) ``execute_program`` through a 1-interpreter DSPy pool vs a fresh interpreter
    per request (``python -c``: import DSPy, build the ``Predict``, run it once, exit).

    Each round: ``calls`` pool requests, each timed alone, and one fresh request, in
    alternating order. The program is sent inline (as the V3 lane sends it), so after
    the first call it comes from the interpreter's compiled-program cache; each round
    also times one call with a program the interpreter has not seen (a new
    ``instructions`` text), i.e. compile + run.
    """
    pool = harness.pool(size=1, adapter=DSPY)
    pooled: list[float] = []
    per_round: list[float] = []
    fresh: list[float] = []
    first: list[float] = []
    try:
        pool.start()
        very_first = _execute(pool, PROGRAM)
        for _ in range(warmup):
            _execute(pool, PROGRAM)
        _fresh_request(harness)  # warms the page cache for the fresh side
        for index in range(rounds):
            for side in ("pool", "fresh") if index % 2 == 0 else ("fresh", "pool"):
                time.sleep(SETTLE_SECONDS)
                if side == "fresh":
                    fresh.append(_fresh_request(harness))
                    continue
                new_program = {**PROGRAM, "instructions": f"Answer briefly (round {index})."}
                first.append(_execute(pool, new_program))
                samples = [_execute(pool, PROGRAM) for _ in range(calls)]
                pooled += samples
                per_round.append(summarize(samples).median)
    finally:
        harness.stop_pool(pool)
    pool_s, fresh_s, first_s = summarize(pooled), summarize(fresh), summarize(first)
    speedup = ratio_summary(fresh, per_round)
    figures = [
        Figure(
            "g.speedup",
            "(g) DSPy execute_program: fresh interpreter / pool",
            fresh_s.median / pool_s.median,
            "x",
            f"per round {speedup.spread('{:.0f}')}",
            (">=", 50.0),
            "ratio of medians: how many times faster through the pool",
        ),
        Figure(
            "g.pool_ms",
            "    through the pool (1 interpreter), per request",
            pool_s.median * 1000,
            " ms",
            pool_s.spread("{:.2f}", 1000),
            note=f"{len(pooled)} requests, {rounds} rounds; program cached",
        ),
        Figure(
            "g.fresh_ms",
            "    fresh interpreter per request, launch to exit",
            fresh_s.median * 1000,
            " ms",
            fresh_s.spread("{:.0f}", 1000),
            note=f"{len(fresh)} processes",
        ),
        Figure(
            "g.first_call_ms",
            "    pool, a program the interpreter has not seen",
            first_s.median * 1000,
            " ms",
            first_s.spread("{:.2f}", 1000),
            note="compile + run, one per round",
        ),
        Figure(
            "g.very_first_ms",
            "    pool, the interpreter's very first request",
            very_first * 1000,
            " ms",
            "",
            note="one sample: first use of DSPy after the fork",
        ),
    ]
    return {
        "figures": figures,
        "data": {
            "rounds": rounds,
            "calls_per_round": calls,
            "pool_s": pool_s.as_dict(),
            "pool_round_median_s": summarize(per_round).as_dict(),
            "fresh_s": fresh_s.as_dict(),
            "per_round_speedup": speedup.as_dict(),
            "first_call_s": first_s.as_dict(),
            "very_first_call_s": very_first,
        },
    }


# ------------------------------------------------------------------------- (h)


def _cold_rss(harness: Harness) -> tuple[float, float]:
    """RSS and USS (MB) of a fresh interpreter that has imported DSPy; then killed."""
    process = harness.popen(_python(IDLE_IMPORTED), capture=True)
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
        used = [psutil.Process(pid).memory_full_info().uss for pid in pids]
        return {
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
    """(h) total USS of a DSPy pool's 8 interpreters vs the RSS of one fresh interpreter
    that has imported DSPy (what each interpreter would cost without the template).

    Measured idle right after start (the headline), and again after each interpreter
    has run one program (its copy-on-write pages: information).
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
    per_round = ratio_summary([p["total_uss"] for p in pools], cold_rss)
    fmt = "{:.1f}"

    def row(key: str, label: str, note: str = "") -> Figure:
        s = by_key[key]
        return Figure(f"h.{key}", label, s.median, " MB", s.spread(fmt), note=note)

    figures = [
        Figure(
            "h.ratio",
            f"(h) DSPy pool: total USS of {size} / one fresh import dspy RSS",
            by_key["total_uss"].median / cold_s.median,
            "x",
            f"per round {per_round.spread('{:.2f}')}",
            ("<=", 1.5),
            "ratio of medians; idle, right after start",
        ),
        row("total_uss", f"    total USS of {size} interpreters", "idle, right after start"),
        Figure(
            "h.cold_rss",
            "    one fresh interpreter after import dspy, RSS",
            cold_s.median,
            " MB",
            cold_s.spread(fmt),
            note=f"its USS {summarize(cold_uss).median:.1f} MB",
        ),
        row("template_rss", "    template RSS"),
        row("interp_uss", "    one interpreter USS"),
        row("interp_rss", "    one interpreter RSS"),
        row("total_pss", f"    total PSS, template + {size} interpreters"),
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
