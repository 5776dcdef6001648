"""From a program definition to a runnable DSPy module, once per content.

:class:`ProgramCompiler` checks the field names (:mod:`~snakepool.pool.interpreter.programs`
for what can never be a field, :mod:`~snakepool.pool.interpreter.dspy_names` for what
DSPy keeps), builds the module, runs it once on DSPy's ``DummyLM`` so a definition DSPy
cannot run is refused at ``create_program`` rather than on every ``execute_program``,
and keeps it in a :class:`~snakepool.pool.interpreter.program_tables.CompiledCache`
keyed by content hash (a changed definition is never served from a stale entry).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

from snakepool.errors import InvalidArguments
from snakepool.pool.interpreter.dspy_names import reserved_field_names
from snakepool.pool.interpreter.dspy_tuning import signature_from_names
from snakepool.pool.interpreter.dummy_answers import dummy_answers, input_examples
from snakepool.pool.interpreter.program_tables import CompiledCache
from snakepool.pool.interpreter.programs import (
    MODULES,
    ProgramDefinition,
    plain_signature,
    signature_field_names,
)

__all__ = ["RUN_CONTEXT", "ProgramCompiler", "prediction_outputs", "program_fields"]

#: What every run of a program in an interpreter leaves behind: nothing.
#:
#: - ``disable_history``: no LM call history. DSPy keeps one globally and one per
#:   program, up to 10 000 entries each, which nobody reads in an interpreter; kept, it
#:   grew the heap and made each ``execute_program`` slower the longer the interpreter
#:   had served (0.41 ms per call at first, 0.81 ms after 1 600 calls, with DummyLM).
#: - ``trace=None``: no trace. DSPy appends ``(predictor, inputs, prediction)`` of every
#:   call to one global list of up to 10 000 entries (for optimizers, which never run
#:   here): it kept every program ever run alive however small the compiled cache (70 MB
#:   more per distinct program with a large demo), and every input (3 000 runs of 10 KB:
#:   +31 MB).
RUN_CONTEXT: dict[str, Any] = {"disable_history": True, "trace": None}

#: Most of an exception's text quoted back in an ``InvalidArguments`` message.
MAX_QUOTED_CHARS = 300


def program_fields(program: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (input, output) fields of a compiled program: name → DSPy field info."""
    signature = program.predictors()[0].signature
    return dict(signature.input_fields), dict(signature.output_fields)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "model_dump"):
        try:
            return _jsonable(value.model_dump(mode="json"))
        except Exception:  # a model pydantic cannot dump: its text is the best we have
            return str(value)
    return str(value)


def prediction_outputs(prediction: Any, output_fields: dict[str, Any]) -> dict[str, Any]:
    """A DSPy prediction's output fields as JSON-able values (models dumped, the rest
    that JSON lacks as text)."""
    return {name: _jsonable(prediction[name]) for name in output_fields}


class ProgramCompiler:
    """Compiles definitions with one DSPy, caching by content hash.

    Args:
        dspy: The imported ``dspy`` package.
        dummy_lm: ``answers`` → a DSPy ``DummyLM`` answering them (for the trial run:
            the ``DummyLM`` class, or one reused instance, ``dspy_tuning.OneDummyLM``).
        max_entries: Most compiled programs kept.
        max_bytes: Most estimated bytes of compiled programs kept.
        overhead_bytes: Estimated memory of one compiled program besides its text.
    """

    def __init__(
        self,
        dspy: ModuleType,
        dummy_lm: Callable[[dict[str, dict[str, Any]]], Any],
        *,
        max_entries: int,
        max_bytes: int,
        overhead_bytes: int,
    ) -> None:
        self.dspy = dspy
        self.dummy_lm = dummy_lm
        self.overhead_bytes = overhead_bytes
        self.cache: CompiledCache[Any] = CompiledCache(max_entries=max_entries, max_bytes=max_bytes)
        #: Builds a plain signature from its field names, unparsed (None: this DSPy
        #: builds something else from them; see :func:`signature_from_names`).
        self.from_names = signature_from_names(dspy)

    def compile(self, definition: ProgramDefinition) -> Any:
        """The DSPy module for ``definition``, from the cache when its hash is known.

        Raises:
            InvalidArguments: a field name that cannot be (naming it), a malformed
                signature, or a definition DSPy cannot run.
        """
        key = definition.content_hash
        program = self.cache.get(key)
        if program is not None:
            return program
        program = self._build(definition)
        self._try_once(program, definition)
        self.cache.put(key, program, self.overhead_bytes + definition.memory_bytes)
        return program

    def _check_names(self, definition: ProgramDefinition) -> tuple[list[str], list[str]]:
        """The definition's (input, output) field names, once checked."""
        inputs, outputs = signature_field_names(definition.signature)
        reserved = reserved_field_names(self.dspy, definition.module)
        for name in inputs + outputs:
            if name in reserved:
                raise InvalidArguments(
                    f"field {name!r} is a name DSPy reserves ({reserved[name]}); rename it",
                    field=name,
                )
        return inputs, outputs

    def _instructions(
        self, definition: ProgramDefinition, names: tuple[list[str], list[str]]
    ) -> Any:
        """The definition's instructions, else DSPy's default text for its fields.

        Given none, DSPy builds the signature class twice: once only to read its field
        names for that default. Worked out here from the names already checked, the
        class (a pydantic model: most of a compile's time and memory) is built once.
        Without DSPy's helper (another DSPy), None: DSPy works them out itself.
        """
        if definition.instructions is not None:
            return definition.instructions
        default = getattr(self.dspy.signatures.signature, "_default_instructions", None)
        if default is None:
            return None
        return default(SimpleNamespace(input_fields=names[0], output_fields=names[1]))

    def _build(self, definition: ProgramDefinition) -> Any:
        names = self._check_names(definition)
        dspy = self.dspy
        try:
            instructions = self._instructions(definition, names)
            if self.from_names is not None and plain_signature(definition.signature):
                signature = self.from_names(*names, instructions)
            else:
                signature = dspy.Signature(definition.signature, instructions)
        except Exception as exc:  # DSPy raises ValueError/TypeError/SyntaxError for bad text
            raise InvalidArguments(f"malformed signature {definition.signature!r}: {exc}") from None
        program = getattr(dspy, MODULES[definition.module])(signature)
        if definition.demos:
            inputs = list(signature.input_fields)
            # Example(dict), not Example(**demo): a field named like a parameter stays a field.
            demos = [dspy.Example(dict(demo)).with_inputs(*inputs) for demo in definition.demos]
            for predictor in program.predictors():
                predictor.demos = demos
        return program

    def _try_once(self, program: Any, definition: ProgramDefinition) -> None:
        """Run a new program once on DummyLM: what can never run is refused now."""
        inputs, outputs = program_fields(program)
        examples = input_examples(inputs)
        try:
            lm = self.dummy_lm({"": dummy_answers(examples, outputs, {})})
            with self.dspy.context(lm=lm, **RUN_CONTEXT):
                prediction_outputs(program(**examples), outputs)
        except Exception as exc:
            raise InvalidArguments(
                f"signature {definition.signature!r} cannot run on DSPy: "
                f"{type(exc).__name__}: {str(exc)[:MAX_QUOTED_CHARS]}"
            ) from None
