"""Filling the template's free blocks before it forks (:mod:`~snakepool.pool.interpreter.prefork`).

Each case runs in a fresh interpreter: what is filled stays allocated for the process's
life, and the figures need a heap nobody else has touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from snakepool.pool.interpreter import prefork

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc, /proc")

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
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


def test_one_walk_of_glibc_heap_whatever_its_holes() -> None:
    # mallinfo2 walks every free chunk: once per chunk taken was quadratic (64 s for an
    # adapter that freed 100,000 chunks at import).
    report = _python(
        """
import json
large = [bytes(600) for _ in range(60_000)]
del large[::2]
from snakepool.pool.interpreter import prefork
libc = prefork._glibc()
real, calls = libc.mallinfo2, []
def counted():
    calls.append(1)
    return real()
libc.mallinfo2 = counted
prefork._glibc = lambda: libc
filled = prefork.fill_free_blocks()
print(json.dumps({"calls": len(calls), "chunks": filled.malloc_chunks}))
"""
    )
    assert report["calls"] == 1
    assert report["chunks"] >= 20_000  # type: ignore[operator]


@pytest.mark.skipif(not os.path.exists(JEMALLOC), reason="no jemalloc to preload")
def test_another_malloc_is_left_alone() -> None:
    report = _python(
        """
import json
from snakepool.pool.interpreter import prefork
def vm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1])
before = vm_kb()
filled = prefork.fill_free_blocks()
print(json.dumps({"glibc": prefork._glibc() is not None, "chunks": filled.malloc_chunks,
    "grew_kb": vm_kb() - before}))
""",
        LD_PRELOAD=JEMALLOC,
    )
    # It took 50,000 chunks of 64 KiB (3.2 GB of address space) before.
    assert report == {"glibc": False, "chunks": 0, "grew_kb": report["grew_kb"]}
    assert report["grew_kb"] < 64 * 1024  # type: ignore[operator]


def test_no_writable_temporary_directory_is_needed() -> None:
    report = _python(
        """
import json, tempfile
def nowhere(*args, **kwargs):  # a read-only root file system, no writable /tmp
    raise FileNotFoundError("No usable temporary directory found")
tempfile.TemporaryFile = nowhere
from snakepool.pool.interpreter import prefork
print(json.dumps({"classes": len(prefork.pymalloc_available())}))
"""
    )
    assert report == {"classes": 32}


def test_while_another_thread_runs_it_reads_no_stats() -> None:
    # The statistics come through fd 2, which that thread may be writing to.
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert prefork.pymalloc_available() == {}
    finally:
        stop.set()
        thread.join()
    assert len(prefork.pymalloc_available()) == 32


@pytest.mark.parametrize("setting", [{"PYTHONMALLOC": "debug"}, {"PYTHONDEVMODE": "1"}])
def test_under_pymallocs_debug_hooks_it_fills_no_blocks(setting: dict[str, str]) -> None:
    # A debug block is bigger than what is asked: filling would hit the wrong classes.
    report = _python(
        """
import json
from snakepool.pool.interpreter import prefork
print(json.dumps({"blocks": prefork.fill_free_blocks().pymalloc_blocks}))
""",
        **setting,
    )
    assert report == {"blocks": 0}


@pytest.mark.parametrize(
    ("nbytes", "size"), [(1, 16), (16, 16), (17, 32), (500, 512), (512, 512), (513, 0), (0, 0)]
)
def test_the_size_class_an_allocation_takes(nbytes: int, size: int) -> None:
    assert prefork.size_class(nbytes) == size


def test_filling_some_size_classes_leaves_the_others() -> None:
    report = _python(
        _FRAGMENT
        + """
import json
from snakepool.pool.interpreter import prefork
before = prefork.pymalloc_available()
taken = prefork.fill_size_classes([80, 0])
after = prefork.pymalloc_available()
print(json.dumps({"taken": taken, "before": before[80], "after": after[80],
                  "others": {s: after[s] - before[s] for s in after if s != 80}}))
"""
    )
    # bytes(40) takes an 80-byte block (33 bytes of header): 20,000 of them were freed
    # (pools left empty are not counted as free blocks).
    before, taken = int(report["before"]), int(report["taken"])  # type: ignore[call-overload]
    assert before >= 10_000 and taken == before
    assert int(report["after"]) <= prefork.POOL_BYTES // 80  # at most a fresh pool  # type: ignore[call-overload]
    assert all(abs(change) < 200 for change in report["others"].values())  # type: ignore[attr-defined]


_HOLE = """
import json
from snakepool.pool.interpreter import prefork
def heap_kb():
    with open("/proc/self/smaps") as smaps:
        lines = iter(smaps)
        for line in lines:
            if line.rstrip().endswith("[heap]"):
                for field in lines:
                    if field.startswith("Rss:"):
                        return int(field.split()[1])
    return 0
chunks = [bytes(4000) for _ in range(6_000)]  # ~24 MB of malloc, on the heap
del chunks[100:5_900]  # a hole in the middle; the end stays, so no trim at the top
before = heap_kb()
prefork.release_free_pages()
print(json.dumps({"before": before, "after": heap_kb()}))
"""


def test_whole_free_pages_go_back_to_the_system() -> None:
    report = _python(_HOLE, MALLOC_MMAP_THRESHOLD_="1048576")
    assert report["before"] - report["after"] > 15_000  # type: ignore[operator]


@pytest.mark.skipif(not os.path.exists(JEMALLOC), reason="no jemalloc to preload")
def test_another_malloc_gives_back_nothing_through_glibc() -> None:
    report = _python(_HOLE, LD_PRELOAD=JEMALLOC)
    assert report["before"] == report["after"] == 0  # jemalloc keeps no [heap]; untouched
