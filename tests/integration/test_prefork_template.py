"""The template fills its heap before forking: an optimisation that never costs a start."""

from __future__ import annotations

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
