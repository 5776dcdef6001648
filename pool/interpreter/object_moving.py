"""Move the function objects a request runs, and what each call writes with them, to
fresh copies that lie together, in the template, before any fork.

CPython 3.11 writes a function object's reference count each time it is loaded to be
called; a closure's cells each time it runs; a ``classmethod``, ``staticmethod`` or
``property`` each time it is looked up on its class. Each such object lies on a template
page among objects never touched after import, so every forked interpreter copies that
page. :func:`move_functions` gives each of them a copy, allocated one after another (by
:func:`~snakepool.pool.interpreter.code_packing.pack`, from fresh pools), and repoints
every reference to it. An object is moved only where every reference to it can be
repointed, so that no one can tell the copy from the original (``is`` holds wherever it
held); anything else stays where it is. The originals are kept alive.

Measured (issue 10, bench (h), one forked DSPy interpreter's first program): ~570
functions moved, ~0.25 MB fewer template pages copied per interpreter.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from types import CellType, FunctionType
from typing import Any

__all__ = ["move_functions"]

#: ``Py_TPFLAGS_IMMUTABLETYPE``: a class whose attributes cannot be set (static and
#: some extension types).
_IMMUTABLE = 1 << 8
_DESCRIPTORS = (classmethod, staticmethod, property)
#: ``type.__dict__``'s own getter: a class's namespace, past any metaclass.
_TYPE_DICT: Any = type.__dict__["__dict__"]

#: What was replaced by a copy, kept alive on purpose (freed, its blocks would be
#: reused by the template's later allocations, or a weak reference's callback run).
_moved: list[Any] = []


def move_functions(functions: Iterable[FunctionType], *, methods: bool = True) -> int:
    """Replace each of ``functions`` by a copy wherever it is referenced; returns how
    many were moved.

    A function is moved when every reference to it is one of: a dict's value (module
    globals, class namespaces under a string name, instances' and registries' dicts), a
    list's item, a closure cell, or a ``classmethod``, ``staticmethod`` or ``property``
    that one class alone holds (replaced by a new one, same attributes and name). It
    stays where it is when held anywhere else (a tuple, a dict key, a weak reference, C
    state, a running frame, an immutable class, a wrapper held elsewhere). The copy
    shares the original's ``__dict__``, globals and defaults; the cells of its closure
    move with it when only moved closures hold them (new cells, same contents). Classes
    written get a type version again at once. Everything is checked before anything is
    written. Call it before ``gc.freeze()``.

    With ``methods=False``, a function a class holds (in its namespace or through a
    wrapper) stays: setting a class attribute resets the type version of the class and
    of all its subclasses, and so what was specialised on them.
    """
    candidates = list({id(f): f for f in functions if type(f) is FunctionType}.values())
    referrers = gc.get_referrers(*candidates) if candidates else []
    owners = _class_namespaces()
    wrappers = _lone_wrappers(referrers, owners) if methods else {}
    sites = _sites(candidates, referrers, owners, wrappers, methods)
    del referrers
    found = Counter(ident for _, _, ident in sites)
    movable = {
        id(f)
        for f in candidates
        # 3: ``candidates``, ``f`` and getrefcount's argument.
        if sys.getrefcount(f) - 3 == found[id(f)] and not weakref.getweakrefcount(f)
    }
    ordered = sorted(
        (f for f in candidates if id(f) in movable),
        key=lambda f: (f.__code__.co_filename, f.__code__.co_firstlineno, f.__qualname__),
    )
    in_sites = Counter(id(referrer) for referrer, _, _ in sites)  # references held there
    cells = _new_cells(ordered, in_sites)
    copies = {id(f): _copy_function(f, cells) for f in ordered}
    for old, new in cells.values():
        with contextlib.suppress(ValueError):  # an empty cell stays empty
            new.cell_contents = copies.get(id(old.cell_contents), old.cell_contents)
    written: dict[int, type] = {}
    for referrer, key, ident in sites:
        if ident not in copies:
            continue
        if id(referrer) in wrappers:  # replaced whole, once
            cls, name = wrappers.pop(id(referrer))
            _replace_wrapper(referrer, cls, name, copies)
            written[id(cls)] = cls
        elif type(referrer) is dict and id(referrer) in owners:
            cls = owners[id(referrer)]
            type.__setattr__(cls, key, copies[ident])  # drops what CPython cached
            written[id(cls)] = cls
        elif type(referrer) is CellType:
            referrer.cell_contents = copies[ident]
        elif type(referrer) in (dict, list):
            referrer[key] = copies[ident]
    _moved.extend(ordered)
    _moved.extend(old for old, _ in cells.values())
    _revalidate(written.values())
    return len(ordered)


def _namespace(cls: type) -> Any:
    """A class's own namespace dict, whatever its metaclass says of ``__dict__``."""
    proxy = _TYPE_DICT.__get__(cls, type(cls))
    return gc.get_referents(proxy)[0]  # a mappingproxy's own mapping


def _class_namespaces() -> dict[int, type]:
    """Every live class's own namespace dict (by id → the class), found down the tree of
    subclasses from ``object`` (~3,000 classes for DSPy's: ~3 ms; ``gc.get_referrers``
    of hundreds of dicts took ~30 ms). A dict holding a function is written through
    ``type.__setattr__`` when it is a class's, so that CPython drops what it cached
    about the class (type version, attribute cache)."""
    return {id(_namespace(cls)): cls for cls in _down_from([object])}


def _down_from(classes: Iterable[type]) -> Iterator[type]:
    """``classes`` and all their subclasses, each once."""
    stack = list(classes)
    seen: set[int] = set()
    while stack:
        cls = stack.pop()
        if id(cls) not in seen:
            seen.add(id(cls))
            yield cls
            stack.extend(type.__subclasses__(cls))


def _lone_wrappers(referrers: list[Any], owners: dict[int, type]) -> dict[int, tuple[type, str]]:
    """id → (class, name) of the ``classmethod``/``staticmethod``/``property`` among
    ``referrers`` that one writable class holds under a string name, and nothing else
    (no weak reference either): those can be replaced by a new one."""
    found = [r for r in referrers if type(r) in _DESCRIPTORS]
    if not found:
        return {}
    holders = [h for h in gc.get_referrers(*found) if h is not found and h is not referrers]
    ids = {id(w) for w in found}
    places: dict[int, list[tuple[type, Any]]] = {}
    for holder in holders:
        cls = owners.get(id(holder)) if type(holder) is dict else None
        for key, value in holder.items() if cls is not None else ():
            if id(value) in ids:
                places.setdefault(id(value), []).append((cls, key))  # type: ignore[arg-type]
    lone: dict[int, tuple[type, str]] = {}
    for wrapper in found:
        where = places.get(id(wrapper), [])
        # 4: ``referrers``, ``found``, ``wrapper`` and getrefcount's argument; then one
        # class, once.
        if (
            len(where) == 1
            and type(where[0][1]) is str
            and not where[0][0].__flags__ & _IMMUTABLE
            and sys.getrefcount(wrapper) - 4 == 1
            and not weakref.getweakrefcount(wrapper)
        ):
            lone[id(wrapper)] = where[0]
    return lone


def _sites(
    candidates: list[FunctionType],
    referrers: list[Any],
    owners: dict[int, type],
    wrappers: dict[int, tuple[type, str]],
    methods: bool,
) -> list[tuple[Any, Any, int]]:
    """(referrer, key, function id) for every reference to one of ``candidates`` that
    can be repointed (what is not listed keeps its function where it is). Ids, not the
    functions: a reference held here would be one more to account for."""
    wanted = {id(f) for f in candidates}
    sites: list[tuple[Any, Any, int]] = []
    for referrer in referrers:
        kind = type(referrer)
        if referrer is candidates:
            continue
        if kind is dict and id(referrer) in owners:  # a class's namespace
            if methods and not owners[id(referrer)].__flags__ & _IMMUTABLE:
                sites += [
                    (referrer, key, id(v))
                    for key, v in referrer.items()
                    if id(v) in wanted and type(key) is str  # setattr takes names only
                ]
        elif kind is dict:
            sites += [(referrer, key, id(v)) for key, v in referrer.items() if id(v) in wanted]
        elif kind is list:
            sites += [(referrer, i, id(v)) for i, v in enumerate(referrer) if id(v) in wanted]
        elif kind is CellType:
            sites.append((referrer, None, id(referrer.cell_contents)))
        elif id(referrer) in wrappers:
            if kind is property:
                accessors = (referrer.fget, referrer.fset, referrer.fdel)
                sites += [(referrer, None, id(f)) for f in accessors if id(f) in wanted]
            else:
                sites.append((referrer, None, id(referrer.__func__)))
    return sites


def _new_cells(
    functions: list[FunctionType], in_sites: Counter[int]
) -> dict[int, tuple[CellType, CellType]]:
    """id → (cell, its new empty copy), for the cells of ``functions``' closures held by
    nothing but those closures, themselves held by nothing but those functions (a
    running frame's, a saved ``__closure__``, or another function's keep theirs).
    Told by reference counts alone: any other holder is one more reference.
    ``in_sites``: the references the caller's list of sites holds to each cell."""
    owned = Counter(id(f.__closure__) for f in functions if f.__closure__)
    closures = list({id(f.__closure__): f.__closure__ for f in functions if f.__closure__}.values())
    held: Counter[int] = Counter()
    for index in range(len(closures)):
        # 2: ``closures`` and getrefcount's argument; then the functions owning it. No
        # loop variable may hold a closure or a cell: it would be one more reference.
        if sys.getrefcount(closures[index]) - 2 == owned[id(closures[index])]:
            held.update(id(c) for c in closures[index])
    cells = list({id(c): c for t in closures for c in t}.values())
    return {
        id(cell): (cell, CellType())
        for cell in cells
        # 3: ``cells``, ``cell`` and getrefcount's argument.
        if held[id(cell)] and sys.getrefcount(cell) - 3 - in_sites[id(cell)] == held[id(cell)]
    }


def _copy_function(
    function: FunctionType, cells: dict[int, tuple[CellType, CellType]]
) -> FunctionType:
    closure = function.__closure__
    if closure is not None:
        closure = tuple(cells[id(c)][1] if id(c) in cells else c for c in closure)
    copy = FunctionType(
        function.__code__, function.__globals__, function.__name__, function.__defaults__, closure
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__qualname__ = function.__qualname__
    copy.__module__ = function.__module__
    copy.__doc__ = function.__doc__
    copy.__annotations__ = function.__annotations__
    copy.__dict__ = function.__dict__  # shared: an attribute set on either is on both
    return copy


def _replace_wrapper(old: Any, cls: type, name: str, copies: dict[int, FunctionType]) -> None:
    """Put a new ``classmethod``/``staticmethod``/``property`` like ``old``, wrapping
    the copies, in ``cls`` under ``name``."""

    def new(f: Any) -> Any:
        return copies.get(id(f), f) if f is not None else None

    if type(old) is property:
        own_doc = old.__doc__ is not getattr(old.fget, "__doc__", None)
        doc = old.__doc__ if own_doc else None
        wrapper: Any = property(new(old.fget), new(old.fset), new(old.fdel), doc)
        wrapper.__set_name__(cls, name)  # its name, for its error messages
    else:
        wrapper = type(old)(new(old.__func__))
        wrapper.__dict__.update(old.__dict__)  # what was set on it besides the wraps
    type.__setattr__(cls, name, wrapper)  # drops what CPython cached
    _moved.append(old)


def _revalidate(classes: Iterable[type]) -> None:
    """Give ``classes`` and their subclasses a type version again (one attribute lookup
    each): setting an attribute took it away, and an interpreter's first lookup would
    otherwise write a new one into each class object, a page copied per class."""
    for cls in _down_from(classes):
        with contextlib.suppress(AttributeError):
            type.__getattribute__(cls, "__snakepool_no_such_attribute__")
