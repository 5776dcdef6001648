"""The interpreter's program tables: bounded, per session, never refusing as a cache."""

from __future__ import annotations

import ast
import keyword

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.errors import InvalidArguments
from snakepool.pool.interpreter import programs
from snakepool.pool.interpreter.program_tables import CompiledCache, HeldPrograms
from snakepool.pool.interpreter.programs import (
    ProgramDefinition,
    signature_field_names,
    validate_program_id,
)


def test_compiled_cache_is_lru_bounded_by_count() -> None:
    cache: CompiledCache[str] = CompiledCache(max_entries=3, max_bytes=10_000)
    for key in "abcd":
        cache.put(key, key.upper(), 10)
    assert len(cache) == 3 and cache.get("a") is None  # the oldest went
    assert cache.get("b") == "B"  # now the most recently used
    cache.put("e", "E", 10)
    assert cache.get("c") is None and cache.get("b") == "B" and cache.nbytes == 30


def test_compiled_cache_is_bounded_by_bytes_and_never_refuses() -> None:
    cache: CompiledCache[int] = CompiledCache(max_entries=100, max_bytes=1000)
    for n in range(50):
        cache.put(f"k{n}", n, 300)  # every put succeeds
        assert cache.nbytes <= 1000 and len(cache) <= 3
    assert cache.get("k49") == 49 and cache.get("k46") is None
    cache.put("huge", -1, 5000)  # larger than the whole cache: not kept, nothing raised
    assert cache.get("huge") is None and cache.get("k49") == 49
    cache.put("k49", 49, 100)  # replacing an entry counts its new size only
    assert cache.nbytes == 700


@settings(max_examples=40, deadline=None)
@given(puts=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 400)), max_size=80))
def test_compiled_cache_bounds_hold_for_any_sequence(puts: list[tuple[int, int]]) -> None:
    cache: CompiledCache[int] = CompiledCache(max_entries=8, max_bytes=1000)
    for key, size in puts:
        cache.put(str(key), key, size)
        assert len(cache) <= 8 and cache.nbytes <= 1000
        assert cache.get(str(key)) == key  # what was just put (and fits) is there
    last_size = dict(puts)
    present = [key for key in last_size if cache.get(str(key)) is not None]
    assert cache.nbytes == sum(last_size[key] for key in present)


def test_held_programs_are_per_session() -> None:
    held: HeldPrograms[str] = HeldPrograms(max_programs=10, max_bytes=1000)
    held.put("A", "qa", "question -> answer", 10)
    held.put("B", "qa", "text -> summary", 10)
    assert held.get("A", "qa") == "question -> answer"
    assert held.get("B", "qa") == "text -> summary"
    assert held.get(None, "qa") is None  # no session sees nothing of theirs
    assert held.delete("B", "qa") and not held.delete("B", "qa")
    assert held.get("A", "qa") == "question -> answer"
    assert held.items("A") == [("qa", "question -> answer")] and held.items("B") == []
    held.put("A", "qa", "q -> a", 20)  # a replacement, not a second program
    assert (held.count, held.nbytes, held.sessions) == (1, 20, 1)


def test_a_full_interpreter_forgets_other_sessions_not_the_caller() -> None:
    held: HeldPrograms[int] = HeldPrograms(max_programs=4, max_bytes=1000)
    for n in range(3):
        held.put(f"s{n}", "p", n, 10)
    held.get("s0", "p")  # s0 used recently: s1 is now the least recently used
    held.put("s3", "p", 3, 10)
    held.put("s3", "q", 33, 10)  # 5 programs: the least recently used session goes
    assert held.get("s1", "p") is None and held.get("s0", "p") == 0
    assert held.count == 4
    for n in range(4, 40):  # many sessions later: still never refused
        held.put(f"s{n}", "p", n, 10)
    assert held.count <= 4 and held.get("s39", "p") == 39


def test_one_session_alone_over_the_limit_is_refused() -> None:
    held: HeldPrograms[int] = HeldPrograms(max_programs=2, max_bytes=100)
    held.put("A", "p1", 1, 10)
    held.put("A", "p2", 2, 10)
    with pytest.raises(InvalidArguments, match="session 'A' already holds 2 programs"):
        held.put("A", "p3", 3, 10)
    held.put("A", "p2", 22, 10)  # replacing is fine
    with pytest.raises(InvalidArguments, match="bytes"):
        held.put("B", "big", 0, 101)
    assert held.items("B") == [] and held.sessions == 1 and held.count == 2


def test_programs_outside_sessions_forget_their_oldest_and_are_never_refused() -> None:
    """Anonymous callers share one scope: none is refused for what the others created."""
    held: HeldPrograms[int] = HeldPrograms(max_programs=3, max_bytes=100)
    for n in range(10):
        held.put(None, f"p{n}", n, 10)  # refused from the 4th on before
    assert [pid for pid, _ in held.items(None)] == ["p7", "p8", "p9"]
    held.put(None, "p8", 88, 10)  # a replacement forgets nothing
    assert held.count == 3 and held.get(None, "p7") == 7
    held.put(None, "big", 0, 91)  # bytes too: the oldest go until it fits
    assert [pid for pid, _ in held.items(None)] == ["big"] and held.nbytes == 91
    with pytest.raises(InvalidArguments, match="bytes"):
        held.put(None, "huge", 0, 101)  # larger than the whole table
    held.put("A", "a", 1, 10)  # a session's programs still count with them
    held.put(None, "small", 2, 5)
    assert held.count <= 3 and held.nbytes <= 100 and held.get("A", "a") == 1


@pytest.mark.parametrize("bad", ["qa\n", "qa ", "", "x" * 129, "q/a", 7, None])
def test_program_ids_match_as_a_whole(bad: object) -> None:
    with pytest.raises(InvalidArguments, match="'program_id' must be"):
        validate_program_id(bad)


@pytest.mark.parametrize(
    ("signature", "fragment"),
    [
        ("q -> q", "field 'q' is both an input and an output"),
        ("q, q -> a", "field 'q' is listed twice among the inputs"),
        ("q -> a, b, a", "field 'a' is listed twice among the outputs"),
        ("class -> a", "field 'class' is a Python keyword"),
        ("q -> None", "field 'None' is a Python keyword"),
        ("q-1 -> a", "field 'q-1' is not a valid identifier"),
        ("1q -> a", "field '1q' is not a valid identifier"),
        ("q.b -> a", "field 'q.b' is not a valid identifier"),
        ("__init__ -> a", "field '__init__': names starting with '_' are reserved"),
        ("q -> __dict__", "field '__dict__': names starting with '_' are reserved"),
        ("_private -> a", "field '_private': names starting with '_'"),
        ("*q -> a", "fields are plain names"),
        ("q -> a -> b", "needs exactly one '->'"),
        ("q", "needs exactly one '->'"),
        ("q ->", "needs at least one input and one output"),
        ("q, , b -> a", "an empty field name"),
    ],
)
def test_names_that_can_never_be_fields(signature: str, fragment: str) -> None:
    with pytest.raises(InvalidArguments, match=fragment):
        signature_field_names(signature)


def test_field_names_are_read_as_python_reads_them() -> None:
    assert signature_field_names("context, q: list[str] -> a: dict[str, int], ok: bool") == (
        ["context", "q"], ["a", "ok"],
    )  # fmt: skip
    assert signature_field_names("field -> ünïcode") == (["field"], ["ünïcode"])


#: Names Python (and so DSPy) reads as other names (NFKC). Review finding 7: such a
#: program was created, then every run wanted its inputs under the normalised name.
NFKC_NAMES = [
    ("\uff51 -> a", "\uff51", "q"),  # fullwidth q
    ("\ufb01eld -> a", "\ufb01eld", "field"),  # the fi ligature
    ("q -> \u210c", "\u210c", "H"),  # a black-letter H
    ("e\u0301 -> a", "e\u0301", "\u00e9"),  # e + a combining acute: one composed e-acute
    ("question: str, \uff43ontext: list[str] -> answer", "\uff43ontext", "context"),
    ("q,\n \uff42 # why\n : int -> a", "\uff42", "b"),  # annotated, over lines
    ("\uff41: int = 3 -> b", "\uff41", "a"),
]


@pytest.mark.parametrize(("signature", "written", "read"), NFKC_NAMES)
def test_a_name_python_reads_as_another_is_refused_naming_it(
    signature: str, written: str, read: str
) -> None:
    with pytest.raises(InvalidArguments) as refused:
        signature_field_names(signature)
    assert refused.value.message.startswith(
        f"field {written!r} ({written!a}) is read as {read!r} (Python and DSPy normalise "
        f"names, NFKC): inputs would have to be named {read!r}: write {read!r}"
    )
    assert refused.value.data["field"] == written


def test_a_name_read_as_a_keyword_says_so() -> None:
    with pytest.raises(InvalidArguments, match=r"read as 'if' .*a Python keyword"):
        signature_field_names("\uff49\uff46 -> a")


def test_definition_hash_survives_values_json_lacks() -> None:
    definition = ProgramDefinition.from_args(
        {"signature": "q -> a", "demos": [{"q": b"bytes", "a": 2**80}]}
    )
    assert len(definition.content_hash) == 64
    with pytest.raises(InvalidArguments, match="'demos' must be a list of objects"):
        ProgramDefinition.from_args({"signature": "q -> a", "demos": [{1: "x"}]})


_IDENTIFIER = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
#: Blanks Python's tokenizer takes, and characters str.strip() takes that it refuses.
_SPACE = st.sampled_from(["", " ", "  ", "\t", "\n ", "\r", "\f", "\v", "\xa0", "\u3000", "\u2028"])


@given(names=st.lists(_IDENTIFIER, min_size=1, max_size=6), spaces=st.lists(_SPACE, min_size=14))
def test_a_plain_side_reads_as_the_parser_reads_it(names: list[str], spaces: list[str]) -> None:
    # The unparsed fast path must say exactly what the parser says, or defer to it.
    text = ",".join(f"{spaces[i]}{name}{spaces[i + 7]}" for i, name in enumerate(names))
    plain = programs.plain_names(text)
    try:
        parsed: list[str] | str = programs._parsed_side(text.strip(), text)
    except InvalidArguments as refused:
        parsed = refused.message
    if plain is not None:  # read unparsed: exactly what Python's parser reads
        assert plain == parsed == names
        assert [a.arg for a in ast.parse(f"def f({text}): pass").body[0].args.args] == names  # type: ignore[attr-defined]
    else:  # deferred to the parser: a keyword, a name twice, or a blank it may refuse
        assert (
            len(set(names)) < len(names)
            or any(keyword.iskeyword(n) for n in names)
            or any(c in text for c in "\v\xa0\u3000\u2028")
        )
    if isinstance(parsed, list):
        assert programs._side(text, text) == parsed


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("question, context", ["question", "context"]),
        ("a,b", ["a", "b"]),
        ("a, a", None),  # the parser's own message: "duplicate argument"
        ("a, class", None),  # a keyword
        ("a: int", None),  # a type
        ("a,", None),  # a trailing comma
        ("a = 1", None),
        ("caf\u00e9", None),  # not ASCII: NFKC is the parser's business
        ("a # note", None),
        ("a,\xa0b", None),  # a no-break space: the parser refuses it, so does DSPy
        ("a,\r\n\tb\f", ["a", "b"]),  # blanks the tokenizer takes
        ("", None),
    ],
)
def test_what_counts_as_plain(text: str, plain: list[str] | None) -> None:
    assert programs.plain_names(text) == plain


def test_a_plain_signature_has_two_plain_sides() -> None:
    assert programs.plain_signature("question, context -> answer")
    assert not programs.plain_signature("question -> answer: int")
    assert not programs.plain_signature("question answer")
    assert not programs.plain_signature("a -> b -> c")
