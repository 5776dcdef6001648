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
from collections.abc import Iterable
from types import CellType, FunctionType
from typing import Any

__all__ = ["move_functions"]

#: ``Py_TPFLAGS_IMMUTABLETYPE``: a class whose attributes cannot be set (static and
#: some extension types).
_IMMUTABLE = 1 << 8
_DESCRIPTORS = (classmethod, staticmethod, property)

#: What was replaced by a copy, kept alive on purpose (freed, its blocks would be
#: reused by the template's later allocations, or a weak reference's callback run).
_moved: list[Any] = []


def move_functions(functions: Iterable[FunctionType], *, methods: bool = True) -> int:
    """Replace each of ``functions`` by a copy wherever it is referenced; returns how
    many were moved.

    A function is moved when every reference to it is one of: a dict's value (module
    globals, class namespaces, instances' and registries' dicts), a list's item, a
    closure cell, a ``classmethod``, ``staticmethod`` or ``property``. It stays where it
    is when held anywhere else (a tuple, a dict key, a weak reference, C state, a
    running frame, an immutable class). The copy shares the original's ``__dict__``,
    globals and defaults. With it move, when nothing else holds them: the cells of its
    closure (new cells, same contents) and the ``classmethod``, ``staticmethod`` or
    ``property`` wrapping it in a class (a new one, same attributes). Classes written
    get a type version again at once. Call it before ``gc.freeze()``.

    With ``methods=False``, a function a class holds (in its namespace or through a
    wrapper) stays: setting a class attribute resets the type version of the class and
    of all its subclasses, and so what was specialised on them.
    """
    candidates = list({id(f): f for f in functions if type(f) is FunctionType}.values())
    referrers = gc.get_referrers(*candidates) if candidates else []
    owners = _class_namespaces([r for r in referrers if type(r) is dict])
    sites = _sites(candidates, referrers, owners, methods)
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
    cells = _new_cells(ordered, in_sites, {id(site) for site in sites})
    copies = {id(f): _copy_function(f, cells) for f in ordered}
    for old, new in cells.values():
        with contextlib.suppress(ValueError):  # an empty cell stays empty
            new.cell_contents = copies.get(id(old.cell_contents), old.cell_contents)
    replaced = _replace_descriptors([r for r, _, i in sites if i in copies], copies, in_sites)
    written: dict[int, type] = {}
    for referrer, key, ident in sites:
        copy = copies.get(ident)
        if copy is not None and id(referrer) not in replaced:
            _repoint(referrer, key, ident, copy, owners)
            if id(referrer) in owners:
                written[id(referrer)] = owners[id(referrer)]
    _moved.extend(ordered)
    _moved.extend(old for old, _ in cells.values())
    _revalidate([*written.values(), *replaced.values()])
    return len(ordered)


def _class_namespaces(dicts: list[dict[Any, Any]]) -> dict[int, type]:
    """Which of ``dicts`` are a class's own namespace (by id → the class): one written
    through ``type.__setattr__``, so that CPython drops what it cached about the class
    (type version, attribute cache). One pass over the heap, whatever their number."""
    owners: dict[int, type] = {}
    wanted = {id(d) for d in dicts}
    for obj in gc.get_referrers(*dicts) if dicts else ():
        if issubclass(type(obj), type):
            for namespace in gc.get_referents(vars(obj)):  # a mappingproxy's own mapping
                if id(namespace) in wanted:
                    owners[id(namespace)] = obj
    return owners


def _sites(
    candidates: list[FunctionType], referrers: list[Any], owners: dict[int, type], methods: bool
) -> list[tuple[Any, Any, int]]:
    """(referrer, key, function id) for every reference to one of ``candidates`` that
    can be repointed. Ids, not the functions: a reference held here would be one more
    to account for."""
    wanted = {id(f) for f in candidates}
    sites: list[tuple[Any, Any, int]] = []
    for referrer in referrers:
        kind = type(referrer)
        in_class = kind is dict and id(referrer) in owners
        if (
            referrer is candidates
            or (in_class and (not methods or owners[id(referrer)].__flags__ & _IMMUTABLE))
            or (kind in _DESCRIPTORS and not methods)
        ):
            continue  # ours, or a class not to be written: what it holds stays
        if kind is dict:
            sites += [(referrer, key, id(v)) for key, v in referrer.items() if id(v) in wanted]
        elif kind is list:
            sites += [(referrer, i, id(v)) for i, v in enumerate(referrer) if id(v) in wanted]
        elif kind is CellType:
            sites.append((referrer, None, id(referrer.cell_contents)))
        elif kind in (classmethod, staticmethod):
            sites.append((referrer, None, id(referrer.__func__)))
        elif kind is property:
            accessors = (referrer.fget, referrer.fset, referrer.fdel)
            sites += [(referrer, None, id(f)) for f in accessors if id(f) in wanted]
    return sites


def _new_cells(
    functions: list[FunctionType], in_sites: Counter[int], site_tuples: set[int]
) -> dict[int, tuple[CellType, CellType]]:
    """id → (cell, its new empty copy), for the cells of ``functions``' closures held by
    nothing but those closures (a running frame's, or another function's, stay).
    ``in_sites``: the references the caller's list of sites (``site_tuples``) holds to
    each."""
    closures = {id(f.__closure__) for f in functions if f.__closure__}
    cells = list({id(c): c for f in functions for c in f.__closure__ or ()}.values())
    held: Counter[int] = Counter()
    others: set[int] = set()
    for referrer in gc.get_referrers(*cells) if cells else ():
        if referrer is cells or id(referrer) in site_tuples:
            continue
        # No loop variable may be left holding a cell: it would be one more reference.
        if type(referrer) is tuple and id(referrer) in closures:
            held.update(id(c) for c in referrer)
        else:
            others.update(id(c) for c in gc.get_referents(referrer))
    return {
        id(cell): (cell, CellType())
        for cell in cells
        # 3: ``cells``, ``cell`` and getrefcount's argument.
        if id(cell) not in others
        and sys.getrefcount(cell) - 3 - in_sites[id(cell)] == held[id(cell)]
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


def _replace_descriptors(
    wrappers: list[Any], copies: dict[int, FunctionType], in_sites: Counter[int]
) -> dict[int, type]:
    """Give each ``classmethod``/``staticmethod``/``property`` among ``wrappers`` that one
    class namespace alone holds a new one wrapping the copies; returns id of the old →
    the class. The others are repointed in place by the caller. ``in_sites``: the
    references the caller's own list of sites holds to each."""
    wrappers = list({id(w): w for w in wrappers if type(w) in _DESCRIPTORS}.values())
    if not wrappers:
        return {}
    holders = [r for r in gc.get_referrers(*wrappers) if r is not wrappers]
    owners = _class_namespaces([r for r in holders if type(r) is dict])
    where: dict[int, list[tuple[type, str]]] = {}
    for holder in holders:
        cls = owners.get(id(holder)) if type(holder) is dict else None
        for key, value in holder.items() if cls is not None else ():
            where.setdefault(id(value), []).append((cls, key))  # type: ignore[arg-type]
    replaced: dict[int, type] = {}
    for old in wrappers:
        places = where.get(id(old), [])
        # 3: ``wrappers``, ``old`` and getrefcount's argument; then one class holds it.
        if len(places) != 1 or sys.getrefcount(old) - 3 - in_sites[id(old)] != 1:
            continue
        (cls, key) = places[0]
        if cls.__flags__ & _IMMUTABLE:
            continue
        type.__setattr__(cls, key, _rewrapped(old, copies))
        _moved.append(old)
        replaced[id(old)] = cls
    return replaced


def _rewrapped(old: Any, copies: dict[int, FunctionType]) -> Any:
    def new(f: Any) -> Any:
        return copies.get(id(f), f) if f is not None else None

    if type(old) is property:
        own_doc = old.__doc__ is not getattr(old.fget, "__doc__", None)
        return property(
            new(old.fget), new(old.fset), new(old.fdel), old.__doc__ if own_doc else None
        )
    wrapper = type(old)(new(old.__func__))
    wrapper.__dict__.update(old.__dict__)  # what was set on it besides the wraps
    return wrapper


def _repoint(
    referrer: Any, key: Any, ident: int, copy: FunctionType, owners: dict[int, type]
) -> None:
    kind = type(referrer)
    if kind is dict and id(referrer) in owners:
        type.__setattr__(owners[id(referrer)], key, copy)  # drops what CPython cached
    elif kind in (dict, list):
        referrer[key] = copy
    elif kind is CellType:
        referrer.cell_contents = copy
    elif kind in (classmethod, staticmethod):
        referrer.__init__(copy)
    else:  # property; a docstring taken from the getter is taken again
        accessors = [
            copy if id(f) == ident else f for f in (referrer.fget, referrer.fset, referrer.fdel)
        ]
        own_doc = referrer.__doc__ is not getattr(referrer.fget, "__doc__", None)
        referrer.__init__(*accessors, referrer.__doc__ if own_doc else None)


def _revalidate(classes: Iterable[type]) -> None:
    """Give ``classes`` and their subclasses a type version again (one attribute lookup
    each): setting an attribute took it away, and an interpreter's first lookup would
    otherwise write a new one into each class object, a page copied per class."""
    stack = list(classes)
    seen: set[int] = set()
    while stack:
        cls = stack.pop()
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        with contextlib.suppress(AttributeError):
            type.__getattribute__(cls, "__snakepool_no_such_attribute__")
        stack.extend(type.__subclasses__(cls))
