"""The import root for interpreters under another Python (review finding 12): a parent
SIGKILLed never runs its exit hook, so the next process sweeps what it left behind —
the directories of dead owners only, never a live one, never through a symlink."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

import snakepool.errors
import snakepool.pool.interpreter
from snakepool.pool import interpreter_path
from snakepool.pool.interpreter_path import ROOT_PREFIX, interpreter_import_root, sweep_stale_roots
from tests.integration.cluster import ROOT

pytestmark = [pytest.mark.integration]

_MAKE_ROOT = (
    "import sys, time\n"
    "from snakepool.pool.interpreter_path import interpreter_import_root\n"
    "print(interpreter_import_root(), flush=True)\n"
    "time.sleep(60)\n"
)


def _root_of_killed_parent(base: Path) -> Path:
    """The import root of a process that made one and was then SIGKILLed."""
    child = subprocess.Popen(
        [sys.executable, "-c", _MAKE_ROOT], stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "TMPDIR": str(base), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.stdout is not None
    root = Path(child.stdout.readline().strip())
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    return root


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temporary directory for mkdtemp, and no import root made yet here."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(interpreter_path, "_root", None)
    return tmp_path


@pytest.mark.timeout(60)
def test_the_root_of_a_sigkilled_parent_is_swept_by_the_next_one(base: Path) -> None:
    stale = _root_of_killed_parent(base)
    assert stale.parent == base and stale.name.startswith(ROOT_PREFIX)
    assert (stale / "snakepool" / "errors.py").is_symlink()  # left behind: no exit hook ran
    mine = Path(interpreter_import_root())
    assert not stale.exists()
    assert sorted(base.iterdir()) == [mine]
    # The links were removed, not followed: the package they pointed at is intact.
    assert Path(snakepool.errors.__file__).is_file()
    assert Path(snakepool.pool.interpreter.__file__).is_file()


def test_only_dead_owners_lose_their_root(base: Path) -> None:
    me = psutil.Process()
    roots = {}
    for name, owner in {
        "alive": f"{me.pid} {me.create_time()!r}",  # this process: kept
        "reused": f"{me.pid} {me.create_time() - 100!r}",  # same pid, another process: gone
        "unreadable": "not an owner",  # cannot tell: kept
        "unwritten": None,  # being created by someone: kept
    }.items():
        root = base / f"{ROOT_PREFIX}{name}"
        root.mkdir()
        if owner is not None:
            (root / "owner").write_text(owner)
        roots[name] = root
    other = base / "someone-else"  # not one of ours by name: never looked at
    other.mkdir()
    (other / "owner").write_text("1 0.0")
    assert sweep_stale_roots(str(base)) == [roots["reused"]]
    assert sorted(p.name for p in base.iterdir()) == sorted(
        [f"{ROOT_PREFIX}alive", f"{ROOT_PREFIX}unreadable", f"{ROOT_PREFIX}unwritten", other.name]
    )


def test_a_live_processs_root_survives_another_process_starting(base: Path) -> None:
    mine = Path(interpreter_import_root())
    done = subprocess.run(
        [sys.executable, "-c", "from snakepool.pool.interpreter_path import interpreter_import_root"
         " as r; print(r())"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
        env={**os.environ, "TMPDIR": str(base), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    theirs = Path(done.stdout.strip())
    assert mine.is_dir() and (mine / "snakepool" / "errors.py").is_symlink()
    assert not theirs.exists()  # removed at its normal exit, as before
