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
    # One setup per interpreter: the template's throwaway rehearsal ran none.
    assert sorted(int(pid) for pid in log.read_text().split()) == sorted(pool.interpreter_pids())


@pytest.mark.timeout(60)
def test_spawned_interpreters_are_not_rehearsed(
    make_pool: PoolFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REHEARSED_ADAPTER_SETUP_LOG", str(tmp_path / "setup.log"))
    pool = make_pool(size=1, adapter="tests.adapters.rehearsed.Rehearsed", start_method="spawn")
    assert pool.execute("packed") == {"serve": False, "prepare_child": False}
