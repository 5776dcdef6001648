"""(f) (g): the real workload — DSPy programs — on a pool vs fresh interpreters and in-process
((h), memory, is in :mod:`benchmarks.dspy_memory`).

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

import json
import sys
import time
from typing import Any

from benchmarks.harness import Harness
from benchmarks.startup import start_report, time_starts
from benchmarks.stats import Figure, ratio_summary, summarize
from snakepool.pool import Pool

__all__ = [
    "DSPY",
    "PRELUDE",
    "PROGRAM",
    "QUESTION",
    "SETTLE_SECONDS",
    "bench_dspy_execute",
    "bench_dspy_start",
    "python_argv",
]

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
PRELUDE = (
    "import os, signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.environ.setdefault('LITELLM_LOCAL_MODEL_COST_MAP', 'True')\n"
)
#: (f) one cold interpreter: import DSPy and exit.
COLD_IMPORT = PRELUDE + "import dspy"
#: (g) one request in a fresh interpreter: the same program, run once, then exit.
FRESH_REQUEST = (
    PRELUDE
    + f"""\
import dspy
from dspy.utils import DummyLM
program = dspy.Predict(dspy.Signature({PROGRAM["signature"]!r}))
with dspy.context(lm=DummyLM({{"": {{"answer": "x"}}}})):
    print(program(question={QUESTION!r}).answer)
"""
)
#: (g) the same program called in-process: the adapter's own ``execute_program`` (the
#: code an interpreter runs for the request), and DSPy's bare ``Predict`` call beside it;
#: per-call seconds as JSON. ``CALLS`` and ``WARMUP`` are filled in per round.
IN_PROCESS = (
    PRELUDE
    + f"""\
import json, time, dspy
from dspy.utils import DummyLM
from snakepool.pool.interpreter import dspy_programs as adapter
args = {{"program": {PROGRAM!r}, "inputs": {{"question": {QUESTION!r}}}}}
bare = dspy.Predict(dspy.Signature({PROGRAM["signature"]!r}))
lm = DummyLM({{"": {{"answer": "x"}}}})
def adapter_call():
    adapter.execute_program(args)
def bare_call():
    with dspy.context(lm=lm):
        bare(question={QUESTION!r})
def timed(call, n):
    out = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out
timed(adapter_call, WARMUP)
timed(bare_call, WARMUP)
print(json.dumps({{"adapter": timed(adapter_call, CALLS), "bare": timed(bare_call, CALLS)}}))
"""
)


def python_argv(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# ------------------------------------------------------------------------- (f)


def bench_dspy_start(harness: Harness, *, rounds: int = 5, size: int = 8) -> dict[str, Any]:
    """(f) ``Pool(size=8, adapter=DSPY).start()`` vs one cold ``python -c "import dspy"``.

    The cold side is timed from launch to exit; the pool from ``Pool.start()`` to its
    return (template started, DSPy imported in it, 8 forks ready). One untimed cold
    import first warms the page cache for both.
    """
    harness.timed_run(python_argv(COLD_IMPORT))
    cold, pooled, ready = time_starts(
        harness,
        rounds=rounds,
        cold=lambda: harness.timed_run(python_argv(COLD_IMPORT))[0],
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
    elapsed, output = harness.timed_run(python_argv(FRESH_REQUEST))
    if output.strip() != b"x":
        raise RuntimeError(f"the fresh interpreter answered {output!r}")
    return elapsed


def _in_process(harness: Harness, calls: int, warmup: int) -> dict[str, list[float]]:
    _, output = harness.timed_run(
        python_argv(IN_PROCESS.replace("CALLS", str(calls)).replace("WARMUP", str(warmup)))
    )
    timings: dict[str, list[float]] = json.loads(output)
    return timings


def bench_dspy_execute(
    harness: Harness, *, rounds: int = 5, calls: int = 60, warmup: int = 20
) -> dict[str, Any]:
    """(g) ``execute_program`` through a 1-interpreter DSPy pool vs the same program called
    in-process (the headline), and vs a fresh interpreter per request (``python -c``:
    import DSPy, build the ``Predict``, run it once, exit).

    Each round: ``calls`` pool requests, each timed alone; ``calls`` in-process calls of
    the adapter's ``execute_program`` (and of a bare ``Predict``) in a child that has
    imported the adapter, each timed alone after ``warmup`` untimed ones; and one fresh
    request; the order alternating. The program is sent inline (as the V3 lane sends it), so after
    the first call it comes from the interpreter's compiled-program cache; each round
    also times one call with a program the interpreter has not seen (a new
    ``instructions`` text), i.e. compile + run.
    """
    pool = harness.pool(size=1, adapter=DSPY)
    pooled: list[float] = []
    per_round: list[float] = []
    fresh: list[float] = []
    first: list[float] = []
    local: dict[str, list[float]] = {"adapter": [], "bare": []}
    local_round: list[float] = []
    try:
        pool.start()
        very_first = _execute(pool, PROGRAM)
        for _ in range(warmup):
            _execute(pool, PROGRAM)
        _fresh_request(harness)  # warms the page cache for the fresh side
        for index in range(rounds):
            order = ("pool", "local", "fresh") if index % 2 == 0 else ("fresh", "local", "pool")
            for side in order:
                time.sleep(SETTLE_SECONDS)
                if side == "fresh":
                    fresh.append(_fresh_request(harness))
                    continue
                if side == "local":
                    timings = _in_process(harness, calls, warmup)
                    for kind in local:
                        local[kind] += timings[kind]
                    local_round.append(summarize(timings["adapter"]).median)
                    continue
                new_program = {**PROGRAM, "instructions": f"Answer briefly (round {index})."}
                first.append(_execute(pool, new_program))
                samples = [_execute(pool, PROGRAM) for _ in range(calls)]
                pooled += samples
                per_round.append(summarize(samples).median)
    finally:
        harness.stop_pool(pool)
    pool_s, fresh_s, first_s = summarize(pooled), summarize(fresh), summarize(first)
    local_s, bare_s = summarize(local["adapter"]), summarize(local["bare"])
    speedup = ratio_summary(fresh, per_round)
    overhead = ratio_summary(per_round, local_round)
    figures = [
        Figure(
            "g.pool_vs_inprocess",
            "(g) DSPy execute_program: pool / the same program in-process",
            pool_s.median / local_s.median,
            "x",
            f"per round {overhead.spread('{:.2f}')}",
            ("<=", 1.5),
            "ratio of medians: what the pool adds to the adapter's own call",
        ),
        Figure(
            "g.inprocess_ms",
            "    in-process: the adapter's execute_program, per call",
            local_s.median * 1000,
            " ms",
            local_s.spread("{:.2f}", 1000),
            note=f"{len(local_s.samples)} calls; the same code an interpreter runs",
        ),
        Figure(
            "g.bare_ms",
            "    in-process: a bare dspy.Predict call (DSPy's floor)",
            bare_s.median * 1000,
            " ms",
            bare_s.spread("{:.2f}", 1000),
            note="no adapter: a fixed DummyLM, no definition check",
        ),
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
            "in_process_adapter_s": local_s.as_dict(),
            "in_process_bare_s": bare_s.as_dict(),
            "per_round_pool_over_in_process": overhead.as_dict(),
            "per_round_speedup": speedup.as_dict(),
            "first_call_s": first_s.as_dict(),
            "very_first_call_s": very_first,
        },
    }
