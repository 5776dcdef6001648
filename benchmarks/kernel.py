"""The unit of CPU work shared by :mod:`benchmarks.heavy_adapter` and the bare CPU probe."""

from __future__ import annotations

__all__ = ["CHUNK_ITERATIONS", "work"]

#: Iterations of :func:`work` per chunk (a chunk is some tens of microseconds).
CHUNK_ITERATIONS = 2_000


def work(iterations: int, seed: int) -> int:
    """Pure-Python integer work: an LCG-style mix that the interpreter cannot skip."""
    acc = seed
    for i in range(iterations):
        acc = (acc * 1_103_515_245 + i) & 0xFFFFFFFF
    return acc
