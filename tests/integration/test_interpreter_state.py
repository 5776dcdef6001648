"""What a shared interpreter keeps, and for whom: programs per session, nothing for a
transient request (shadow copy, V3), bounded caches, admin commands only when enabled."""

from __future__ import annotations

import pytest

from snakepool.errors import InvalidArguments, ProgramNotFound, UnknownCommand
from snakepool.pool import Pool
from snakepool.pool.interpreter.dspy_programs import MAX_COMPILED
from tests.integration.conftest import PoolFactory

pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

ADAPTER = "snakepool.pool.interpreter.dspy_programs"
QA = {"id": "qa", "signature": "question -> answer"}
SUMMARY = {"id": "qa", "signature": "text -> summary"}


@pytest.mark.parametrize("adapter", [ADAPTER, "snakepool.pool.interpreter.builtin"])
def test_sessions_sharing_an_interpreter_never_share_programs(
    make_pool: PoolFactory, adapter: str
) -> None:
    """Issue 8.1: two sessions, one interpreter, the same program id."""
    pool = make_pool(size=1, adapter=adapter)
    a = {"affinity": "A", "session": "A"}  # what the V2-compat lane sends
    b = {"affinity": "B", "session": "B"}
    pool.execute("create_program", QA, **a)
    pool.execute("create_program", SUMMARY, **b)
    run_a = {"program_id": "qa", "inputs": {"question": "2+2?"}}
    result = pool.execute("execute_program", run_a, **a)
    assert set(result) == {"answer"} and result["answer"]
    assert set(pool.execute("execute_program", {"program_id": "qa", "inputs": {"text": "t"}},
                            **b)) == {"summary"}  # fmt: skip
    listed_a = pool.execute("list_programs", **a)["programs"]
    assert [(p["program_id"], p["signature"]) for p in listed_a] == [("qa", "question -> answer")]
    assert pool.execute("get_program_info", {"program_id": "qa"}, **b)["output_fields"] == [
        "summary"
    ]
    assert pool.execute("list_programs")["programs"] == []  # no session: none of theirs
    with pytest.raises(ProgramNotFound):
        pool.execute("execute_program", run_a)

    assert pool.execute("delete_program", {"program_id": "qa"}, **b) == {"deleted": "qa"}
    assert set(pool.execute("execute_program", run_a, **a)) == {"answer"}  # A's survives
    with pytest.raises(ProgramNotFound, match="no program 'qa' of session 'B'"):
        pool.execute("execute_program", {"program_id": "qa", "inputs": {"text": "t"}}, **b)
    assert pool.execute("dspy_status")["programs"] == 1


def test_a_transient_request_changes_nothing(make_pool: PoolFactory) -> None:
    """A shadow copy (or the V3 lane) may read a session's programs but never change them."""
    pool = make_pool(size=1, adapter=ADAPTER, allow_admin_commands=True)
    pool.execute("create_program", QA, session="A")
    shadow = {"session": "A", "transient": True}
    replaced = pool.execute("create_program", SUMMARY, **shadow)
    assert (replaced["program_id"], replaced["output_fields"]) == ("qa", ["summary"])
    fresh = pool.execute("create_program", {**QA, "id": "other"}, **shadow)
    assert fresh["program_id"] == "other"
    assert pool.execute("delete_program", {"program_id": "qa"}, **shadow) == {"deleted": "qa"}
    with pytest.raises(InvalidArguments, match="transient"):
        pool.execute("configure_lm", {"lm": "openai/gpt-4o-mini"}, **shadow)
    # Everything as before: A's one program, unchanged, runnable by a transient read too.
    listed = pool.execute("list_programs", session="A")["programs"]
    assert [(p["program_id"], p["signature"]) for p in listed] == [("qa", "question -> answer")]
    run = {"program_id": "qa", "inputs": {"question": "x"}}
    assert set(pool.execute("execute_program", run, **shadow)) == {"answer"}
    assert pool.execute("dspy_status")["lm"] == "dummy"
    with pytest.raises(ProgramNotFound):
        pool.execute("delete_program", {"program_id": "missing"}, **shadow)


@pytest.mark.timeout(120)
def test_v3_creates_beyond_the_cache_all_succeed_and_hold_nothing(make_pool: PoolFactory) -> None:
    """Stateless (transient) creates and infos never fill an interpreter, never refuse."""
    pool = make_pool(size=1, adapter=ADAPTER)
    for n in range(MAX_COMPILED + 40):
        definition = {"signature": f"question{n} -> answer", "instructions": "x" * (n % 7)}
        created = pool.execute("create_program", {**definition, "id": f"p{n}"}, transient=True)
        assert created["input_fields"] == [f"question{n}"]
        if n % 50 == 0:
            info = pool.execute(
                "get_program_info", {"program_id": f"p{n}", "program": definition}, transient=True
            )
            assert (info["program_id"], info["hash"]) == (f"p{n}", created["hash"])
    status = pool.execute("dspy_status")
    assert status["compiled"] <= MAX_COMPILED and status["compiled"] == MAX_COMPILED
    assert status["compiled_bytes"] <= status["compiled_limits"]["bytes"]
    assert status["programs"] == 0  # nothing held


MIB = 1 << 20


def _rss(pool: Pool) -> int:
    return int(pool.execute("get_stats")["rss_bytes"])


@pytest.mark.timeout(180)
def test_v3_creates_of_big_programs_keep_interpreter_memory_bounded(make_pool: PoolFactory) -> None:
    """The compiled cache is bounded by what programs take in memory, not by their JSON,
    and nothing else keeps a program alive once the cache let it go.

    Each definition's demo is 300 000 empty objects: 0.9 MB of JSON, ~20 MiB of Python
    objects. Before, the cache counted twice the JSON and DSPy's global trace kept every
    program ever run: 8 creates grew the interpreter by ~190 MiB.
    """
    pool = make_pool(size=1, adapter=ADAPTER)
    before = _rss(pool)
    for n in range(8):
        demo = {"question": [{} for _ in range(300_000)], "answer": f"a{n}"}
        definition = {"signature": "question -> answer", "demos": [demo]}
        created = pool.execute("create_program", definition, transient=True, timeout=60)
        assert created["input_fields"] == ["question"]  # every create succeeds
    status = pool.execute("dspy_status")
    assert status["compiled_bytes"] <= status["compiled_limits"]["bytes"]
    assert status["compiled"] <= 1  # ~20 MiB each: at most one fits in 32 MiB
    grown = (_rss(pool) - before) / MIB
    assert grown < 80, f"the interpreter grew by {grown:.0f} MiB"


@pytest.mark.timeout(120)
def test_running_a_program_keeps_nothing_of_the_run(make_pool: PoolFactory) -> None:
    """DSPy's trace (every call's predictor, inputs and prediction, 10 000 kept) is off:
    300 runs with 200 KB of input each grew an interpreter by ~60 MiB before."""
    pool = make_pool(size=1, adapter=ADAPTER)
    pool.execute("create_program", QA)
    run = {"program_id": "qa", "inputs": {"question": "warm"}}
    pool.execute("execute_program", run)
    before = _rss(pool)
    for n in range(300):
        run = {"program_id": "qa", "inputs": {"question": f"{n}:" + "x" * 200_000}}
        assert set(pool.execute("execute_program", run)) == {"answer"}
    grown = (_rss(pool) - before) / MIB
    assert grown < 20, f"the interpreter grew by {grown:.0f} MiB"


def test_admin_commands_are_off_by_default(
    make_pool: PoolFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 8.11: no request may repoint the interpreter's LM unless the setting allows."""
    monkeypatch.setenv("SNAKEPOOL_ALLOW_ADMIN_COMMANDS", "1")  # the parent's env does not count
    for adapter in (ADAPTER, "snakepool.pool.interpreter.builtin"):
        pool = make_pool(size=1, adapter=adapter)
        with pytest.raises(UnknownCommand, match="ALLOW_ADMIN_COMMANDS") as caught:
            pool.execute("configure_lm", {"lm": "openai/gpt-4o-mini"})
        assert caught.value.data["setting"] == "ALLOW_ADMIN_COMMANDS"
        assert "configure_lm" not in pool.commands()
        assert pool.execute("dspy_status")["lm"] == "dummy"


def test_admin_commands_work_when_enabled(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, adapter=ADAPTER, allow_admin_commands=True)
    assert "configure_lm" in pool.commands()
    answers = {"Other": {"answer": "42"}}
    assert pool.execute("configure_lm", {"lm": "dummy", "answers": answers}) == {
        "lm": "dummy", "answers": 1,
    }  # fmt: skip
    pool.execute("create_program", QA)
    run = {"program_id": "qa", "inputs": {"question": "Other?"}}
    assert pool.execute("execute_program", run) == {"answer": "42"}


def test_the_setting_reaches_the_interpreters_environment(
    registry_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snakepool.config.settings import load_settings
    from snakepool.pool import Pool

    monkeypatch.setenv("SNAKEPOOL_ALLOW_ADMIN_COMMANDS", "true")
    enabled = Pool.from_settings(load_settings(), registry_dir=registry_dir)
    assert enabled.settings.allow_admin_commands
    assert enabled.child_env()["SNAKEPOOL_ALLOW_ADMIN_COMMANDS"] == "1"
    disabled = Pool(registry_dir=registry_dir)  # keywords: the environment is not read
    assert disabled.child_env()["SNAKEPOOL_ALLOW_ADMIN_COMMANDS"] == "0"
    enabled.stop()
    disabled.stop()


def test_a_held_program_with_another_hash_than_the_current_is_not_run(
    make_pool: PoolFactory,
) -> None:
    """Review 8: the V2-compat lane sends the store's hash; a stale copy is ProgramNotFound
    (the lane then rebuilds it from the store), never run."""
    pool = make_pool(size=1, adapter=ADAPTER)
    held = pool.execute("create_program", QA, session="A")
    current = pool.execute("create_program", SUMMARY, session="B")["hash"]  # B's, elsewhere
    run = {"program_id": "qa", "inputs": {"question": "x"}}
    assert set(pool.execute("execute_program", {**run, "program_hash": held["hash"]},
                            session="A")) == {"answer"}  # fmt: skip
    for command, args in [
        ("execute_program", run),
        ("get_program_info", {"program_id": "qa"}),
        ("delete_program", {"program_id": "qa"}),
    ]:
        with pytest.raises(ProgramNotFound, match="not the current one"):
            pool.execute(command, {**args, "program_hash": current}, session="A")
    with pytest.raises(InvalidArguments, match="'program_hash' must be a string"):
        pool.execute("execute_program", {**run, "program_hash": 7}, session="A")
    assert pool.execute("dspy_status")["programs"] == 2  # nothing deleted by the refusals


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ({"session": "abc\n"}, r"invalid session id 'abc\\n'"),
        ({"session": ""}, "invalid session id ''"),
        ({"session": "a" * 129}, "invalid session id"),
        ({"session": "\uff41bc"}, "invalid session id"),  # fullwidth a
        ({"affinity": ["A"]}, "affinity must be a string or None, not list"),
    ],
    ids=["newline", "empty", "129", "fullwidth", "affinity-list"],
)
def test_a_scope_that_is_not_an_id_is_invalid_arguments(
    make_pool: PoolFactory, scope: dict[str, object], message: str
) -> None:
    """Review 8: ``Pool.execute`` checked neither (a list affinity was a raw TypeError;
    ``"abc\\n"`` and ``"abc"`` were two sessions)."""
    pool = make_pool(size=1)
    with pytest.raises(InvalidArguments, match=message):
        pool.execute("ping", **scope)  # type: ignore[arg-type]
    stats = pool.stats()
    assert stats["idle"] == stats["size"] == 1 and pool.execute("ping")["pong"] is True
