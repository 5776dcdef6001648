"""The machine's own parallel ceiling for benchmark (d), without any pool.

``python -m benchmarks.cpu_probe START_AT SECONDS`` waits until the wall clock reaches
``START_AT`` (epoch seconds, so that several probes start together), runs
:func:`benchmarks.kernel.work` chunks for ``SECONDS``, and prints how many it finished.
One probe alone vs two at once gives the 2-vs-1 ratio this machine allows right now.
"""

from __future__ import annotations

import signal
import sys
import time

from benchmarks.kernel import CHUNK_ITERATIONS, work


def main(argv: list[str]) -> int:
    """Print the number of chunks done in the window."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent: it ends us
    start_at, seconds = float(argv[0]), float(argv[1])
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    end = time.perf_counter() + seconds
    chunks = 0
    acc = 1
    while time.perf_counter() < end:
        acc = work(CHUNK_ITERATIONS, acc)
        chunks += 1
    print(chunks, acc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
