"""Pack the code a request runs into few pages, in the template, before any fork.

Every interpreter is forked from the template and shares its memory until it writes a
page; each page it writes becomes its own copy. CPython 3.11 writes into a code object
each time it runs it (a call's reference count, the warm-up counter until the code is
quickened, the counters of its adaptive instructions), so every page holding a code
object a request runs is copied by every interpreter that serves one. Code objects are
allocated at import, each next to whatever its module loaded with it: the few hundred a
program runs lie on as many pages, among thousands never run after import.

:func:`hot_code` records which code objects a sample of the work runs (``sys.setprofile``:
one event per Python call); :func:`pack_code` gives every function running one of them a
fresh copy (``CodeType.replace``), allocated one after another, so they share pages. The
originals are kept alive: freed, their blocks would be reused by the interpreters' own
allocations, each on a template page of its own. The caller then runs the sample again
so the copies are quickened in the template too (:data:`QUICKEN_RUNS`).

Measured (issue 10, bench (h)): a DSPy interpreter's first ``execute_program`` copies
~0.6 MB fewer template pages once the ~340 code objects it runs are packed.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterable
from types import CodeType, FrameType, FunctionType
from typing import Any

__all__ = ["QUICKEN_RUNS", "hot_code", "pack_code"]

#: Runs that quicken a packed copy: CPython 3.11 quickens a code object on its 8th call
#: and tries to specialize an adaptive instruction after ~16 more runs of it.
QUICKEN_RUNS = 8

#: Code objects replaced by a packed copy, kept alive on purpose (see the module text).
_originals: list[CodeType] = []


def hot_code(run: Callable[[], object]) -> set[CodeType]:
    """The code objects of the Python functions ``run()`` calls (its own included).

    A profile function set by someone else (a debugger, a profiler) is put back after.
    """
    found: set[CodeType] = set()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            found.add(frame.f_code)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(previous)
    return found


def pack_code(codes: Iterable[CodeType]) -> int:
    """Give every function whose ``__code__`` is one of ``codes`` a packed copy of it.

    Copies are made in source order (file, then line), so code that runs together sits
    together; a copy's nested code objects (inner functions, lambdas, comprehensions)
    that are themselves in ``codes`` are packed too, so functions made at run time get
    the copies. Returns the number of functions repointed.
    """
    hot = set(codes)
    copies: dict[CodeType, CodeType] = {}

    def copy(code: CodeType) -> CodeType:
        packed = copies.get(code)
        if packed is None:
            consts = tuple(
                copy(c) if type(c) is CodeType and c in hot else c for c in code.co_consts
            )
            packed = copies[code] = code.replace(co_consts=consts)
        return packed

    for code in sorted(hot, key=lambda c: (c.co_filename, c.co_firstlineno, c.co_qualname)):
        copy(code)
    repointed = 0
    for obj in gc.get_objects():
        if type(obj) is FunctionType and obj.__code__ in copies:
            obj.__code__ = copies[obj.__code__]
            repointed += 1
    _originals.extend(copies)
    return repointed
