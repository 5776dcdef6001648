"""The pure parts of orphan killing: reading /proc stat lines, run markers, and what
the chaos adapter's ``spawn_child`` refuses before it starts anything."""

from __future__ import annotations

import string
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakepool.errors import InvalidArguments
from snakepool.pool.interpreter.reaper import parse_stat_ppid
from snakepool.pool.orphans import new_marker, run_of

# The chaos adapter's own constants, without importing it (it refuses to load unless enabled).
SPAWN_MODES = ("child", "session", "daemon")
SPAWN_THEN = ("return", "hang", "crash")
# The kernel keeps 15 bytes of the command name; a program may choose any of them.
comm_names = st.binary(min_size=0, max_size=15).filter(lambda b: b"\0" not in b)
pids = st.integers(min_value=1, max_value=4_194_304)
run_ids = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=32)


@settings(max_examples=50, deadline=None)
@given(pid=pids, comm=comm_names, state=st.sampled_from(b"RSDZTI"), ppid=pids)
def test_parse_stat_ppid_reads_past_any_command_name(
    pid: int, comm: bytes, state: int, ppid: int
) -> None:
    # e.g. a program named "x) S 1 (" must not make us read its parent as 1.
    line = b"%d (%s) %c %d 42 42 0 -1 4194560 1 2 3\n" % (pid, comm, state, ppid)
    assert parse_stat_ppid(line) == ppid


@pytest.mark.parametrize("line", [b"", b"1234", b"1 (sleep)", b"1 (sleep) S", b"1 (a) S x"])
def test_parse_stat_ppid_rejects_what_is_not_a_stat_line(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_stat_ppid(line)


@settings(max_examples=50, deadline=None)
@given(run=run_ids, other=run_ids)
def test_a_marker_belongs_to_exactly_its_run(run: str, other: str) -> None:
    marker = new_marker(run)
    assert run_of(marker) == run
    # Never a prefix match: run "ab" must not claim the processes of run "abc".
    assert (run_of(marker) == other) == (run == other)
    assert new_marker(run) != marker  # one per template, even within a run


@pytest.fixture
def chaos(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The chaos adapter, imported here and forgotten after (another test checks that
    it refuses to import without the setting)."""
    monkeypatch.setenv("SNAKEPOOL_ENABLE_CHAOS", "1")
    from snakepool.pool.interpreter import chaos

    yield chaos
    sys.modules.pop(chaos.__name__, None)


def _not(*allowed: object) -> Callable[[object], bool]:
    return lambda value: value not in allowed


bad_spawn_args = st.one_of(
    st.fixed_dictionaries({"mode": st.text(max_size=10).filter(_not(*SPAWN_MODES))}),
    st.fixed_dictionaries(
        {"then": st.one_of(st.integers(), st.text(max_size=10)).filter(_not(*SPAWN_THEN))}
    ),
    st.fixed_dictionaries(
        {
            "seconds": st.one_of(
                st.integers(max_value=0),
                st.integers(min_value=3601),
                st.booleans(),
                st.floats(),
                st.text(max_size=5),
            )
        }
    ),
    st.fixed_dictionaries({"pid_file": st.one_of(st.integers(), st.lists(st.text(max_size=3)))}),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bad=bad_spawn_args)
def test_spawn_child_refuses_bad_arguments_before_starting_anything(
    chaos: Any, bad: dict[str, Any]
) -> None:
    started = len(chaos._children)
    with pytest.raises(InvalidArguments):
        chaos.spawn_child(bad)
    assert len(chaos._children) == started
