"""Where an interpreter keeps programs: the programs sessions hold, and compiled ones.

Two tables, both bounded so an interpreter never grows without limit nor refuses work
because of what other callers did before:

- :class:`HeldPrograms` — programs created in this interpreter (V2 semantics), keyed
  by ``(session, program_id)`` so sessions sharing the interpreter never see each
  other's programs. When the table is full, the least recently used *other* sessions
  are forgotten (the V2-compat lane rebuilds a forgotten program from the SessionStore
  on ``ProgramNotFound``); only one session filling it on its own is refused. Programs
  created outside any session (V2's anonymous programs) share one scope, which forgets
  its oldest instead: no anonymous caller is refused for what others created.
- :class:`CompiledCache` — compiled programs keyed by content hash, least recently used
  evicted first, bounded by count and by estimated bytes. It never refuses: it is only
  a cache (the stateless V3 lane sends definitions inline and relies on it).

Sizes are estimates: what the definition's objects take in memory
(:attr:`~snakepool.pool.interpreter.programs.ProgramDefinition.memory_bytes`, not the
length of its JSON, which a demo of many small values exceeds 25 times), plus a fixed
cost per compiled program measured with tracemalloc on DSPy 3: ~24 KiB for a
ChainOfThought.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from snakepool.errors import InvalidArguments

__all__ = ["CompiledCache", "HeldPrograms"]

T = TypeVar("T")


class CompiledCache(Generic[T]):
    """An LRU cache bounded by entries and by bytes.

    Args:
        max_entries: Most entries kept.
        max_bytes: Most (estimated) bytes kept; an entry larger than this is not kept.
    """

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[T, int]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> T | None:
        """The entry for ``key`` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, value: T, size: int) -> None:
        """Keep ``value`` (of ``size`` estimated bytes), evicting the least recently used."""
        self.discard(key)
        if size > self.max_bytes:
            return  # larger than the whole cache: used once, kept never
        self._entries[key] = (value, size)
        self.nbytes += size
        while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.nbytes -= evicted

    def discard(self, key: str) -> None:
        """Forget ``key`` if present."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.nbytes -= entry[1]

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self.nbytes = 0


class HeldPrograms(Generic[T]):
    """Programs held per session: ``(session, program_id) → definition``.

    ``session`` ``None`` is the scope of requests outside any session (a plain
    ``Pool.execute``).

    Args:
        max_programs: Most programs held in all (and by one session).
        max_bytes: Most (estimated) bytes of definitions held in all.
    """

    def __init__(self, *, max_programs: int, max_bytes: int) -> None:
        self.max_programs = max_programs
        self.max_bytes = max_bytes
        # Sessions in least-recently-used order, each with its programs.
        self._sessions: OrderedDict[str | None, dict[str, tuple[T, int]]] = OrderedDict()
        self.count = 0
        self.nbytes = 0

    def get(self, session: str | None, program_id: str) -> T | None:
        """The definition ``session`` holds as ``program_id``, or None."""
        programs = self._sessions.get(session)
        if programs is None:
            return None
        self._sessions.move_to_end(session)
        entry = programs.get(program_id)
        return entry[0] if entry is not None else None

    def put(self, session: str | None, program_id: str, value: T, size: int) -> None:
        """Hold ``value`` as ``session``'s ``program_id`` (replacing its previous one).

        Raises:
            InvalidArguments: ``session`` alone would hold more than the limits.
        """
        programs = self._sessions.setdefault(session, {})
        self._sessions.move_to_end(session)
        previous = programs.get(program_id)
        if session is None and size <= self.max_bytes:
            self._make_room_outside_sessions(program_id, size)
        own_count = len(programs) + (previous is None)
        own_bytes = sum(s for _, s in programs.values()) - (previous[1] if previous else 0) + size
        if own_count > self.max_programs or own_bytes > self.max_bytes:
            if not programs:
                del self._sessions[session]
            raise InvalidArguments(
                f"session {session!r} already holds {len(programs)} programs "
                f"({own_bytes - size} bytes) in this interpreter; the limit is "
                f"{self.max_programs} programs and {self.max_bytes} bytes: delete some"
            )
        if previous is not None:
            self._drop(session, program_id)
            programs = self._sessions.setdefault(session, programs)
        programs[program_id] = (value, size)
        self.count += 1
        self.nbytes += size
        while self.count > self.max_programs or self.nbytes > self.max_bytes:
            oldest = next(iter(self._sessions))  # never ``session``: it was just used
            for evicted in list(self._sessions[oldest]):
                self._drop(oldest, evicted)

    def _make_room_outside_sessions(self, program_id: str, size: int) -> None:
        """Forget the oldest programs created outside any session until ``program_id``
        fits: that scope is every anonymous caller's, none of whom can delete another's,
        so refusing would refuse them all for what one did (10 000 anonymous creates
        refused every later one until the interpreter was recycled)."""
        programs = self._sessions[None]
        others = [pid for pid in programs if pid != program_id]  # oldest first
        held = sum(programs[pid][1] for pid in others)
        while others and (len(others) + 1 > self.max_programs or held + size > self.max_bytes):
            oldest = others.pop(0)
            held -= programs[oldest][1]
            self._drop(None, oldest)
        self._sessions.setdefault(None, programs)  # _drop removes an emptied scope
        self._sessions.move_to_end(None)

    def delete(self, session: str | None, program_id: str) -> bool:
        """Forget ``session``'s ``program_id``; False if it held none."""
        programs = self._sessions.get(session)
        if programs is None or program_id not in programs:
            return False
        self._drop(session, program_id)
        return True

    def items(self, session: str | None) -> list[tuple[str, T]]:
        """``session``'s programs, sorted by id."""
        programs = self._sessions.get(session, {})
        return [(pid, programs[pid][0]) for pid in sorted(programs)]

    @property
    def sessions(self) -> int:
        """How many sessions hold programs here."""
        return len(self._sessions)

    def _drop(self, session: str | None, program_id: str) -> None:
        programs = self._sessions[session]
        _, size = programs.pop(program_id)
        self.count -= 1
        self.nbytes -= size
        if not programs:
            del self._sessions[session]
