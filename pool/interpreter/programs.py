"""Program definitions as plain data: what a DSPy program is, without DSPy.

A definition is a signature (``"question -> answer"``), a module kind, optional
instructions and optional demos. It is JSON-able, so it can live in the SessionStore and
travel inline with a request; its content hash keys the interpreters' compiled-program
caches, so a changed definition can never be served from a stale cache entry.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from snakepool.errors import InvalidArguments

__all__ = ["MODULES", "PROGRAM_ID", "ProgramDefinition"]

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
        if module not in MODULES:
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
        if not isinstance(demos, list) or not all(isinstance(d, dict) for d in demos):
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

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON form: equal definitions, equal hashes."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def validate_program_id(value: Any) -> str:
    """Check a program id.

    Raises:
        InvalidArguments: not 1-128 characters of ``[A-Za-z0-9_.:-]``.
    """
    if not isinstance(value, str) or PROGRAM_ID.fullmatch(value) is None:
        raise InvalidArguments("'program_id' must be 1-128 characters of A-Z a-z 0-9 _ . : -")
    return value
