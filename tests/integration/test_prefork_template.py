"""The template fills its heap before forking: an optimisation that never costs a start."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import PoolFactory

pytestmark = [pytest.mark.integration]


@pytest.mark.timeout(60)
def test_a_template_whose_heap_filling_fails_still_starts_and_serves(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(size=2, adapter="tests.adapters.broken_prefork")
    assert pool.execute("hello") == {"hello": "world"}
    assert len(set(pool.interpreter_pids())) == 2


@pytest.mark.timeout(60)
def test_interpreters_start_on_packed_code_and_no_rehearsal_runs_the_setup(
    make_pool: PoolFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "setup.log"
    monkeypatch.setenv("REHEARSED_ADAPTER_SETUP_LOG", str(log))
    pool = make_pool(size=3, adapter="tests.adapters.rehearsed.Rehearsed")
    assert pool.execute("packed") == {"serve": True, "prepare_child": True}
    assert pool.execute("ping")["own"] is True  # the adapter's own ping serves requests
    # One setup per interpreter; the template's throwaway rehearsal ran neither the
    # setup nor the adapter's ping (it pinged with the built-in one).
    lines = [line.split() for line in log.read_text().splitlines()]
    pids = set(pool.interpreter_pids())
    assert sorted(int(pid) for what, pid in lines if what == "setup") == sorted(pids)
    assert {int(pid) for _, pid in lines} <= pids


@pytest.mark.timeout(60)
def test_spawned_interpreters_are_not_rehearsed(
    make_pool: PoolFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REHEARSED_ADAPTER_SETUP_LOG", str(tmp_path / "setup.log"))
    pool = make_pool(size=1, adapter="tests.adapters.rehearsed.Rehearsed", start_method="spawn")
    assert pool.execute("packed") == {"serve": False, "prepare_child": False}
