"""Program definitions as plain data: what a DSPy program is, without DSPy.

A definition is a signature (``"question -> answer"``), a module kind, optional
instructions and optional demos. It is JSON-able, so it can live in the SessionStore and
travel inline with a request; its content hash keys the interpreters' compiled-program
caches, so a changed definition can never be served from a stale cache entry.

:func:`signature_field_names` reads a signature's field names the way DSPy does (as
Python parameters) and refuses, naming the field, what can never be a field: a
non-identifier, a keyword, a name starting with ``_``, a name listed twice or on both
sides, a name Python would read as another (NFKC: a fullwidth ``q`` is ``q``, the
ligature ``fi`` is ``fi``; a program created with one would then want its inputs under a
name the caller never wrote).
The names DSPy keeps for itself are checked where DSPy is
(:mod:`~snakepool.pool.interpreter.dspy_names`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import keyword
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from snakepool.errors import InvalidArguments

__all__ = [
    "MODULES",
    "PROGRAM_ID",
    "ProgramDefinition",
    "deep_sizeof",
    "signature_field_names",
    "validate_program_id",
]

#: Module kinds a definition may name, and the DSPy class each becomes.
MODULES = {"predict": "Predict", "chain_of_thought": "ChainOfThought"}
#: Program ids: the same alphabet as session ids (``snakepool.config.ids``, which this
#: side cannot import). Always ``fullmatch``: ``$`` would let a final newline through.
PROGRAM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
#: Limits that keep a definition a definition, not a payload.
MAX_SIGNATURE_CHARS = 2000
MAX_INSTRUCTIONS_CHARS = 20_000
MAX_DEMOS = 64


@dataclass(frozen=True)
class ProgramDefinition:
    """A DSPy program as data."""

    signature: str
    module: str = "predict"
    instructions: str | None = None
    demos: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ProgramDefinition:
        """Validate the fields of a ``create_program`` request or an inline ``program``.

        Raises:
            InvalidArguments: naming the field that is wrong.
        """
        if not isinstance(args, dict):
            raise InvalidArguments("a program definition must be an object")
        signature = args.get("signature")
        if not isinstance(signature, str) or not signature.strip():
            raise InvalidArguments("'signature' is required, e.g. \"question -> answer\"")
        if len(signature) > MAX_SIGNATURE_CHARS:
            raise InvalidArguments(f"'signature' is longer than {MAX_SIGNATURE_CHARS} characters")
        module = args.get("module", "predict")
        if not isinstance(module, str) or module not in MODULES:
            raise InvalidArguments(
                f"unknown module {module!r}; expected one of {', '.join(sorted(MODULES))}"
            )
        instructions = args.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise InvalidArguments("'instructions' must be a string")
        if instructions is not None and len(instructions) > MAX_INSTRUCTIONS_CHARS:
            raise InvalidArguments(
                f"'instructions' is longer than {MAX_INSTRUCTIONS_CHARS} characters"
            )
        demos = args.get("demos") or []
        if not isinstance(demos, list) or not all(
            isinstance(d, dict) and all(isinstance(k, str) for k in d) for d in demos
        ):
            raise InvalidArguments("'demos' must be a list of objects (field -> value)")
        if len(demos) > MAX_DEMOS:
            raise InvalidArguments(f"at most {MAX_DEMOS} demos")
        return cls(signature.strip(), module, instructions or None, tuple(demos))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form (what the SessionStore keeps)."""
        return {
            "signature": self.signature,
            "module": self.module,
            "instructions": self.instructions,
            "demos": list(self.demos),
        }

    @cached_property
    def canonical(self) -> str:
        """The canonical JSON form (sorted keys, no spaces); what the hash is of."""
        # default=repr: demos may hold what crossed the wire but JSON lacks (bytes).
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=repr)

    @cached_property
    def memory_bytes(self) -> int:
        """What the definition's objects take in this interpreter (``sys.getsizeof`` of each).

        Not the length of its JSON: a demo of many small values costs far more as Python
        objects (``[{}, {}, …]``: 3 bytes of JSON, 72 of memory per element), and a
        table bounded by JSON length held 25 times its limit.
        """
        return deep_sizeof(self.to_dict())

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON form: equal definitions, equal hashes."""
        return hashlib.sha256(self.canonical.encode("utf-8", "surrogatepass")).hexdigest()


def deep_sizeof(value: Any) -> int:
    """``sys.getsizeof`` of ``value`` and of every object inside its dicts, lists and
    tuples, each object counted once; iterative, so any depth is fine."""
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def validate_program_id(value: Any) -> str:
    """Check a program id.

    Raises:
        InvalidArguments: not 1-128 characters of ``[A-Za-z0-9_.:-]`` (a trailing newline
            included: the whole string must match).
    """
    if not isinstance(value, str) or PROGRAM_ID.fullmatch(value) is None:
        raise InvalidArguments("'program_id' must be 1-128 characters of A-Z a-z 0-9 _ . : -")
    return value


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BLANKS = " \t\n\r\f"


def _top_level_pieces(text: str) -> list[str]:
    """``text`` split at the commas outside brackets (``a: dict[str, int], b``)."""
    pieces, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            pieces.append(text[start:index])
            start = index + 1
    pieces.append(text[start:])
    return [piece.strip() for piece in pieces]


def _explain_syntax_error(text: str, exc: SyntaxError) -> str:
    for piece in _top_level_pieces(text):
        name = re.split(r"[:=]", piece, maxsplit=1)[0].strip()
        if not name:
            return "an empty field name (a stray comma?)"
        if keyword.iskeyword(name):
            return f"field {name!r} is a Python keyword"
        if not name.isidentifier():
            return f"field {name!r} is not a valid identifier (letters, digits and _)"
    return str(exc.msg)


def plain_names(text: str) -> list[str] | None:
    """The field names of one side of a signature written as plain ASCII identifiers
    (``a, b``: no type, no keyword, none twice), else None.

    Python's parser reads such a side as exactly these names (ASCII names are their own
    NFKC form), so it needs no parsing: the common case, parsed by no one (an
    ``ast.parse`` costs ~50 µs and, in a forked interpreter, ~0.1 MB of pages copied
    from the template; issue 10).
    """
    # Only what Python's tokenizer takes for blanks: str.strip() would also remove a
    # no-break space or U+3000, which the parser refuses ("invalid non-printable
    # character"), and DSPy's own parse with it.
    names = [piece.strip(_BLANKS) for piece in text.split(",")]
    if len(set(names)) != len(names):
        return None  # the parser's "duplicate argument" message, not ours
    for name in names:
        if _PLAIN_NAME.fullmatch(name) is None or keyword.iskeyword(name):
            return None
    return names


def plain_signature(signature: str) -> bool:
    """Whether both sides of ``signature`` are :func:`plain_names`."""
    left, arrow, right = signature.partition("->")
    return bool(arrow) and plain_names(left) is not None and plain_names(right) is not None


def _side(text: str, signature: str) -> list[str]:
    text = text.strip()
    if not text:
        return []
    plain = plain_names(text)
    if plain is not None:
        return plain
    return _parsed_side(text, signature)


def _parsed_side(text: str, signature: str) -> list[str]:
    """The field names of a non-empty side, read by Python's parser as DSPy does."""
    try:
        parsed = ast.parse(f"def f({text}): pass").body[0]
    except SyntaxError as exc:
        reason = _explain_syntax_error(text, exc)
        raise InvalidArguments(f"malformed signature {signature!r}: {reason}") from None
    assert isinstance(parsed, ast.FunctionDef)
    params = parsed.args
    if params.posonlyargs or params.kwonlyargs or params.vararg or params.kwarg:
        raise InvalidArguments(
            f"malformed signature {signature!r}: fields are plain names ('*', '**' and '/' "
            "are not allowed)"
        )
    source = f"def f({text}): pass"
    for arg in params.args:
        written = _as_written(source, arg)
        if written != arg.arg:
            fix = (
                "that is a Python keyword: choose another name"
                if keyword.iskeyword(arg.arg)
                else f"inputs would have to be named {arg.arg!r}: write {arg.arg!r}"
            )
            raise InvalidArguments(
                f"field {written!r} ({written!a}) is read as {arg.arg!r} (Python and DSPy "
                f"normalise names, NFKC): {fix}",
                field=written,
            )
    return [arg.arg for arg in params.args]


def _as_written(source: str, arg: ast.arg) -> str:
    """A parameter's name as the signature spells it.

    The parser hands back names NFKC-normalised (``arg.arg``); the source segment keeps
    them as typed. The segment runs to the end of the annotation, if any: the name is what
    comes before it, without the ``:``, blanks or a comment.
    """
    segment = ast.get_source_segment(source, arg) or arg.arg
    if arg.annotation is not None:
        annotation = ast.get_source_segment(source, arg.annotation) or ""
        segment = segment[: len(segment) - len(annotation)]
    name = segment.split("#", 1)[0].strip().rstrip(":").strip()
    if unicodedata.normalize("NFKC", name) != arg.arg:  # not where we looked: trust the parser
        return arg.arg
    return name


def signature_field_names(signature: str) -> tuple[list[str], list[str]]:
    """The input and output field names of ``signature``, as DSPy will read them.

    Raises:
        InvalidArguments: naming the field: not an identifier, a Python keyword, a
            name starting with ``_`` (pydantic and DSPy keep those), a name listed
            twice, on both sides, a name whose NFKC form differs from how it is written
            (it would be read as another), or no field on a side.
    """
    if signature.count("->") != 1:
        raise InvalidArguments(
            f"malformed signature {signature!r}: needs exactly one '->' between inputs "
            "and outputs, e.g. 'question -> answer'"
        )
    left, right = signature.split("->")
    inputs, outputs = _side(left, signature), _side(right, signature)
    if not inputs or not outputs:
        raise InvalidArguments(
            f"malformed signature {signature!r}: "
            "needs at least one input and one output field, e.g. 'question -> answer'"
        )
    seen: dict[str, str] = {}
    for name, side in [(n, "input") for n in inputs] + [(n, "output") for n in outputs]:
        if name.startswith("_"):
            raise InvalidArguments(
                f"field {name!r}: names starting with '_' are reserved (pydantic and DSPy)"
            )
        if name in seen:
            twice = seen[name] == side
            where = f"listed twice among the {side}s" if twice else "both an input and an output"
            raise InvalidArguments(f"field {name!r} is {where}; each field needs its own name")
        seen[name] = side
    return inputs, outputs
