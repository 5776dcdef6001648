"""Filling the template's free blocks before it forks (:mod:`~snakepool.pool.interpreter.prefork`).

Each case runs in a fresh interpreter: what is filled stays allocated for the process's
life, and the figures need a heap nobody else has touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from snakepool.pool.interpreter import prefork

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc, /proc")

#: A heap full of holes: 40,000 pymalloc blocks and 4,000 malloc chunks, every other freed.
_FRAGMENT = """
small = [bytes(40) for _ in range(40_000)]
large = [bytes(600 + i % 900) for i in range(4_000)]
del small[::2], large[::2]
"""


def _python(code: str, **env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


def test_the_stats_name_every_size_class() -> None:
    available = prefork.pymalloc_available()
    assert sorted(available) == list(range(16, 513, 16))
    assert all(free >= 0 for free in available.values())


def test_after_filling_no_size_class_has_more_than_a_fresh_pool_free() -> None:
    report = _python(
        _FRAGMENT
        + """
import json
from snakepool.pool.interpreter import prefork
libc = prefork._glibc()
def in_bins():
    info = libc.mallinfo2()
    return info.fordblks - info.keepcost
before, bins_before = prefork.pymalloc_available(), in_bins()
filled = prefork.fill_free_blocks()
after, bins_after = prefork.pymalloc_available(), in_bins()
print(json.dumps({"before": before, "after": after, "filled": filled.pymalloc_blocks,
    "chunks": filled.malloc_chunks, "bins_before": bins_before, "bins_after": bins_after}))
"""
    )
    before = {int(k): v for k, v in report["before"].items()}  # type: ignore[attr-defined]
    after = {int(k): v for k, v in report["after"].items()}  # type: ignore[attr-defined]
    assert before[80] >= 10_000  # the holes the fragmenting left, in bytes(40)'s class (73 B)
    for size, free in after.items():
        assert free < prefork.POOL_BYTES // size, (size, free)
    assert report["filled"] >= 10_000
    assert report["bins_before"] > 1_000_000 > 64 * 1024 > report["bins_after"]  # type: ignore[operator]
    assert report["chunks"] >= 1_000  # type: ignore[operator]


def test_a_forked_child_allocates_on_fresh_pages_not_on_the_parents() -> None:
    child_uss = """
import gc, json, os
gc.freeze()
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    new = [bytes(40) for _ in range(20_000)]  # what a request allocates and keeps
    dirty = 0
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Private_Dirty:"):
                dirty = int(line.split()[1])
    os.write(write_end, str(dirty).encode())
    os._exit(0)
os.close(write_end)
dirty = int(os.read(read_end, 64))
os.waitpid(pid, 0)
print(json.dumps({"private_kb": dirty}))
"""
    fill = "from snakepool.pool.interpreter import prefork\nprefork.fill_free_blocks()\n"
    holes = _python(_FRAGMENT + child_uss)["private_kb"]
    filled = _python(_FRAGMENT + fill + child_uss)["private_kb"]
    # 20,000 blocks of 80 bytes: ~1.6 MB packed; in the parent's holes, ~3 MB of its pages.
    assert filled < 0.75 * holes, (filled, holes)  # type: ignore[operator]


def test_without_pymalloc_it_fills_nothing_and_says_so() -> None:
    report = _python(
        """
import json
from snakepool.pool.interpreter import prefork
filled = prefork.fill_free_blocks()
print(json.dumps({"stats": prefork.pymalloc_available(), "blocks": filled.pymalloc_blocks}))
""",
        PYTHONMALLOC="malloc",
    )
    assert report == {"stats": {}, "blocks": 0}
