"""Real DSPy programs through the pool, offline, with DSPy's DummyLM."""

from __future__ import annotations

import json
import keyword
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakepool.errors import ConfigError, InvalidArguments, ProgramNotFound
from snakepool.pool.interpreter.programs import ProgramDefinition
from tests.integration.conftest import PoolFactory

pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

ADAPTER = "snakepool.pool.interpreter.dspy_programs"
QA = {"signature": "question -> answer"}


def test_interpreters_start_with_dspy_imported(make_pool: PoolFactory) -> None:
    pool = make_pool(size=2, adapter=ADAPTER)
    status = pool.execute("dspy_status")
    assert status["available"] and status["lm"] == "dummy"
    assert status["imported_in_template"]  # paid once in the template, inherited by fork
    assert status["compiled"] == 0  # the template's warm-up programs are not kept
    assert pool.execute("calculate", {"expression": "1+1"}) == {"result": 2}  # builtins too


_WARM_UP_CHECK = """
import json
from snakepool.pool.interpreter import code_packing, dspy_programs as adapter
packed = [c for c in code_packing._originals if c.co_name == "execute_program"]
print(json.dumps({
    "lm": adapter._state.lm_spec,
    "real_lm": adapter._state.real_lm is not None,
    "compiled": len(adapter._state.compiler.cache),
    "packed": len(code_packing._originals),
    "execute_program_packed": bool(packed) and adapter.execute_program.__code__ is not packed[0],
}))
"""


def test_the_template_warm_up_packs_the_program_path_and_never_calls_a_real_lm() -> None:
    # A model name nothing can reach: the warm-up must run on the dummy LM all the same.
    env = {**os.environ, "SNAKEPOOL_LM": "openai/no-such-model", "OPENAI_API_KEY": "unused"}
    argv = [sys.executable, "-c", _WARM_UP_CHECK]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=50, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"warm-up run failed" not in done.stderr
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert report == {
        "lm": "openai/no-such-model",  # put back after the warm-up
        "real_lm": False,  # never built, so never called
        "compiled": 0,
        "packed": report["packed"],
        "execute_program_packed": True,
    }
    assert report["packed"] > 100  # the code of a DSPy compile and run, not a handful


def test_create_then_execute_in_one_interpreter(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, adapter=ADAPTER)
    created = pool.execute("create_program", {"id": "qa", **QA})
    assert created["program_id"] == "qa"
    assert (created["input_fields"], created["output_fields"]) == (["question"], ["answer"])
    first = pool.execute("execute_program", {"program_id": "qa", "inputs": {"question": "Why?"}})
    again = pool.execute("execute_program", {"program_id": "qa", "inputs": {"question": "Why?"}})
    other = pool.execute("execute_program", {"program_id": "qa", "inputs": {"question": "How?"}})
    assert set(first) == {"answer"} and first["answer"]  # non-empty
    assert first == again and first != other  # deterministic, and depends on the inputs
    listed = pool.execute("list_programs")["programs"]
    assert [p["program_id"] for p in listed] == ["qa"]
    info = pool.execute("get_program_info", {"program_id": "qa"})
    assert info["signature"] == "question -> answer" and info["hash"] == created["hash"]
    assert pool.execute("delete_program", {"program_id": "qa"}) == {"deleted": "qa"}
    with pytest.raises(ProgramNotFound):
        pool.execute("execute_program", {"program_id": "qa", "inputs": {"question": "Why?"}})


def test_chain_of_thought_and_typed_outputs(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, adapter=ADAPTER)
    created = pool.execute(
        "create_program",
        {"signature": "question -> answer: int, confident: bool", "module": "chain_of_thought",
         "instructions": "Answer with a number."},
    )  # fmt: skip
    assert created["program_id"].startswith("prog-")
    assert created["output_fields"] == ["reasoning", "answer", "confident"]
    result = pool.execute(
        "execute_program", {"program_id": created["program_id"], "inputs": {"question": "2+2?"}}
    )
    assert isinstance(result["reasoning"], str) and result["reasoning"]
    assert isinstance(result["answer"], int) and isinstance(result["confident"], bool)


def test_inline_definitions_on_any_interpreter(make_pool: PoolFactory) -> None:
    pool = make_pool(size=2, adapter=ADAPTER)
    program = {"signature": "context, question -> answer", "demos": [
        {"context": "sky", "question": "colour?", "answer": "blue"}]}  # fmt: skip
    inputs = {"context": "grass", "question": "colour?"}
    pids, results = set(), []
    for _ in range(12):
        results.append(pool.execute("execute_program", {"program": program, "inputs": inputs}))
        pids.add(pool.execute("ping")["pid"])
    assert len({json.dumps(r) for r in results}) == 1 and results[0]["answer"]
    # Nothing was created anywhere: inline programs need no state in the interpreter.
    assert all(pool.execute("list_programs")["programs"] == [] for _ in range(4))


def test_inline_runs_land_on_both_interpreters(make_pool: PoolFactory) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pool = make_pool(size=2, adapter=ADAPTER)
    program = {**QA, "module": "predict"}

    def run(i: int) -> int:
        pool.execute("execute_program", {"program": program, "inputs": {"question": str(i)}})
        return pool.execute("sleep", {"seconds": 0.05}) and pool.execute("dspy_status")["compiled"]

    with ThreadPoolExecutor(max_workers=2) as executor:
        compiled = list(executor.map(run, range(8)))
    assert all(c >= 1 for c in compiled)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"signature": "question answer"}, "malformed signature"),
        ({"signature": "question ->"}, "needs at least one input and one output"),
        ({"signature": "q: notatype -> a"}, "malformed signature"),
        ({"signature": ""}, "'signature' is required"),
        ({**QA, "module": "react"}, "unknown module 'react'"),
        ({**QA, "demos": "nope"}, "'demos' must be a list"),
        ({**QA, "id": "bad id!"}, "'program_id' must be"),
    ],
)
def test_bad_definitions(make_pool: PoolFactory, args: dict, fragment: str) -> None:
    pool = make_pool(size=1, adapter=ADAPTER)
    pid = pool.interpreter_pids()[0]
    with pytest.raises(InvalidArguments, match=fragment):
        pool.execute("create_program", args)
    if "id" not in args:  # the same definition sent inline is refused the same way
        with pytest.raises(InvalidArguments, match=fragment):
            pool.execute("execute_program", {"program": args, "inputs": {"question": "x"}})
    assert pool.interpreter_pids() == [pid]  # the interpreter stays up


def test_bad_inputs(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, adapter=ADAPTER)
    pid = pool.interpreter_pids()[0]
    pool.execute("create_program", {"id": "qa", **QA})
    cases = [
        ({"program_id": "qa", "inputs": {}}, "missing input field\\(s\\) question"),
        ({"program_id": "qa", "inputs": {"question": "x", "extra": 1}}, "unknown input field"),
        ({"program_id": "qa", "inputs": "question"}, "'inputs' must be an object"),
        ({"inputs": {"question": "x"}}, "needs 'program_id' or an inline 'program'"),
    ]
    for args, fragment in cases:
        with pytest.raises(InvalidArguments, match=fragment):
            pool.execute("execute_program", args)
    with pytest.raises(ProgramNotFound, match="no program 'missing'"):
        pool.execute("execute_program", {"program_id": "missing", "inputs": {"question": "x"}})
    assert pool.interpreter_pids() == [pid]


def test_changed_definition_is_never_served_stale(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, adapter=ADAPTER)
    first = pool.execute("create_program", {"id": "p", **QA})
    result = pool.execute("execute_program", {"program_id": "p", "inputs": {"question": "q"}})
    assert set(result) == {"answer"}
    second = pool.execute("create_program", {"id": "p", "signature": "question -> verdict"})
    assert second["hash"] != first["hash"]
    result = pool.execute("execute_program", {"program_id": "p", "inputs": {"question": "q"}})
    assert set(result) == {"verdict"}
    # Inline: same definition reuses the compiled program, a changed one does not.
    inline = {"signature": "topic -> summary", "instructions": "Be short."}
    before = pool.execute("dspy_status")["compiled"]
    pool.execute("execute_program", {"program": inline, "inputs": {"topic": "t"}})
    pool.execute("execute_program", {"program": inline, "inputs": {"topic": "t"}})
    assert pool.execute("dspy_status")["compiled"] == before + 1
    changed = {**inline, "signature": "topic -> headline"}
    result = pool.execute("execute_program", {"program": changed, "inputs": {"topic": "t"}})
    assert set(result) == {"headline"}
    assert pool.execute("dspy_status")["compiled"] == before + 2


def test_configured_answers(make_pool: PoolFactory, tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"capital of France": {"answer": "Paris"}}))
    pool = make_pool(size=1, adapter=ADAPTER, lm_answers=str(answers), allow_admin_commands=True)
    pool.execute("create_program", {"id": "qa", **QA})
    hit = pool.execute(
        "execute_program",
        {"program_id": "qa", "inputs": {"question": "What is the capital of France?"}},
    )
    assert hit == {"answer": "Paris"}
    miss = pool.execute("execute_program", {"program_id": "qa", "inputs": {"question": "Other?"}})
    assert miss["answer"] and miss["answer"] != "Paris"
    assert pool.execute("configure_lm", {"lm": "dummy", "answers": {"Other": {"answer": "42"}}})
    assert pool.execute(
        "execute_program", {"program_id": "qa", "inputs": {"question": "Other?"}}
    ) == {"answer": "42"}


def test_bad_answers_file_fails_the_start(make_pool: PoolFactory, tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text("[1, 2]")
    pool = make_pool(size=1, adapter=ADAPTER, lm_answers=str(answers), start=False)
    with pytest.raises(ConfigError, match="expected"):
        pool.start()


def test_without_dspy_the_commands_say_how_to_install(make_pool: PoolFactory) -> None:
    shim = Path(__file__).resolve().parents[1] / "fixtures" / "no_dspy"
    pool = make_pool(size=1, adapter=ADAPTER, env={**os.environ, "PYTHONPATH": str(shim)})
    assert pool.execute("dspy_status")["available"] is False
    with pytest.raises(ConfigError, match=r"pip install 'snakepool\[dspy\]'"):
        pool.execute("create_program", QA)
    with pytest.raises(ConfigError, match="not installed"):
        pool.execute("execute_program", {"program": QA, "inputs": {"question": "x"}})
    assert pool.execute("ping")["pong"]  # the interpreter itself is fine


def test_the_default_adapter_runs_programs_too(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1)  # snakepool.pool.interpreter.builtin: DSPy imported on first use
    assert pool.execute("dspy_status")["imported_in_template"] is False
    pool.execute("create_program", {"id": "qa", **QA})
    result = pool.execute("execute_program", {"program_id": "qa", "inputs": {"question": "x"}})
    assert result["answer"]
    assert pool.execute("calculate", {"expression": "1+1"}) == {"result": 2}


# ------------------------------------------------------- field names DSPy reserves

RESERVED = ["config", "lm", "demos", "signature", "instructions", "new_signature",
            "prediction", "completions", "self", "instance", "fields", "input_fields",
            "output_fields", "model_config", "model_dump"]  # fmt: skip


def test_names_dspy_reserves_are_refused_at_create(make_pool: PoolFactory) -> None:
    """Issue 8.5: ``config -> answer`` was created, then every execute failed."""
    pool = make_pool(size=1, adapter=ADAPTER)
    for name in RESERVED:
        for signature in (f"{name} -> answer", f"q -> {name}", f"q, {name} -> answer"):
            with pytest.raises(
                InvalidArguments, match=f"field '{name}' is a name DSPy reserves"
            ) as e:
                pool.execute("create_program", {"id": "p", "signature": signature})
            assert "NoneType" not in e.value.message and e.value.data["field"] == name
            inline = {"program": {"signature": signature}, "inputs": {}}
            with pytest.raises(InvalidArguments, match=f"field '{name}'"):  # inline: the same
                pool.execute("execute_program", inline)
    assert pool.execute("list_programs")["programs"] == []


def test_chain_of_thought_keeps_reasoning_predict_does_not(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, adapter=ADAPTER)
    cot = {"signature": "reasoning -> answer", "module": "chain_of_thought"}
    with pytest.raises(InvalidArguments, match="field 'reasoning' is a name DSPy reserves"):
        pool.execute("create_program", cot)
    created = pool.execute("create_program", {**cot, "module": "predict", "id": "r"})
    result = pool.execute("execute_program", {"program_id": "r", "inputs": {"reasoning": "x"}})
    assert created["input_fields"] == ["reasoning"] and set(result) == {"answer"}


def test_names_that_can_never_be_fields(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, adapter=ADAPTER)
    cases = [
        ("class -> answer", "field 'class' is a Python keyword"),
        ("q-1 -> answer", "field 'q-1' is not a valid identifier"),
        ("__init__ -> answer", "field '__init__': names starting with '_' are reserved"),
        ("q -> q", "field 'q' is both an input and an output"),
        ("q, q -> a", "field 'q' is listed twice among the inputs"),
        ("history: dspy.History -> a", "cannot run on DSPy"),  # JSON cannot carry a History
    ]
    for signature, fragment in cases:
        with pytest.raises(InvalidArguments, match=fragment):
            pool.execute("create_program", {"signature": signature})


@pytest.mark.parametrize(
    ("signature", "written", "read"),
    [
        ("\uff51 -> a", "\uff51", "q"),
        ("\ufb01 -> a", "\ufb01", "fi"),
        ("q -> \u210c", "\u210c", "H"),
    ],
)
def test_a_name_read_as_another_is_refused_at_create_and_inline(
    make_pool: PoolFactory, signature: str, written: str, read: str
) -> None:
    """Review finding 7: a fullwidth ``q -> a`` was created, then every run wanted ``q``."""
    pool = make_pool(size=1, adapter=ADAPTER)
    expected = f"field {written!r} ({written!a}) is read as {read!r}"
    with pytest.raises(InvalidArguments) as created:
        pool.execute("create_program", {"id": "p", "signature": signature})
    assert created.value.message.startswith(expected)
    with pytest.raises(InvalidArguments) as inline:
        pool.execute("execute_program", {"program": {"signature": signature}, "inputs": {}})
    assert inline.value.message.startswith(expected)
    assert pool.execute("list_programs") == {"programs": []}


def test_configure_lm_refuses_keys_it_does_not_take(make_pool: PoolFactory) -> None:
    """Review finding 11: ``{"model": …}`` silently reset the model to ``dummy``."""
    pool = make_pool(size=1, adapter=ADAPTER, allow_admin_commands=True)
    pool.execute("configure_lm", {"lm": "openai/gpt-4o-mini"})
    for args in ({"model": "openai/gpt-4o"}, {"lm": "dummy", "answer": {}}, {"LM": "dummy"}):
        with pytest.raises(InvalidArguments) as refused:
            pool.execute("configure_lm", args)
        unknown = next(key for key in args if key not in ("lm", "answers"))
        assert refused.value.message == (
            f"configure_lm: unknown key(s) {unknown!r}; it takes 'lm' (\"dummy\" or a model "
            "name) and 'answers'"
        )
    assert pool.execute("dspy_status")["lm"] == "openai/gpt-4o-mini"  # nothing changed
    assert pool.execute("configure_lm", {"lm": "dummy"}) == {"lm": "dummy", "answers": 0}


def test_names_dspy_uses_elsewhere_still_work(make_pool: PoolFactory) -> None:
    """Module and prediction attributes never meet field names: not reserved."""
    pool = make_pool(size=1, adapter=ADAPTER)
    signature = "history, callbacks, schema, base -> keys, items: list[int], copy: dict[str, int]"
    demos = [{"base": "b", "history": "h"}]
    created = pool.execute("create_program", {"id": "p", "signature": signature, "demos": demos})
    inputs = {name: "v" for name in created["input_fields"]}
    result = pool.execute("execute_program", {"program_id": "p", "inputs": inputs})
    assert set(result) == {"keys", "items", "copy"}
    assert all(isinstance(n, int) for n in result["items"]) and isinstance(result["copy"], dict)


_identifier = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
_field_name = st.one_of(
    _identifier, _identifier, st.sampled_from([*RESERVED, "reasoning", "history", "class",
    "None", "_x", "__dunder__", "1st", "a-b", "é", "ﬁeld", "\uff51", "\u210c", "match",
    "type"]),
)  # fmt: skip
_annotation = st.sampled_from(["", ": str", ": int", ": float", ": bool", ": list[str]",
                               ": list[int]", ": dict[str, int]", ": Optional[int]",
                               ": Literal['x', 'y']", ": tuple[int, str]"])  # fmt: skip
_fields = st.lists(st.tuples(_field_name, _annotation), min_size=1, max_size=3)


@pytest.mark.timeout(120)
def test_a_created_program_always_runs(make_pool: PoolFactory) -> None:
    """Over generated signatures: create succeeds and execute returns exactly the output
    fields, or create is refused with InvalidArguments — never a program that fails later."""
    pool = make_pool(size=1, adapter=ADAPTER)

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(inputs=_fields, outputs=_fields, module=st.sampled_from(["predict", "chain_of_thought"]))
    def check(inputs: list[tuple[str, str]], outputs: list[tuple[str, str]], module: str) -> None:
        signature = " -> ".join(", ".join(n + a for n, a in side) for side in (inputs, outputs))
        try:
            created = pool.execute("create_program", {"signature": signature, "module": module})
        except InvalidArguments:
            return
        # Named as the caller wrote them, not as the program reports them: a name that
        # only works after normalisation is a program that never runs for its caller.
        values = {name: "hello" for name, _annotation in inputs}
        run = {"program_id": created["program_id"], "inputs": values}
        result = list(pool.execute("execute_program", run))
        assert result == created["output_fields"]  # chain_of_thought adds "reasoning"
        assert all(name in result for name, _annotation in outputs)  # as written
        pool.execute("delete_program", {"program_id": created["program_id"]})

    check()
    assert pool.execute("ping")["pong"]


def test_runs_keep_no_lm_history() -> None:
    """An interpreter serves for hours: DSPy's LM call history (global and per program,
    up to 10 000 entries each) grew its heap and slowed every later call; none is kept."""
    import dspy.clients.base_lm as base_lm

    from snakepool.pool.interpreter import dspy_programs

    request = {"program": {**QA, "instructions": "History test."}, "inputs": {"question": "Q?"}}
    before = len(base_lm.GLOBAL_HISTORY)
    for _ in range(5):
        assert dspy_programs.execute_program(request)["answer"]
    program = dspy_programs._compile(dspy_programs._definition(request))
    assert len(base_lm.GLOBAL_HISTORY) == before
    assert all(len(p.history) == 0 for p in [program, *program.predictors()])


def test_compiling_builds_no_pydantic_validator() -> None:
    """A program's signature is a pydantic model DSPy never validates: its validator
    and serializer are not built at compile (time, and pages copied from the template
    in every interpreter); the program runs all the same, typed outputs included."""
    from snakepool.pool.interpreter import dspy_programs

    program = {
        "signature": "text: str, n: int -> title, tags: list[str]",
        "module": "chain_of_thought",
        "instructions": "Validator test.",
    }
    request = {"program": program, "inputs": {"text": "t", "n": 2}}
    result = dspy_programs.execute_program(request)
    assert isinstance(result["tags"], list) and result["title"]
    signature = dspy_programs._compile(dspy_programs._definition(request)).predictors()[0].signature
    assert signature.__pydantic_complete__ is False
    assert signature.model_json_schema()["properties"]  # built on first use, if ever


def test_a_run_builds_no_type_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    """DSPy serializes every field value and validates every parsed output through a
    ``pydantic.TypeAdapter`` of its type: built once per type, not on every run. (A
    structured output type's JSON schema, written into the prompt, is still built by
    DSPy on every run.)"""
    import pydantic

    from snakepool.pool.interpreter import dspy_programs

    program = {"signature": "text: str, n: int -> title, count: int", "instructions": "TA."}
    request = {"program": program, "inputs": {"text": "t", "n": 2}}
    dspy_programs.execute_program(request)  # compiles; this run may build what is new
    built: list[object] = []
    original = pydantic.TypeAdapter.__init__

    def counting(self: object, *args: object, **kwargs: object) -> None:
        built.append(args[0] if args else None)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pydantic.TypeAdapter, "__init__", counting)
    for _ in range(3):
        assert isinstance(dspy_programs.execute_program(request)["count"], int)
    assert built == []


@pytest.mark.parametrize(
    "signature",
    ["question -> answer", "text: str, n: int -> title, tags: list[str]", "a, b,c -> d"],
)
def test_default_instructions_are_dspys_and_the_signature_is_built_once(
    monkeypatch: pytest.MonkeyPatch, signature: str
) -> None:
    """Without instructions a program gets DSPy's default text, as ``dspy.Signature``
    gives it; the signature class is built once (DSPy alone builds it twice)."""
    import dspy
    import dspy.signatures.signature as signatures

    from snakepool.pool.interpreter import dspy_programs

    expected = dspy.Signature(signature).instructions
    built: list[str] = []
    original = signatures.create_model

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(signatures, "create_model", counting)
    program = dspy_programs._state.compiler._build(
        ProgramDefinition.from_args({"signature": signature})
    )
    assert program.predictors()[0].signature.instructions == expected
    assert len(built) == 1


_FIELD = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda name: (
        name not in {"signature", "demos", "config", "lm", "instructions", "fields"}
        and not keyword.iskeyword(name)
    )
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(_FIELD, min_size=2, max_size=6, unique=True),
    split=st.integers(1, 5),
    instructions=st.none() | st.text(min_size=1, max_size=40),
)
def test_a_plain_signature_built_from_its_names_is_the_one_its_text_gives(
    names: list[str], split: int, instructions: str | None
) -> None:
    """DSPy parses a signature's text with Python's parser, ~0.1 MB of template pages
    copied in each interpreter; a plain one is built from its names, to the same class."""
    import dspy

    from snakepool.pool.interpreter import dspy_programs

    assert dspy_programs._state.compiler is not None
    build = dspy_programs._state.compiler.from_names
    assert build is not None  # this DSPy passed the check
    split = min(split, len(names) - 1)
    inputs, outputs = names[:split], names[split:]
    text = f"{', '.join(inputs)} -> {', '.join(outputs)}"
    built, parsed = build(inputs, outputs, instructions), dspy.Signature(text, instructions)
    assert (built.__name__, built.signature, built.instructions, repr(built.fields)) == (
        parsed.__name__, parsed.signature, parsed.instructions, repr(parsed.fields),
    )  # fmt: skip


def test_only_plain_signatures_skip_the_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    import ast

    from snakepool.pool.interpreter import dspy_programs

    parsed: list[str] = []
    original = ast.parse

    def counting(source: Any, *args: Any, **kwargs: Any) -> Any:
        parsed.append(source)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(ast, "parse", counting)
    for signature, parses in [("plain_q, plain_c -> plain_a", 0), ("typed_q: int -> typed_a", 3)]:
        parsed.clear()
        inputs = {"plain_q": "1", "plain_c": "2"} if parses == 0 else {"typed_q": 1}
        request = {"program": {"signature": signature}, "inputs": inputs}
        assert dspy_programs.execute_program(request)
        assert len(parsed) == parses, parsed  # typed: our typed side, DSPy both sides


def test_another_dspy_is_given_the_text() -> None:
    from types import SimpleNamespace

    import dspy

    from snakepool.pool.interpreter.dspy_tuning import signature_from_names

    assert signature_from_names(dspy) is not None
    other = SimpleNamespace(
        Signature=dspy.Signature,
        InputField=lambda **kwargs: dspy.InputField(desc="another default"),
        OutputField=dspy.OutputField,
    )
    assert signature_from_names(other) is None  # type: ignore[arg-type]  # builds another
    broken = SimpleNamespace(Signature=dspy.Signature, InputField=dspy.InputField)
    assert signature_from_names(broken) is None  # type: ignore[arg-type]  # no OutputField


@pytest.mark.parametrize("blank", ["\u00a0", "\u3000", "\v"])
def test_a_blank_the_parser_refuses_is_refused_as_before(blank: str) -> None:
    """str.strip() takes these, Python's parser (and DSPy's) does not: not plain."""
    from snakepool.pool.interpreter import dspy_programs

    request = {"program": {"signature": f"question,{blank}context -> answer"}, "inputs": {}}
    with pytest.raises(InvalidArguments, match="malformed signature"):
        dspy_programs.execute_program(request)
