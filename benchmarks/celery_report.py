"""(i)'s figures: the medians, their spreads and the targets of issue 10.

Targets (ratios of medians from one run; the spread is that of the per-round ratios):

- zero-hop latency ≤ 1.10x plain Celery, zero-hop throughput ≥ 0.90x plain;
- the node's CPU per zero-hop request ≤ 1.2x the plain worker's per plain request;
- router latency ≤ 2.2x zero-hop, router throughput ≥ 0.45x plain (one extra hop on the
  same two CPUs cannot beat 0.5x);
- Redis commands per request ≤ 1.5x plain's for zero-hop, ≤ 2.5x for the router;
- the primary's latency with shadowing on (rate 1.0) ≤ 1.05x off.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from benchmarks.redis_stats import commands_per_request, top_commands
from benchmarks.stats import Figure, Summary, ratio_summary, summarize

__all__ = ["SIDES", "TARGETS", "report"]

SIDES = ("plain", "direct", "router")
#: key → (op, bound): the targets of issue 10.
TARGETS: dict[str, tuple[str, float]] = {
    "i.direct_vs_plain": ("<=", 1.10),
    "i.router_vs_direct": ("<=", 2.2),
    "i.shadow_ratio": ("<=", 1.05),
    "i.throughput_ratio": (">=", 0.90),
    "i.router_throughput_ratio": (">=", 0.45),
    "i.cpu_ratio": ("<=", 1.2),
    "i.redis_direct_ratio": ("<=", 1.5),
    "i.redis_router_ratio": ("<=", 2.5),
}
_LABELS = {"plain": "plain Celery", "direct": "zero-hop", "router": "router"}
_MS = "{:.2f}"


def _ratio(key: str, label: str, value: float, per_round: Summary, note: str) -> Figure:
    return Figure(key, label, value, "x", f"per round {per_round.spread(_MS)}", TARGETS[key], note)


def _ms(key: str, label: str, summary: Summary, note: str = "") -> Figure:
    return Figure(key, label, summary.median * 1000, " ms", summary.spread(_MS, 1000), note=note)


def _latency(
    latency: dict[str, Any], lane_p50_ms: float | None, rounds: int, calls: int
) -> list[Figure]:
    lat = {side: summarize(latency["samples"][side]) for side in SIDES}
    per_round = latency["round_medians"]
    router_plain = ratio_summary(per_round["router"], per_round["plain"])
    return [
        _ratio(
            "i.direct_vs_plain", "(i) ping zero-hop (V3 lane) / plain Celery task",
            lat["direct"].median / lat["plain"].median,
            ratio_summary(per_round["direct"], per_round["plain"]),
            "ratio of medians, one in flight",
        ),
        _ms("i.plain_ms", "    plain Celery delay().get()", lat["plain"],
            f"{rounds} rounds x {calls} per side, order rotating"),
        _ms("i.direct_ms", "    zero-hop Client.submit('ping').get()", lat["direct"],
            "rollout 100 %: every request on the v3 lane"),
        Figure(
            "i.lane_p50_ms", "    of which inside the v3 lane task (node's p50)",
            lane_p50_ms if lane_p50_ms is not None else float("nan"), " ms", "",
            note="LaneMetrics: run_lane start → end, last 1000",
        ),
        _ratio(
            "i.router_vs_direct", "(i) ping through the router / zero-hop",
            lat["router"].median / lat["direct"].median,
            ratio_summary(per_round["router"], per_round["direct"]),
            f"router / plain {lat['router'].median / lat['plain'].median:.2f}x "
            f"(per round {router_plain.spread(_MS)})",
        ),
        _ms("i.router_ms", "    Client(routing='router') submit('ping').get()", lat["router"],
            "snakepool.route → publishes v3 under the caller's id"),
    ]  # fmt: skip


def _shadow(shadow: dict[str, Any]) -> list[Figure]:
    on, off = summarize(shadow["samples"]["on"]), summarize(shadow["samples"]["off"])
    per_round = ratio_summary(shadow["round_medians"]["on"], shadow["round_medians"]["off"])
    return [
        _ratio("i.shadow_ratio", "(i) zero-hop primary latency, shadow on / off",
               on.median / off.median, per_round,
               f"rate 1.0: every ping also ran on v2compat ({shadow['compared']} pairs "
               f"compared; copies still waiting as an on round ended: "
               f"{'/'.join(str(n) for n in shadow.get('waiting_at_round_end', []))} of "
               f"{shadow['per_round_sent']} sent)"),
        _ms("i.shadow_off_ms", "    shadow off", off, f"{len(off.samples)} requests"),
        _ms("i.shadow_on_ms", "    shadow on (rate 1.0)", on, f"{len(on.samples)} requests"),
    ]  # fmt: skip


def _load(
    load: dict[str, Any], throughput_rounds: int, seconds: float, in_flight: int
) -> list[Figure]:
    rates = {side: summarize(load["rates"][side]) for side in SIDES}
    loaded = {side: summarize(load["latencies"][side]) for side in SIDES}
    cpu = load["cpu_per_request_s"]
    worker = {side: summarize(cpu[side]["worker"]) for side in SIDES}
    counts = {side: Counter(load["commands"][side]) for side in SIDES}
    per_request = {
        side: commands_per_request(counts[side], load["requests"][side]) for side in SIDES
    }
    figures = [
        _ratio("i.throughput_ratio", f"(i) throughput, {in_flight} in flight: zero-hop / plain",
               rates["direct"].median / rates["plain"].median,
               ratio_summary(load["rates"]["direct"], load["rates"]["plain"]),
               f"{throughput_rounds} rounds x {seconds:g} s per side"),
        _ratio("i.router_throughput_ratio",
               f"(i) throughput, {in_flight} in flight: router / plain",
               rates["router"].median / rates["plain"].median,
               ratio_summary(load["rates"]["router"], load["rates"]["plain"]),
               "one extra hop on the same two CPUs: at most ~0.5x"),
    ]  # fmt: skip
    for side in SIDES:
        used = {name: summarize(values).median for name, values in cpu[side].items()}
        figures.append(Figure(
            f"i.{side}_rps", f"    {_LABELS[side]}", rates[side].median, " req/s",
            rates[side].spread("{:.0f}"),
            note=f"latency {loaded[side].median * 1000:.1f} ms; CPU/request: client "
            f"{used['client'] * 1000:.2f}, worker {used['worker'] * 1000:.2f}, "
            f"redis {used['redis'] * 1000:.2f} ms",
        ))  # fmt: skip
    figures += [
        _ratio("i.cpu_ratio", "(i) worker CPU per request: zero-hop node / plain worker",
               worker["direct"].median / worker["plain"].median,
               ratio_summary(cpu["direct"]["worker"], cpu["plain"]["worker"]),
               f"node (+ its interpreters) {worker['direct'].median * 1000:.2f} ms, plain "
               f"{worker['plain'].median * 1000:.2f} ms; router's node "
               f"{worker['router'].median * 1000:.2f} ms"),
        _ratio("i.redis_direct_ratio", "(i) Redis commands per request: zero-hop / plain",
               per_request["direct"] / per_request["plain"],
               _per_round_commands(load, "direct"), "INFO commandstats over the windows"),
        _ratio("i.redis_router_ratio", "(i) Redis commands per request: router / plain",
               per_request["router"] / per_request["plain"],
               _per_round_commands(load, "router"), "same windows"),
    ]  # fmt: skip
    for side in SIDES:
        figures.append(Figure(
            f"i.{side}_redis_commands", f"    {_LABELS[side]}, commands per request",
            per_request[side], "", "",
            note=top_commands(counts[side], load["requests"][side]),
        ))  # fmt: skip
    return figures


def _per_round_commands(load: dict[str, Any], side: str) -> Summary:
    rounds = load.get("commands_per_round", {})
    if side in rounds and "plain" in rounds:
        return ratio_summary(rounds[side], rounds["plain"])
    total = {
        s: commands_per_request(Counter(load["commands"][s]), load["requests"][s]) for s in SIDES
    }
    return summarize([total[side] / total["plain"]])


def report(
    latency: dict[str, Any],
    shadow: dict[str, Any],
    load: dict[str, Any],
    lane_p50_ms: float | None,
    *,
    rounds: int,
    calls: int,
    throughput_rounds: int,
    seconds: float,
    in_flight: int,
) -> dict[str, Any]:
    """(i)'s figures and data (every sample) from what the rounds measured."""
    figures = _latency(latency, lane_p50_ms, rounds, calls)
    figures += _shadow(shadow)
    figures += _load(load, throughput_rounds, seconds, in_flight)
    return {
        "figures": figures,
        "data": {
            "rounds": rounds,
            "calls_per_round": calls,
            "latency_s": {side: summarize(latency["samples"][side]).as_dict() for side in SIDES},
            "round_median_s": latency["round_medians"],
            "v3_lane_p50_ms": lane_p50_ms,
            "shadow": {
                "round_median_s": shadow["round_medians"],
                "compared": shadow["compared"],
                "waiting_at_round_end": shadow["waiting_at_round_end"],
                "latency_s": {m: summarize(s).as_dict() for m, s in shadow["samples"].items()},
            },
            "throughput": {
                "rounds": throughput_rounds,
                "seconds": seconds,
                "in_flight": in_flight,
                "rps": {side: summarize(load["rates"][side]).as_dict() for side in SIDES},
                "latency_under_load_s": {
                    side: summarize(load["latencies"][side]).as_dict() for side in SIDES
                },
                "requests": load["requests"],
                "cpu_per_request_s": load["cpu_per_request_s"],
                "redis_commands": load["commands"],
                "redis_commands_per_round": load.get("commands_per_round", {}),
            },
        },
    }
