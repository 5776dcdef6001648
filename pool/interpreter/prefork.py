"""The template's heap made ready to fork: no free block left where the next allocations
would land.

An interpreter shares the template's pages until it writes one. Each allocator hands out
its free blocks first: pymalloc the free blocks of its partly used pools, glibc ``malloc``
the chunks in its bins. After importing an adapter and running its warm-up, the template
has a few thousand such blocks scattered over hundreds of pages, freed by the import and
the warm-up. So every interpreter's first allocations land on those pages and copy them,
one page per few objects; the template's own allocations after a fork (handling the next
spawn) copy them too, and the interpreters forked before keep the originals.

:func:`fill_free_blocks` allocates every such block and keeps it, once, before the first
fork: later allocations, the template's and the interpreters', go to fresh pages, packed.
The blocks were resident already: the template grows by the bookkeeping only.

Measured (issue 10, bench (h), DSPy template + 8 interpreters after a program each, on
a quiet machine): 94.2 → 91.6 MB in all; ~4,500 pymalloc blocks and ~850 malloc chunks
filled, in ~3 ms.

CPython and glibc specific, on purpose: it reads pymalloc's own statistics
(``sys._debugmallocstats``) and glibc's ``mallinfo2``. It fills nothing where it cannot
tell what is free: no pymalloc, pymalloc's debug hooks (``PYTHONMALLOC=debug``, ``-X
dev``: a block is bigger than what is asked), other threads running (the statistics are
read through fd 2, which they may be writing), a ``malloc`` that is not glibc's
(``LD_PRELOAD`` of jemalloc, musl). Whatever it takes from glibc is bounded by what glibc
said was free when it began, and the whole fill by :data:`FILL_SECONDS`.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Filled",
    "fill_free_blocks",
    "fill_size_classes",
    "pymalloc_available",
    "release_free_pages",
    "size_class",
]

#: pymalloc's pools (CPython 3.10+, 64-bit): once filled, a size class has at most one
#: pool's worth of free blocks left (the fresh pool the filling itself started).
POOL_BYTES = 16 * 1024
#: glibc chunks are filled down from this size (below ``malloc``'s mmap threshold).
MALLOC_LARGEST = 64 * 1024
#: The most a fill may take, whatever the heap holds: it is an optimisation of a start.
FILL_SECONDS = 0.25
#: glibc's per-thread cache, which ``mallinfo2`` counts as in use: 64 sizes of up to
#: 1,032 bytes, 7 chunks each (its defaults), taken on top of the free bytes it reports.
TCACHE_BYTES = 64 * 7 * 1032
_ROW = re.compile(rb"^\s*\d+\s+(\d+)\s+\d+\s+\d+\s+(\d+)\s*$", re.MULTILINE)

#: What was filled: kept for the template's life (freed, the blocks would be free again).
_kept_objects: list[object] = []
_kept_chunks: list[int] = []


@dataclass(frozen=True)
class Filled:
    """How many blocks :func:`fill_free_blocks` took: pymalloc blocks, malloc chunks."""

    pymalloc_blocks: int
    malloc_chunks: int


def _debug_hooks() -> bool:
    return sys.flags.dev_mode or "debug" in os.environ.get("PYTHONMALLOC", "")


def _stats_sink() -> Any:
    """A file for the statistics that needs no writable directory where it can."""
    if hasattr(os, "memfd_create"):
        return os.fdopen(os.memfd_create("snakepool-mallocstats"), "w+b")
    return tempfile.TemporaryFile()


def pymalloc_available() -> dict[int, int]:
    """pymalloc's free blocks per size class (bytes → blocks), from its own statistics.

    Empty where there is no pymalloc (``PYTHONMALLOC=malloc``, another Python), under
    its debug hooks, or while other Python threads run.
    """
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None or _debug_hooks() or threading.active_count() > 1:
        return {}
    # It prints on the C stderr: borrow fd 2 for a moment (no other thread runs).
    with _stats_sink() as sink:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
            stats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read()
    head, _, _ = text.partition(b"# arenas")
    return {int(size): int(free) for size, free in _ROW.findall(head)}


def _block(size: int, serial: int) -> object:
    """A new object that takes exactly one pymalloc block of ``size`` bytes."""
    if size == 16:
        return object()
    if size == 32:
        return 2**20 + serial  # one digit: 28 bytes (ints have no free list)
    return bytes(size - 33)  # 33 bytes of header and terminator: a block of ``size``


def _fill_pymalloc(deadline: float, sizes: Collection[int] | None = None) -> int:
    """One pass (over ``sizes`` only, when given): what is left after it is the rest of
    the fresh pools the filling itself started (see :data:`POOL_BYTES`), never a
    template page."""
    count = 0
    for size, free in pymalloc_available().items():
        if sizes is not None and size not in sizes:
            continue
        for serial in range(free):
            _kept_objects.append(_block(size, serial))
            count += 1
        if time.monotonic() > deadline:
            break
    return count


class _MallInfo2(ctypes.Structure):
    _fields_ = [  # glibc's struct mallinfo2 (malloc.h), all size_t
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _glibc() -> Any:
    """glibc, when the process's ``malloc`` is glibc's own, typed; else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        process = ctypes.CDLL(None)  # the symbols calls resolve to (find_library runs ldconfig)
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl names it otherwise)
        return None
    if not hasattr(libc, "mallinfo2"):  # glibc < 2.33
        return None
    address = ctypes.cast(process.malloc, ctypes.c_void_p).value
    if address != ctypes.cast(libc.malloc, ctypes.c_void_p).value:
        return None  # another malloc interposed (LD_PRELOAD): glibc's bins are not used
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.sbrk.restype = ctypes.c_void_p
    libc.sbrk.argtypes = [ctypes.c_ssize_t]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def _fill_malloc(deadline: float) -> int:
    """Take the chunks glibc would hand out before cutting into the top of its heap.

    One ``mallinfo2`` (it walks every free chunk): the bytes free outside the top, which
    (with the thread cache's) bound what is taken, and where the top begins (the main
    heap ends at ``sbrk(0)``). A chunk at or past that address was cut from the top:
    given back, and on to the next size. Sizes go down so that larger free chunks are
    taken whole before small requests would split them.
    """
    libc = _glibc()
    if libc is None:
        return 0
    # First give back every whole free page (see release_free_pages): the chunks filled
    # below are written at their ends only.
    libc.malloc_trim(0)
    info = libc.mallinfo2()
    budget = info.fordblks - info.keepcost + TCACHE_BYTES
    top = (libc.sbrk(0) or 0) - info.keepcost
    sizes = [MALLOC_LARGEST >> shift for shift in range(6)] + list(range(1032, 0, -16))
    count = 0
    for size in sizes:
        while budget >= size and time.monotonic() < deadline:
            chunk = libc.malloc(size)
            if not chunk:
                return count
            if chunk >= top:  # from the top: no free chunk of this size is left
                libc.free(chunk)
                break
            _kept_chunks.append(chunk)
            budget -= size
            count += 1
    return count


def fill_free_blocks() -> Filled:
    """Fill pymalloc's and glibc's free blocks (see the module text).

    Call it once, last before the first fork. Not before every fork: each call would
    also fill the rest of the fresh pools the last one started (up to one pool per size
    class, 16 KiB each), and grow the template for nothing (measured in bench (h):
    3.5 MB more in all than one fill).
    """
    deadline = time.monotonic() + FILL_SECONDS
    return Filled(pymalloc_blocks=_fill_pymalloc(deadline), malloc_chunks=_fill_malloc(deadline))


def size_class(nbytes: int) -> int:
    """The pymalloc size class an allocation of ``nbytes`` takes (16-byte steps; 0 above
    512 bytes, which pymalloc hands to ``malloc``)."""
    return (nbytes + 15) // 16 * 16 if 0 < nbytes <= 512 else 0


def fill_size_classes(sizes: Iterable[int]) -> int:
    """Fill pymalloc's free blocks of these size classes only (bytes, see
    :func:`size_class`); returns how many were taken.

    For objects about to be allocated that should lie together (packed copies): once
    their classes hold no free block, they are cut one after another from fresh pools.
    Bounded by :data:`FILL_SECONDS`, like :func:`fill_free_blocks`.
    """
    wanted = {size for size in sizes if size}
    if not wanted:
        return 0
    return _fill_pymalloc(time.monotonic() + FILL_SECONDS, wanted)


def release_free_pages() -> None:
    """Give glibc's whole free pages back to the system (``malloc_trim(0)``: the top of
    the heap, and ``madvise`` inside it); nothing where ``malloc`` is not glibc's.

    Call it right after a large temporary is freed (a list of every object, ~0.5 MB
    for DSPy's heap): glibc keeps such memory resident for reuse, and the next
    allocations, cut from it, would pin it in the template for good.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
