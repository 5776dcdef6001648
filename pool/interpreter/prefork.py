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

Measured (issue 10, bench (h), DSPy template + 8 interpreters after a program each):
95.4 → 85.3 MB in all; ~4,000 pymalloc blocks and ~2,600 malloc chunks filled.

CPython and glibc specific, on purpose: it reads pymalloc's own statistics
(``sys._debugmallocstats``) and glibc's ``mallinfo2``; elsewhere it fills nothing.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

__all__ = ["Filled", "fill_free_blocks", "pymalloc_available"]

#: pymalloc's pools (CPython 3.10+, 64-bit): once filled, a size class has at most one
#: pool's worth of free blocks left (the fresh pool the filling itself started).
POOL_BYTES = 16 * 1024
#: glibc chunks are filled down from this size (below ``malloc``'s mmap threshold) ...
MALLOC_LARGEST = 64 * 1024
#: ... and at most this many in all (a bound, whatever the allocator does).
MALLOC_MOST_CHUNKS = 50_000
_ROW = re.compile(rb"^\s*\d+\s+(\d+)\s+\d+\s+\d+\s+(\d+)\s*$", re.MULTILINE)

#: What was filled: kept for the template's life (freed, the blocks would be free again).
_kept_objects: list[object] = []
_kept_chunks: list[int] = []


@dataclass(frozen=True)
class Filled:
    """How many blocks :func:`fill_free_blocks` took: pymalloc blocks, malloc chunks."""

    pymalloc_blocks: int
    malloc_chunks: int


def pymalloc_available() -> dict[int, int]:
    """pymalloc's free blocks per size class (bytes → blocks), from its own statistics.

    Empty where there is no pymalloc (``PYTHONMALLOC=malloc``, another Python).
    """
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None:
        return {}
    # It prints on the C stderr: borrow fd 2 for a moment (nothing else runs here).
    with tempfile.TemporaryFile() as sink:
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


def _fill_pymalloc() -> int:
    """One pass: what is left after it is the rest of the fresh pools the filling itself
    started (see :data:`POOL_BYTES`), never a template page."""
    count = 0
    for size, free in pymalloc_available().items():
        for serial in range(free):
            _kept_objects.append(_block(size, serial))
            count += 1
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
    """glibc with ``malloc``, ``free`` and ``mallinfo2`` typed; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None)  # the process's own symbols (find_library runs ldconfig)
    if not hasattr(libc, "mallinfo2"):  # glibc < 2.33, or another libc (musl)
        return None
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def _fill_malloc() -> int:
    """Take every chunk glibc would hand out before cutting into the top of its heap.

    A chunk cut from the top shrinks ``keepcost`` (the top's size); one from a bin or
    from the thread cache does not. Sizes go down so that larger free chunks are taken
    whole before small requests would split them.
    """
    libc = _glibc()
    if libc is None:
        return 0
    sizes = [MALLOC_LARGEST >> shift for shift in range(6)] + list(range(1032, 0, -16))
    count = 0
    top = libc.mallinfo2().keepcost
    for size in sizes:
        while count < MALLOC_MOST_CHUNKS:
            chunk = libc.malloc(size)
            if not chunk:
                return count
            after = libc.mallinfo2().keepcost
            if after < top:  # cut from the top: no free chunk of this size is left
                libc.free(chunk)
                top = libc.mallinfo2().keepcost
                break
            _kept_chunks.append(chunk)
            count += 1
    return count


def fill_free_blocks() -> Filled:
    """Fill pymalloc's and glibc's free blocks (see the module text). Call it last
    before the first fork; a second call fills what was freed since.
    """
    return Filled(pymalloc_blocks=_fill_pymalloc(), malloc_chunks=_fill_malloc())
