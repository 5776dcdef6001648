"""Operating the migration, the pure parts: exclusions and the V3 allow-list, finalizing
(its blockers, the freeze, undoing it), which lanes a request may need, and the report's
figures — on fakeredis."""

from __future__ import annotations

from dataclasses import replace

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config.flags import FlagStore, RolloutFlags
from snakepool.errors import InvalidArguments
from snakepool.tasks.rollout.finalize import Readiness, blockers, finalize, unfinalize
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.rollout.report import build_report, describe_rollout, rollbacks
from snakepool.tasks.rollout.routing import decide
from snakepool.tasks.rollout.scope import exclude, include, only
from snakepool.tasks.worker.dispatch import choose
from snakepool.tasks.worker.inventory import missing_programs
from snakepool.tasks.worker.reachability import possible_lanes, unserved

SESSION_IDS = st.text(alphabet="abcdefghij0123456789-_.:", min_size=1, max_size=20)
COMMANDS = st.sampled_from(["ping", "calculate", "echo", "execute_program"])
READY = Readiness()


def store() -> FlagStore:
    return FlagStore(fakeredis.FakeRedis(), prefix="t:")


# ------------------------------------------------------------------ decide


@settings(max_examples=40, deadline=None)
@given(
    percent=st.integers(0, 100),
    session=st.one_of(st.none(), SESSION_IDS),
    command=COMMANDS,
    override=st.sampled_from([None, "v3", "v2compat"]),
)
def test_an_excluded_command_stays_on_v2compat_whatever_the_percentage(
    percent: int, session: str | None, command: str, override: str | None
) -> None:
    overrides = {session: override} if session and override else {}
    flags = RolloutFlags(percent=percent, excluded_commands=(command,), overrides=overrides)
    assert decide(command, None, session, flags, request_id="r") == "v2compat"
    # Other commands keep following the percentage (and the override).
    other = RolloutFlags(percent=percent, overrides=overrides)
    assert decide("other", None, session, flags, request_id="r") == decide(
        "other", None, session, other, request_id="r"
    )


@settings(max_examples=40, deadline=None)
@given(
    percent=st.integers(0, 100),
    session=st.one_of(st.none(), SESSION_IDS),
    command=COMMANDS,
    forced=st.sampled_from([None, "v3", "v2compat"]),
    allowed=st.one_of(st.none(), st.lists(COMMANDS, max_size=2).map(tuple)),
)
def test_finalized_routing_is_v3_for_everything(
    percent: int,
    session: str | None,
    command: str,
    forced: str | None,
    allowed: tuple[str, ...] | None,
) -> None:
    flags = RolloutFlags(
        percent=percent, forced_lane=forced, excluded_commands=(command,),
        v3_commands=allowed, overrides={session: "v2compat"} if session else {},
        finalized=True,
    )  # fmt: skip
    assert decide(command, None, session, flags, request_id="r") == "v3"


class _ShedEverything:
    """A circuit breaker that always sends a lane's traffic to the other lane."""

    def route(self, lane: str) -> str:
        return "v2compat" if lane == "v3" else "v3"


@pytest.mark.parametrize(
    ("flags", "lane"),
    [
        (RolloutFlags(percent=100, excluded_commands=("calculate",)), "v2compat"),
        (RolloutFlags(percent=0, finalized=True), "v3"),
        (RolloutFlags(percent=0, forced_lane="v2compat"), "v2compat"),
        (RolloutFlags(percent=100), "v2compat"),  # not pinned: the breaker sheds it
    ],
)
def test_the_breaker_never_moves_a_pinned_lane(flags: RolloutFlags, lane: str) -> None:
    breaker = _ShedEverything()
    assert choose("calculate", None, None, flags, "r", breaker=breaker) == lane  # type: ignore[arg-type]


# ------------------------------------------------------------ exclude / only


def test_exclude_include_and_only_are_audited_and_listed() -> None:
    flags = store()
    changed = exclude(flags, "calculate", who="ops", why="wrong sums on V3")
    assert changed is not None and changed.excluded_commands == ("calculate",)
    assert exclude(flags, "calculate", who="ops", why="again") is None  # no-op, no audit
    only(flags, ["ping", "echo", "ping"], who="ops", why="read-only first")
    state = flags.read().to_dict()
    assert state["excluded_commands"] == ["calculate"]
    assert state["v3_commands"] == ["echo", "ping"]
    assert include(flags, "calculate", who="ops", why="fixed") is not None
    assert include(flags, "calculate", who="ops", why="again") is None
    assert only(flags, None, who="ops", why="everything") is not None
    history = flags.history()
    assert [h["why"] for h in history] == [
        "everything", "fixed", "read-only first", "wrong sums on V3",
    ]  # fmt: skip
    assert history[-1]["old"]["excluded_commands"] == []
    assert history[-1]["new"]["excluded_commands"] == ["calculate"]
    assert flags.read().excluded_commands == () and flags.read().v3_commands is None


@pytest.mark.parametrize("bad", ["", "calc ulate", "calculate\n", "x" * 129, "calcul\u0430te"])
def test_malformed_command_names_are_refused(bad: str) -> None:
    flags = store()
    with pytest.raises(InvalidArguments, match="command name"):
        exclude(flags, bad, who="ops", why="x")
    with pytest.raises(InvalidArguments, match="command name"):
        only(flags, ["ping", bad], who="ops", why="x")
    assert flags.version() == 0


def test_only_needs_a_command_or_all() -> None:
    with pytest.raises(InvalidArguments, match="at least one"):
        only(store(), [], who="ops", why="x")


# ----------------------------------------------------------------- finalize


def test_blockers_name_each_reason() -> None:
    ready = RolloutFlags(percent=100)
    assert blockers(ready, READY) == []
    assert "at 50 %" in blockers(replace(ready, percent=50), READY)[0]
    assert "paused" in blockers(replace(ready, paused=True), READY)[0]
    assert "forced to v2compat" in blockers(replace(ready, forced_lane="v2compat"), READY)[0]
    assert "already finalized" in blockers(replace(ready, finalized=True), READY)[0]
    assert "2 queued, 1 in flight" in blockers(ready, Readiness(queued=2, in_flight=1))[0]
    unstored = blockers(ready, Readiness(unstored={"s1": ["qa", "qb"]}))[0]
    assert "s1 (qa, qb)" in unstored and "not in the store" in unstored
    assert "v2-a@h" in blockers(ready, Readiness(silent_nodes=["v2-a@h"]))[0]
    everything = blockers(
        RolloutFlags(percent=10, paused=True, forced_lane="v3"), Readiness(queued=1)
    )
    assert len(everything) == 4  # every reason at once, not the first only


def test_finalize_refuses_then_freezes_routing_until_unfinalized() -> None:
    flags = store()
    flags.set_percent(90, who="ops", why="x")
    with pytest.raises(InvalidArguments, match="at 90 %") as refused:
        finalize(flags, READY, who="ops", why="done")
    assert refused.value.data["blockers"] == [
        "the rollout is at 90 %, not 100 %: `rollout set 100` first"
    ]
    assert flags.read().finalized is False and flags.version() == 1
    flags.set_percent(100, who="ops", why="x")
    done = finalize(flags, READY, who="ops", why="the end")
    assert done.finalized and flags.history(1)[0]["why"] == "the end"
    version = flags.version()
    for change in (
        lambda: flags.set_percent(50, who="ops", why="x"),
        lambda: flags.rollback(who="controller", why="x"),
        lambda: flags.step(who="ops", why="x"),
        lambda: flags.set_paused(True, who="ops", why="x"),
        lambda: flags.update(lambda f: replace(f, forced_lane="v2compat"), who="o", why="x"),
        lambda: exclude(flags, "calculate", who="ops", why="x"),
    ):
        with pytest.raises(InvalidArguments, match="unfinalize"):
            change()
    assert flags.version() == version  # nothing written
    back = unfinalize(flags, who="ops", why="V2 needed again")
    assert not back.finalized and back.percent == 100
    with pytest.raises(InvalidArguments, match="not finalized"):
        unfinalize(flags, who="ops", why="twice")
    assert flags.rollback(who="ops", why="now allowed").percent == 0


def test_programs_missing_from_the_store_are_found_per_session() -> None:
    held = {"a": ["qa"], "b": ["qa", "qb"], "c": ["qc"], "d": []}
    # Sessions sharing an interpreter hold their own programs: b lost qb, c lost qc.
    stored = {"a": {"qa"}, "b": {"qa"}, "c": set(), "d": set()}
    assert missing_programs(held, stored) == {"b": ["qb"], "c": ["qc"]}
    assert missing_programs(held, {**stored, "b": {"qa", "qb"}, "c": {"qc"}}) == {}


# ------------------------------------------------------- call: who serves it


@pytest.mark.parametrize(
    ("flags", "session", "lanes"),
    [
        (RolloutFlags(percent=0), None, ["v2compat"]),
        (RolloutFlags(percent=100), None, ["v3"]),
        (RolloutFlags(percent=50), None, ["v2compat", "v3"]),  # the request id decides
        (RolloutFlags(percent=50, forced_lane="v3"), None, ["v3"]),
        (RolloutFlags(percent=50, excluded_commands=("ping",)), None, ["v2compat"]),
        (RolloutFlags(percent=50, finalized=True), None, ["v3"]),
        (RolloutFlags(percent=50), "s-1", [decide("ping", None, "s-1", RolloutFlags(percent=50))]),
    ],
)
def test_possible_lanes(flags: RolloutFlags, session: str | None, lanes: list[str]) -> None:
    assert possible_lanes("ping", None, session, flags) == lanes


def test_unserved_queues() -> None:
    nodes = [{"name": "r@h", "lanes": ["router"]}, {"name": "v@h", "lanes": ["v2compat"]}]
    assert unserved(["router", "v3"], nodes) == ["v3"]
    assert unserved(["router", "v2compat"], nodes) == []
    assert unserved(["router"], []) == ["router"]


# ------------------------------------------------------------------- report


def test_report_figures_match_what_was_recorded() -> None:
    client = fakeredis.FakeRedis()
    metrics = LaneMetrics(client, prefix="t:")
    for _ in range(6):
        metrics.record("v3", 0.010, None)
    metrics.record("v3", 0.020, None, shadow_copy=True)
    metrics.record("v2compat", 0.005, None)
    metrics.record("v2compat", 0.005, InvalidArguments("bad"))
    metrics.record("v2compat", 0.005, RuntimeError("bug"))
    flags = FlagStore(client, prefix="t:")
    flags.set_percent(50, who="ops", why="half")
    flags.rollback(who="controller", why="V3 error rate 9%")
    flags.set_percent(30, who="ops", why="x")
    flags.set_percent(10, who="ops", why="lower")
    flags.update(lambda f: replace(f, forced_lane="v2compat"), who="ops", why="kill")
    nodes = [{"name": "v3@h", "lanes": ["v3"], "version": "1.0", "pool": {},
              "memory": {"interpreters": 2, "rss_bytes": 200, "max_rss_bytes": 120}},
             {"name": "r@h", "lanes": ["router"], "version": "1.0", "pool": None}]  # fmt: skip
    report = build_report(client, prefix="t:", nodes=nodes)
    v3, v2 = report["lanes"]["v3"], report["lanes"]["v2compat"]
    assert (v3["requests"], v3["routed"], v3["shadow_copies"], v3["ok"]) == (7, 6, 1, 7)
    assert v3["success_rate"] == 1.0 and v3["p50_ms"] == 10.0 and v3["p99_ms"] == 20.0
    assert (v2["requests"], v2["errors"], v2["client_errors"], v2["ok"]) == (3, 1, 1, 1)
    assert v2["success_rate"] == pytest.approx(1 / 3)
    assert report["traffic"] == {"routed": 9, "share": {"v3": 6 / 9, "v2compat": 3 / 9}}
    assert [(r["why"], r["from_percent"], r["to_percent"], r["kind"])
            for r in report["rollbacks"]] == [
        ("V3 error rate 9%", 50, 0, "rollback"), ("lower", 30, 10, "rollback"),
        ("kill", 10, 10, "kill switch"),
    ]  # fmt: skip
    assert report["nodes"][0]["rss_bytes"] == 200 and report["nodes"][1]["interpreters"] == 0
    assert report["rollout"]["percent"] == 10
    assert report["rollout"]["summary"] == "10% to V3 (version 5, paused, forced to v2compat)"


def test_rollbacks_of_an_empty_history() -> None:
    assert rollbacks([]) == []


def test_describe_rollout() -> None:
    assert describe_rollout(RolloutFlags().to_dict()) == "0% to V3 (version 0)"
    flags = RolloutFlags(percent=100, version=3, excluded_commands=("a", "b"), v3_commands=("c",))
    assert describe_rollout(flags.to_dict()) == (
        "100% to V3 (version 3, kept on V2-compat: a, b, only on V3: c)"
    )
    assert describe_rollout(replace(flags, finalized=True).to_dict()) == (
        "finalized: everything goes to V3 (version 3)"
    )


def test_finalize_refuses_while_commands_are_excluded_or_only_some_allowed() -> None:
    """Review finding: finalize used to succeed and silently send an excluded command to V3."""
    from dataclasses import replace as with_

    from snakepool.config.flags import RolloutFlags
    from snakepool.tasks.rollout.finalize import blockers

    ready = with_(RolloutFlags(), percent=100)
    assert blockers(ready) == []
    excluded = blockers(with_(ready, excluded_commands=("echo",)))
    assert len(excluded) == 1 and "echo" in excluded[0] and "rollout include" in excluded[0]
    only = blockers(with_(ready, v3_commands=("ping",)))
    assert len(only) == 1 and "rollout only --all" in only[0]
