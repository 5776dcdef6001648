"""A node whose start fails exits non-zero, saying why (review finding: it exited 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(90)
def test_a_node_whose_adapter_cannot_load_exits_non_zero(redis_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SNAKEPOOL_REDIS_URL": redis_url,
        "SNAKEPOOL_REGISTRY_DIR": str(tmp_path),
        "SNAKEPOOL_ADAPTER": "tests.adapters.broken",
        "SNAKEPOOL_POOL_SIZE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "snakepool.tasks.cli", "worker", "--lane", "v3",
         "--name", f"broken-{os.getpid()}"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=80, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "adapter 'tests.adapters.broken' failed to load" in output
    # One line, no traceback (Celery logged 20 lines: "Unrecoverable error: …" + ours).
    failed = [line for line in output.splitlines() if "failed to load" in line]
    assert len(failed) == 1, output
    assert "CRITICAL" in failed[0] and "this node cannot start: ConfigError: adapter" in failed[0]
    assert "Traceback" not in output and "Unrecoverable error" not in output
