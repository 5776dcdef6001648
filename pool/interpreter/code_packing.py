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
allocations, each on a template page of its own. :func:`pack_and_quicken` does both, then
runs the sample again so the copies are quickened in the template too
(:data:`QUICKEN_RUNS`), on an emptied type attribute cache: an entry holds a reference to
its attribute's name, so each entry an interpreter replaces writes the old name's page;
filled by the sample's runs alone, the cache holds the names a request looks up, not the
thousands the import did (~0.1 MB fewer pages copied per interpreter).

Measured (issue 10, bench (h)): a DSPy interpreter's first ``execute_program`` copies
~0.6 MB fewer template pages once the ~340 code objects it runs are packed.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterable
from types import CodeType, FrameType, FunctionType
from typing import Any

__all__ = ["QUICKEN_RUNS", "hot_code", "pack_and_quicken", "pack_code"]

#: Runs that quicken a packed copy: CPython 3.11 quickens a code object on its 8th call
#: and tries to specialize an adaptive instruction after ~16 more runs of it.
QUICKEN_RUNS = 8

#: Code objects replaced by a packed copy, kept alive on purpose (see the module text).
_originals: list[CodeType] = []


def hot_code(run: Callable[[], object]) -> list[CodeType]:
    """The code objects of the Python functions ``run()`` calls (its own included), each
    once (by identity: equal code objects of two files are two).

    Where a profiler is already set (``cProfile``, a debugger), ``run()`` runs under it
    and nothing is recorded: a C profiler cannot be put back from Python.
    """
    found: dict[int, CodeType] = {}

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            found.setdefault(id(frame.f_code), frame.f_code)

    if sys.getprofile() is not None:
        run()
        return []
    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return list(found.values())


def pack_code(codes: Iterable[CodeType]) -> int:
    """Give every function whose ``__code__`` is one of ``codes`` a packed copy of it.

    Copies are made in source order (file, then line), so code that runs together sits
    together; a copy's nested code objects (inner functions, lambdas, comprehensions)
    that are themselves in ``codes`` are packed too, so functions made at run time get
    the copies. Code objects are told apart by identity, never by ``==`` (which ignores
    the file). Call it before ``gc.freeze()``: frozen functions are not found. Returns
    the number of functions repointed.
    """
    hot = {id(code): code for code in codes}
    copies: dict[int, tuple[CodeType, CodeType]] = {}  # id → (original, copy)

    def copy(code: CodeType) -> CodeType:
        entry = copies.get(id(code))
        if entry is None:
            consts = tuple(
                copy(c) if type(c) is CodeType and id(c) in hot else c for c in code.co_consts
            )
            entry = copies[id(code)] = (code, code.replace(co_consts=consts))
        return entry[1]

    for code in sorted(
        hot.values(), key=lambda c: (c.co_filename, c.co_firstlineno, c.co_qualname)
    ):
        copy(code)
    repointed = 0
    for obj in gc.get_objects():
        if type(obj) is FunctionType:
            entry = copies.get(id(obj.__code__))
            if entry is not None and entry[0] is obj.__code__:
                obj.__code__ = entry[1]
                repointed += 1
    _originals.extend(original for original, _ in copies.values())
    return repointed


def pack_and_quicken(sample: Callable[[], object]) -> int:
    """Run ``sample`` once to find its code, pack it, empty CPython's type attribute
    cache, then run ``sample`` :data:`QUICKEN_RUNS` more times. Returns the number of
    functions repointed (0 under a profiler: see :func:`hot_code`)."""
    repointed = pack_code(hot_code(sample))
    sys._clear_type_cache()
    for _ in range(QUICKEN_RUNS):
        sample()
    return repointed
