"""The DSPy adapter: create and run DSPy programs on warm interpreters.

Imported once in the pool's template, so every forked interpreter starts with DSPy (and,
with a real LM configured, litellm) already imported — the cost a warm pool exists to
pay once. Programs are plain data (:class:`~snakepool.pool.interpreter.programs.ProgramDefinition`).
What an interpreter keeps (:mod:`~snakepool.pool.interpreter.program_tables`):

- the programs created on it, per session (V2 semantics): a request sees only the
  programs of its own session (:func:`~snakepool.pool.interpreter.context.current_session`);
- a bounded cache of compiled programs keyed by content hash, so V3 can send
  definitions inline, statelessly.

A transient request (a shadow copy, or the stateless V3 lane:
:func:`~snakepool.pool.interpreter.context.is_transient`) holds nothing: ``create_program``
validates and compiles and answers as usual but keeps no program, ``delete_program``
deletes nothing.

A program is tried once with DummyLM when it is compiled, so a definition DSPy cannot
run is refused at ``create_program`` (``InvalidArguments``) instead of failing every
``execute_program`` after it.

The LM comes from ``SNAKEPOOL_LM``: ``dummy`` uses DSPy's own ``DummyLM`` with
deterministic answers (:mod:`~snakepool.pool.interpreter.dummy_answers`); anything else
is a model name for ``dspy.LM`` (credentials from the environment, as litellm reads
them). Changing it with ``configure_lm`` is an admin command (``ALLOW_ADMIN_COMMANDS``).
"""

from __future__ import annotations

import gc
import json
import logging
import os
from typing import Any

# No network here: litellm must not fetch its model cost map at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

try:
    import dspy
    from dspy.utils import DummyLM

    _IMPORT_ERROR: ImportError | None = None
except ImportError as exc:  # the extra is not installed: the commands say how to fix it
    dspy = None
    DummyLM = None
    _IMPORT_ERROR = exc

from snakepool.errors import ConfigError, InvalidArguments, ProgramNotFound
from snakepool.pool.interpreter import code_packing
from snakepool.pool.interpreter.context import current_session, is_transient
from snakepool.pool.interpreter.core import get_stats, ping
from snakepool.pool.interpreter.dspy_compiler import (
    RUN_CONTEXT,
    ProgramCompiler,
    prediction_outputs,
    program_fields,
)
from snakepool.pool.interpreter.dspy_names import reserved_field_names
from snakepool.pool.interpreter.dspy_tuning import OneDummyLM, tune
from snakepool.pool.interpreter.dummy_answers import dummy_answers
from snakepool.pool.interpreter.marks import command
from snakepool.pool.interpreter.program_tables import HeldPrograms
from snakepool.pool.interpreter.programs import ProgramDefinition, validate_program_id
from snakepool.pool.interpreter.standard import calculate, echo, sleep

__all__ = [
    "calculate", "configure_lm", "create_program", "delete_program", "dspy_status", "echo",
    "execute_program", "get_program_info", "get_stats", "list_programs", "ping", "sleep",
]  # fmt: skip

#: Compiled programs kept per interpreter (least recently used evicted first) ...
MAX_COMPILED = 256
#: ... and their estimated bytes.
MAX_COMPILED_BYTES = 32 * 1024 * 1024
#: Estimated memory of one compiled program besides its definition's objects (measured:
#: ~24 KiB for a ChainOfThought on DSPy 3).
COMPILED_OVERHEAD_BYTES = 32 * 1024
#: Programs one interpreter holds for its sessions (created on it, V2 semantics) ...
MAX_PROGRAMS = 10_000
#: ... and their definitions' bytes.
MAX_PROGRAM_BYTES = 64 * 1024 * 1024

_IMPORTED_IN_PID = os.getpid()  # differs from os.getpid() in a forked interpreter
#: The keys ``configure_lm`` takes.
_LM_KEYS = frozenset({"lm", "answers"})


def _load_answers(path: str | None) -> dict[str, dict[str, Any]]:
    if not path:
        return {}
    with open(path, encoding="utf-8") as handle:
        answers = json.load(handle)
    if not isinstance(answers, dict) or not all(isinstance(v, dict) for v in answers.values()):
        raise ValueError(f"{path}: expected {{substring: {{field: value}}}}")
    return answers


class _State:
    def __init__(self) -> None:
        self.lm_spec = os.environ.get("SNAKEPOOL_LM", "dummy") or "dummy"
        # A bad answers file fails the template's import, so the pool refuses to start.
        self.answers = _load_answers(os.environ.get("SNAKEPOOL_LM_ANSWERS"))
        self.real_lm: Any = None
        self.programs: HeldPrograms[ProgramDefinition] = HeldPrograms(
            max_programs=MAX_PROGRAMS, max_bytes=MAX_PROGRAM_BYTES
        )
        #: ``answers`` → the dummy LM answering them (one instance, reused; used only
        #: where DSPy, and so DummyLM, imported).
        self.dummy_lm = OneDummyLM(DummyLM)
        self.compiler = (
            ProgramCompiler(
                dspy,
                self.dummy_lm,
                max_entries=MAX_COMPILED,
                max_bytes=MAX_COMPILED_BYTES,
                overhead_bytes=COMPILED_OVERHEAD_BYTES,
            )
            if dspy is not None
            else None
        )


_state = _State()

if dspy is not None:
    tune(dspy)  # before the warm-up: what DSPy rebuilds per program, made once

if dspy is not None and _state.lm_spec != "dummy":
    import litellm  # noqa: F401 - preloaded in the template: ~4 s no interpreter pays


def _warm_up() -> None:
    """Run throwaway programs here, in the template, before any fork.

    DSPy builds caches and lazily imports parts of itself on a program's first run;
    doing that once here means interpreters share those pages (~2.5 MB less each) and
    none pays ~10 ms on its first request. The code an ``execute_program`` of a new
    definition runs is then packed and quickened (:mod:`~snakepool.pool.interpreter.code_packing`:
    ~0.6 MB fewer pages copied by each interpreter's first program). Each run is a new
    definition, so compiling is warmed as well as running; none is kept. It runs on the
    dummy LM whatever ``SNAKEPOOL_LM`` says: a template never calls a real model.
    """
    if dspy is None:
        return
    runs = iter(range(code_packing.QUICKEN_RUNS + 1))  # each run a new definition

    def sample() -> None:
        n = next(runs)
        program = {"signature": f"warm_up -> warm_answer_{n}"}
        execute_program({"program": program, "inputs": {"warm_up": f"run {n}"}})

    lm_spec, _state.lm_spec = _state.lm_spec, "dummy"
    try:
        reserved_field_names(dspy, "predict")  # read from DSPy once, before the fork
        code_packing.pack_and_quicken(sample)
    except Exception as exc:  # a warm-up must never stop the adapter from loading
        # Goes to the template's stderr, which the pool logs.
        logging.getLogger(__name__).warning("DSPy warm-up run failed: %s", exc)
    finally:
        _state.lm_spec = lm_spec
        if _state.compiler is not None:
            _state.compiler.cache.clear()
        gc.collect()  # the throwaway signatures (pydantic classes: cycles), before the freeze


def _require_dspy() -> Any:
    if dspy is None:
        raise ConfigError(
            f"DSPy is not installed in this interpreter's Python ({_IMPORT_ERROR}); "
            "install it with: pip install 'snakepool[dspy]'"
        )
    return dspy


def _compile(definition: ProgramDefinition) -> Any:
    """The DSPy module for a definition (cached by content hash).

    Raises:
        ConfigError: DSPy is not installed.
        InvalidArguments: a bad field name, a malformed signature, or one DSPy cannot run.
    """
    _require_dspy()
    assert _state.compiler is not None
    return _state.compiler.compile(definition)


def _lm_for(inputs: dict[str, Any], outputs: dict[str, Any]) -> Any:
    if _state.lm_spec == "dummy":
        # "" matches every prompt
        return _state.dummy_lm({"": dummy_answers(inputs, outputs, _state.answers)})
    if _state.real_lm is None:
        _state.real_lm = dspy.LM(_state.lm_spec)
    return _state.real_lm


def _held(args: dict[str, Any]) -> tuple[str, ProgramDefinition]:
    """The session's held program ``program_id``.

    ``program_hash`` (optional) is the content hash the caller knows as current (the
    V2-compat lane sends the SessionStore's): a held definition with another hash is
    stale — replaced or deleted elsewhere — and is not run.

    Raises:
        ProgramNotFound: none held, or a stale one.
    """
    program_id = validate_program_id(args.get("program_id"))
    expected = args.get("program_hash")
    if expected is not None and not isinstance(expected, str):
        raise InvalidArguments("'program_hash' must be a string (a program's content hash)")
    session = current_session()
    definition = _state.programs.get(session, program_id)
    if definition is None:
        where = f" of session {session!r}" if session is not None else ""
        hint = (
            ": a request outside a session keeps no programs (create it in a session, "
            "or send the definition inline as 'program')"
            if session is None and is_transient()
            else ""
        )
        raise ProgramNotFound(f"no program {program_id!r}{where} in this interpreter{hint}")
    if expected is not None and definition.content_hash != expected:
        raise ProgramNotFound(
            f"program {program_id!r} held here is not the current one (hash "
            f"{definition.content_hash[:12]}, expected {expected[:12]})"
        )
    return program_id, definition


def _describe(program_id: str | None, definition: ProgramDefinition) -> dict[str, Any]:
    program = _compile(definition)
    inputs, outputs = program_fields(program)
    return {
        "program_id": program_id,
        **definition.to_dict(),
        "hash": definition.content_hash,
        "input_fields": list(inputs),
        "output_fields": list(outputs),
    }


@command()
def create_program(args: dict[str, Any]) -> dict[str, Any]:
    """Compile and keep a program for the request's session: ``{"id"?, "signature",
    "module"?, "instructions"?, "demos"?}`` → ``{"program_id", "hash", "input_fields",
    "output_fields"}``. Creating an existing id replaces the session's definition.

    A transient request (shadow copy, V3) validates and compiles but keeps nothing.

    Raises:
        InvalidArguments: a bad definition or id (naming the field), or the session
            already holds the most programs an interpreter keeps for one session.
    """
    definition = ProgramDefinition.from_args(args)
    program_id = validate_program_id(args["id"]) if args.get("id") is not None else None
    described = _describe(program_id, definition)  # compiles: bad signatures fail here
    if program_id is None:
        program_id = f"prog-{os.urandom(6).hex()}"
    if not is_transient():
        size = definition.memory_bytes + len(program_id)
        _state.programs.put(current_session(), program_id, definition, size)
    return {key: described[key] for key in ("hash", "input_fields", "output_fields")} | {
        "program_id": program_id
    }


def _definition(args: dict[str, Any]) -> ProgramDefinition:
    """The inline ``program`` of a request, else the session's ``program_id``."""
    if args.get("program") is not None:
        return ProgramDefinition.from_args(args["program"])
    if args.get("program_id") is not None:
        return _held(args)[1]
    raise InvalidArguments("execute_program needs 'program_id' or an inline 'program'")


@command(read_only=True)
def execute_program(args: dict[str, Any]) -> dict[str, Any]:
    """Run a program on ``inputs``: ``{"program_id" | "program", "inputs"}`` → output fields.

    ``program`` is a full inline definition (how the stateless V3 lane sends it).
    """
    _require_dspy()
    definition = _definition(args)
    inputs = args.get("inputs")
    if not isinstance(inputs, dict):
        raise InvalidArguments("'inputs' must be an object of input field -> value")
    program = _compile(definition)
    input_fields, output_fields = program_fields(program)
    missing = [name for name in input_fields if name not in inputs]
    if missing:
        raise InvalidArguments(
            f"missing input field(s) {', '.join(missing)} for {definition.signature!r}"
        )
    extra = [str(name) for name in inputs if name not in input_fields]
    if extra:
        raise InvalidArguments(
            f"unknown input field(s) {', '.join(extra)} for {definition.signature!r}"
        )
    with dspy.context(lm=_lm_for(inputs, output_fields), **RUN_CONTEXT):
        prediction = program(**inputs)
    return prediction_outputs(prediction, output_fields)


@command(read_only=True)
def list_programs(args: dict[str, Any]) -> dict[str, Any]:
    """The programs this interpreter holds for the request's session."""
    return {
        "programs": [
            {
                "program_id": pid,
                "signature": d.signature,
                "module": d.module,
                "hash": d.content_hash,
            }
            for pid, d in _state.programs.items(current_session())
        ]
    }


@command()
def delete_program(args: dict[str, Any]) -> dict[str, Any]:
    """Forget one of the session's programs: ``{"program_id"}``.

    A transient request only checks that it exists.
    """
    program_id, _ = _held(args)
    if not is_transient():
        _state.programs.delete(current_session(), program_id)
    return {"deleted": program_id}


@command(read_only=True)
def get_program_info(args: dict[str, Any]) -> dict[str, Any]:
    """A program's definition, hash and fields: ``{"program_id"}`` (one of the session's),
    or ``{"program_id"?, "program"}`` to describe an inline definition (V3)."""
    if args.get("program") is not None:
        program_id = args.get("program_id")
        named = validate_program_id(program_id) if program_id is not None else None
        return _describe(named, ProgramDefinition.from_args(args["program"]))
    program_id, definition = _held(args)
    return _describe(program_id, definition)


@command(admin=True)
def configure_lm(args: dict[str, Any]) -> dict[str, Any]:
    """Set this interpreter's LM: ``{"lm": "dummy" | model, "answers"?: mapping}``.

    An admin command: it points the interpreter's LM credentials at any model, so it
    is off unless the pool's ``ALLOW_ADMIN_COMMANDS`` setting is on.

    Raises:
        InvalidArguments: a key other than ``lm`` and ``answers`` (naming it), a bad
            ``lm`` or ``answers``, or a transient request.
    """
    _require_dspy()
    unknown = sorted(str(key)[:40] for key in args if key not in _LM_KEYS)
    if unknown:  # {"model": …} must not quietly mean "back to the dummy LM"
        raise InvalidArguments(
            f"configure_lm: unknown key(s) {', '.join(map(repr, unknown[:5]))}; it takes "
            "'lm' (\"dummy\" or a model name) and 'answers'"
        )
    spec = args.get("lm", "dummy")
    answers = args.get("answers")
    if not isinstance(spec, str) or not spec:
        raise InvalidArguments("'lm' must be 'dummy' or a model name such as 'openai/gpt-4o-mini'")
    if answers is not None and not (
        isinstance(answers, dict)
        and all(isinstance(k, str) and isinstance(v, dict) for k, v in answers.items())
    ):
        raise InvalidArguments("'answers' must map a substring to {field: value}")
    if is_transient():
        raise InvalidArguments("a transient request (shadow copy, V3) cannot configure the LM")
    _state.lm_spec, _state.real_lm = spec, None
    if answers is not None:
        _state.answers = answers
    return {"lm": spec, "answers": len(_state.answers)}


@command(read_only=True)
def dspy_status(args: dict[str, Any]) -> dict[str, Any]:
    """Whether DSPy is here, which LM, whether it was imported before the fork, and
    what this interpreter keeps (held programs, compiled cache)."""
    return {
        "available": dspy is not None,
        "version": getattr(dspy, "__version__", None),
        "lm": _state.lm_spec,
        "imported_in_template": os.getpid() != _IMPORTED_IN_PID,
        "programs": _state.programs.count,
        "program_bytes": _state.programs.nbytes,
        "sessions": _state.programs.sessions,
        "compiled": len(_state.compiler.cache) if _state.compiler else 0,
        "compiled_bytes": _state.compiler.cache.nbytes if _state.compiler else 0,
        "compiled_limits": {"entries": MAX_COMPILED, "bytes": MAX_COMPILED_BYTES},
    }


_warm_up()
