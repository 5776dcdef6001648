"""Pack the code a request runs, and the functions running it, into few pages, in the
template, before any fork.

Every interpreter is forked from the template and shares its memory until it writes a
page; each page it writes becomes its own copy. CPython 3.11 writes into a code object
each time it runs it (a call's reference count, the warm-up counter until the code is
quickened, the counters of its adaptive instructions), and into a function object each
time it is loaded to be called (its reference count). So every page holding a code or
function object a request runs is copied by every interpreter that serves one. Both are
allocated at import, each next to whatever its module loaded with it: the few hundred a
program runs lie on as many pages, among thousands never run after import.

:func:`hot_code` records which code objects a sample of the work runs (``sys.setprofile``:
one event per Python call); :func:`pack_code` gives every function running one of them a
fresh copy (``CodeType.replace``), allocated one after another, so they share pages.
:func:`~snakepool.pool.interpreter.object_moving.move_functions` does the same for the
function objects, where every reference to one can be repointed (module and class
namespaces, cells, lists, ``classmethod`` …), so that no one can tell. :func:`pack`
does both, the copies cut from fresh pools. The originals are kept alive: freed, their
blocks would be reused by the template's allocations. :func:`pack_and_quicken` packs,
then runs the sample again so the copies are quickened in the template too
(:data:`QUICKEN_RUNS`), on an emptied type attribute cache: an entry holds a reference
to its attribute's name, so each entry an interpreter replaces writes the old name's
page; filled by the sample's runs alone, the cache holds the names a request looks up,
not the thousands the import did (~0.1 MB fewer pages copied per interpreter).

Measured (issue 10, bench (h)): a DSPy interpreter's first ``execute_program`` copies
~0.6 MB fewer template pages once the ~340 code objects it runs are packed, and ~0.25 MB
fewer again once the ~570 functions running them are moved.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterable
from types import CellType, CodeType, FrameType, FunctionType
from typing import Any

from snakepool.pool.interpreter import prefork
from snakepool.pool.interpreter.object_moving import move_functions

__all__ = ["QUICKEN_RUNS", "hot_code", "pack", "pack_and_quicken", "pack_code"]

#: Runs that quicken a packed copy: CPython 3.11 quickens a code object on its 8th call
#: and tries to specialize an adaptive instruction after ~16 more runs of it.
QUICKEN_RUNS = 8

#: Code objects replaced by a packed copy, kept alive on purpose (see the module text).
_originals: list[CodeType] = []
#: The packed copies, by id: never copied again. Held here, so that an id cannot be
#: reused by another code object while it is listed.
_packed: dict[int, CodeType] = {}


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
    the file); a copy made by an earlier call is not copied again. Call it before
    ``gc.freeze()``: frozen functions are not found. Returns the number of functions
    repointed.
    """
    return len(_pack_code(codes))


def _pack_code(codes: Iterable[CodeType]) -> list[FunctionType]:
    hot = {id(code): code for code in codes if id(code) not in _packed}
    copies: dict[int, tuple[CodeType, CodeType]] = {}  # id → (original, copy)

    def copy(code: CodeType) -> CodeType:
        entry = copies.get(id(code))
        if entry is None:
            consts = tuple(
                copy(c) if type(c) is CodeType and id(c) in hot else c for c in code.co_consts
            )
            entry = copies[id(code)] = (code, code.replace(co_consts=consts))
        return entry[1]

    ordered = sorted(hot.values(), key=lambda c: (c.co_filename, c.co_firstlineno, c.co_qualname))
    for code in ordered:
        copy(code)
    # The functions running the originals; get_referrers, not a list of every object
    # (which glibc would keep resident after it is freed).
    originals = [original for original, _ in copies.values()]
    repointed = [
        obj
        for obj in (gc.get_referrers(*originals) if originals else ())
        if type(obj) is FunctionType
        and (entry := copies.get(id(obj.__code__))) is not None
        and entry[0] is obj.__code__
    ]
    for function in repointed:
        function.__code__ = copies[id(function.__code__)][1]
    _originals.extend(originals)
    _packed.update((id(packed), packed) for _, packed in copies.values())
    return repointed


def _moved_sizes() -> set[int]:
    """Sizes of what moving functions allocates: a function, a cell, the wrappers."""
    samples: list[object] = [_moved_sizes, CellType(), property()]
    samples += [classmethod(hot_code), staticmethod(hot_code)]
    return {sys.getsizeof(sample) for sample in samples}


def pack(codes: Iterable[CodeType], *, methods: bool = True) -> int:
    """:func:`pack_code`, then
    :func:`~snakepool.pool.interpreter.object_moving.move_functions` on the functions it
    repointed, each kind of copy cut from fresh pools: the pymalloc size classes they
    will take are filled first (:func:`~snakepool.pool.interpreter.prefork.fill_size_classes`),
    or the copies would land one by one in the free blocks scattered over the heap.
    What the scans left free is given back
    (:func:`~snakepool.pool.interpreter.prefork.release_free_pages`). Returns the number
    of functions repointed.

    Moving a method sets a class attribute, which resets the type version of the class
    and of all its subclasses, and so every specialization made on them: run the work
    again after (as :func:`pack_and_quicken` does), or pass ``methods=False``.
    """
    fresh = [code for code in codes if id(code) not in _packed]
    sizes = {sys.getsizeof(code) for code in fresh} | _moved_sizes()
    prefork.fill_size_classes({prefork.size_class(size) for size in sizes})
    repointed = _pack_code(fresh)
    move_functions(repointed, methods=methods)
    prefork.release_free_pages()
    return len(repointed)


def pack_and_quicken(sample: Callable[[], object]) -> int:
    """Run ``sample`` once to find its code, :func:`pack` it, empty CPython's type
    attribute cache, then run ``sample`` :data:`QUICKEN_RUNS` more times. Returns the
    number of functions repointed (0 under a profiler: see :func:`hot_code`)."""
    repointed = pack(hot_code(sample))
    sys._clear_type_cache()
    for _ in range(QUICKEN_RUNS):
        sample()
    return repointed
