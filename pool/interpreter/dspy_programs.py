"""The DSPy adapter: create and run DSPy programs on warm interpreters.

Imported once in the pool's template, so every forked interpreter starts with DSPy (and,
with a real LM configured, litellm) already imported — the cost a warm pool exists to
pay once. Programs are plain data (:class:`~snakepool.pool.interpreter.programs.ProgramDefinition`);
each interpreter keeps the programs created on it (V2 semantics) and a cache of compiled
programs keyed by content hash (so V3 can send definitions inline, statelessly).

The LM comes from ``SNAKEPOOL_LM``: ``dummy`` uses DSPy's own ``DummyLM`` with
deterministic answers — from the JSON mapping in ``SNAKEPOOL_LM_ANSWERS`` (substring of
an input → output fields) where one matches, else a value derived from the inputs' hash
for every output field. Anything else is a model name for ``dspy.LM`` (credentials from
the environment, as litellm reads them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import typing
from collections import OrderedDict
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
from snakepool.pool.interpreter.core import get_stats, ping
from snakepool.pool.interpreter.marks import command
from snakepool.pool.interpreter.programs import MODULES, ProgramDefinition, validate_program_id
from snakepool.pool.interpreter.standard import calculate, echo, sleep

__all__ = [
    "calculate", "configure_lm", "create_program", "delete_program", "dspy_status", "echo",
    "execute_program", "get_program_info", "get_stats", "list_programs", "ping", "sleep",
]  # fmt: skip

#: Compiled programs kept per interpreter (least recently used evicted first).
MAX_COMPILED = 256
#: Programs one interpreter holds (created on it, V2 semantics).
MAX_PROGRAMS = 10_000

_IMPORTED_IN_PID = os.getpid()  # differs from os.getpid() in a forked interpreter


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
        self.programs: dict[str, ProgramDefinition] = {}
        self.compiled: OrderedDict[str, Any] = OrderedDict()


_state = _State()

if dspy is not None and _state.lm_spec != "dummy":
    import litellm  # noqa: F401 - preloaded in the template: ~4 s no interpreter pays


def _warm_up() -> None:
    """Run one throwaway program here, in the template, before any fork.

    DSPy builds caches and lazily imports parts of itself on a program's first run;
    doing that once here means interpreters share those pages (~2.5 MB less each) and
    none pays ~10 ms on its first request.
    """
    if dspy is None:
        return
    try:
        program = dspy.Predict(dspy.Signature("question -> answer"))
        with dspy.context(lm=DummyLM({"": {"answer": "warm"}})):
            program(question="warm-up")
    except Exception as exc:  # a warm-up must never stop the adapter from loading
        # Goes to the template's stderr, which the pool logs.
        logging.getLogger(__name__).warning("DSPy warm-up run failed: %s", exc)


_warm_up()


def _require_dspy() -> Any:
    if dspy is None:
        raise ConfigError(
            f"DSPy is not installed in this interpreter's Python ({_IMPORT_ERROR}); "
            "install it with: pip install 'snakepool[dspy]'"
        )
    return dspy


def _compile(definition: ProgramDefinition) -> Any:
    """The DSPy module for a definition, from the cache when the hash is known."""
    key = definition.content_hash
    program = _state.compiled.get(key)
    if program is not None:
        _state.compiled.move_to_end(key)
        return program
    module = _require_dspy()
    try:
        signature = module.Signature(definition.signature, definition.instructions)
    except Exception as exc:  # DSPy raises ValueError/TypeError/SyntaxError for bad text
        raise InvalidArguments(f"malformed signature {definition.signature!r}: {exc}") from None
    if not signature.input_fields or not signature.output_fields:
        raise InvalidArguments(
            f"malformed signature {definition.signature!r}: "
            "needs at least one input and one output field, e.g. 'question -> answer'"
        )
    program = getattr(module, MODULES[definition.module])(signature)
    if definition.demos:
        inputs = list(signature.input_fields)
        demos = [module.Example(**demo).with_inputs(*inputs) for demo in definition.demos]
        for predictor in program.predictors():
            predictor.demos = demos
    _state.compiled[key] = program
    while len(_state.compiled) > MAX_COMPILED:
        _state.compiled.popitem(last=False)
    return program


def _fields(program: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    signature = program.predictors()[0].signature
    return dict(signature.input_fields), dict(signature.output_fields)


def _derived_value(name: str, annotation: Any, seed: str) -> Any:
    digest = hashlib.sha256(f"{seed}|{name}".encode()).hexdigest()
    number = int(digest[:8], 16)
    if annotation is bool:
        return number % 2 == 0
    if annotation is int:
        return number % 1000
    if annotation is float:
        return (number % 100_000) / 100
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is list:
        return [f"{name}-{digest[:8]}"]
    return f"{name}-{digest[:8]}"


def _dummy_answers(inputs: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """Deterministic answers: a configured mapping where it matches, derived values else."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    chosen: dict[str, Any] = {}
    for substring, answers in _state.answers.items():
        if any(substring in str(value) for value in inputs.values()):
            chosen = answers
            break
    return {
        name: chosen[name] if name in chosen else _derived_value(name, spec.annotation, text)
        for name, spec in outputs.items()
    }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "model_dump"):
        return _jsonable(value.model_dump())
    return str(value)


def _lm_for(inputs: dict[str, Any], outputs: dict[str, Any]) -> Any:
    if _state.lm_spec == "dummy":
        return DummyLM({"": _dummy_answers(inputs, outputs)})  # "" matches every prompt
    if _state.real_lm is None:
        _state.real_lm = dspy.LM(_state.lm_spec)
    return _state.real_lm


def _held(args: dict[str, Any]) -> tuple[str, ProgramDefinition]:
    program_id = validate_program_id(args.get("program_id"))
    definition = _state.programs.get(program_id)
    if definition is None:
        raise ProgramNotFound(f"no program {program_id!r} in this interpreter")
    return program_id, definition


def _describe(program_id: str | None, definition: ProgramDefinition) -> dict[str, Any]:
    program = _compile(definition)
    inputs, outputs = _fields(program)
    return {
        "program_id": program_id,
        **definition.to_dict(),
        "hash": definition.content_hash,
        "input_fields": list(inputs),
        "output_fields": list(outputs),
    }


@command()
def create_program(args: dict[str, Any]) -> dict[str, Any]:
    """Compile and keep a program: ``{"id"?, "signature", "module"?, "instructions"?,
    "demos"?}`` → ``{"program_id", "hash", "input_fields", "output_fields"}``.
    Creating an existing id replaces its definition."""
    definition = ProgramDefinition.from_args(args)
    program_id = validate_program_id(args["id"]) if args.get("id") is not None else None
    described = _describe(program_id, definition)  # compiles: bad signatures fail here
    if program_id is None:
        program_id = f"prog-{os.urandom(6).hex()}"
    if program_id not in _state.programs and len(_state.programs) >= MAX_PROGRAMS:
        raise InvalidArguments(f"this interpreter already holds {MAX_PROGRAMS} programs")
    _state.programs[program_id] = definition
    return {key: described[key] for key in ("hash", "input_fields", "output_fields")} | {
        "program_id": program_id
    }


@command(read_only=True)
def execute_program(args: dict[str, Any]) -> dict[str, Any]:
    """Run a program on ``inputs``: ``{"program_id" | "program", "inputs"}`` → output fields.

    ``program`` is a full inline definition (how the stateless V3 lane sends it).
    """
    _require_dspy()
    if args.get("program") is not None:
        definition = ProgramDefinition.from_args(args["program"])
    elif args.get("program_id") is not None:
        _, definition = _held(args)
    else:
        raise InvalidArguments("execute_program needs 'program_id' or an inline 'program'")
    inputs = args.get("inputs")
    if not isinstance(inputs, dict):
        raise InvalidArguments("'inputs' must be an object of input field -> value")
    program = _compile(definition)
    input_fields, output_fields = _fields(program)
    missing = [name for name in input_fields if name not in inputs]
    if missing:
        raise InvalidArguments(
            f"missing input field(s) {', '.join(missing)} for {definition.signature!r}"
        )
    extra = [name for name in inputs if name not in input_fields]
    if extra:
        raise InvalidArguments(
            f"unknown input field(s) {', '.join(extra)} for {definition.signature!r}"
        )
    with dspy.context(lm=_lm_for(inputs, output_fields)):
        prediction = program(**inputs)
    return {name: _jsonable(prediction[name]) for name in output_fields}


@command(read_only=True)
def list_programs(args: dict[str, Any]) -> dict[str, Any]:
    """The programs this interpreter holds."""
    return {
        "programs": [
            {
                "program_id": pid,
                "signature": d.signature,
                "module": d.module,
                "hash": d.content_hash,
            }
            for pid, d in sorted(_state.programs.items())
        ]
    }


@command()
def delete_program(args: dict[str, Any]) -> dict[str, Any]:
    """Forget a program: ``{"program_id"}``."""
    program_id, _ = _held(args)
    del _state.programs[program_id]
    return {"deleted": program_id}


@command(read_only=True)
def get_program_info(args: dict[str, Any]) -> dict[str, Any]:
    """A held program's definition, hash and fields: ``{"program_id"}``."""
    program_id, definition = _held(args)
    return _describe(program_id, definition)


@command(admin=True)
def configure_lm(args: dict[str, Any]) -> dict[str, Any]:
    """Set this interpreter's LM: ``{"lm": "dummy" | model, "answers"?: mapping}``.

    An admin command: it points the interpreter's LM credentials at any model, so it
    is off unless the pool's ``ALLOW_ADMIN_COMMANDS`` setting is on.
    """
    _require_dspy()
    spec = args.get("lm", "dummy")
    answers = args.get("answers")
    if not isinstance(spec, str) or not spec:
        raise InvalidArguments("'lm' must be 'dummy' or a model name such as 'openai/gpt-4o-mini'")
    if answers is not None and not (
        isinstance(answers, dict) and all(isinstance(v, dict) for v in answers.values())
    ):
        raise InvalidArguments("'answers' must map a substring to {field: value}")
    _state.lm_spec, _state.real_lm = spec, None
    if answers is not None:
        _state.answers = answers
    return {"lm": spec, "answers": len(_state.answers)}


@command(read_only=True)
def dspy_status(args: dict[str, Any]) -> dict[str, Any]:
    """Whether DSPy is here, which LM, and whether it was imported before the fork."""
    return {
        "available": dspy is not None,
        "version": getattr(dspy, "__version__", None),
        "lm": _state.lm_spec,
        "imported_in_template": os.getpid() != _IMPORTED_IN_PID,
        "programs": len(_state.programs),
        "compiled": len(_state.compiled),
    }
