import sys

import pytest

from snakepool.pool.interpreter.adapter import load_adapter


def test_module_adapter_gets_core_commands() -> None:
    table = load_adapter("tests.adapters.greeter")
    assert {"greet", "shout", "ping", "get_stats"} <= set(table.handlers)
    assert "echo" not in table.handlers  # only ping and get_stats are implicit
    assert table.specs["greet"].read_only and table.specs["greet"].idempotent
    assert not table.specs["shout"].read_only and table.specs["shout"].idempotent
    assert table.handlers["greet"]({"name": "ada"}) == {"greeting": "hello ada"}


def test_class_adapter() -> None:
    table = load_adapter("tests.adapters.counter.Counter")
    table.setup()
    assert table.handlers["incr"]({"by": 2})["count"] == 2
    assert table.handlers["incr"]({})["count"] == 3


def test_builtin_adapter() -> None:
    table = load_adapter("snakepool.pool.interpreter.builtin", allow_admin=True)
    programs = {"create_program", "execute_program", "list_programs", "delete_program",
                "get_program_info", "configure_lm", "dspy_status"}  # fmt: skip
    assert set(table.handlers) == {"ping", "get_stats", "echo", "calculate", "sleep"} | programs
    assert table.handlers["ping"]({})["pong"] is True
    assert table.specs["execute_program"].read_only and not table.specs["create_program"].read_only
    assert table.specs["configure_lm"].admin and table.disabled == {}


def test_missing_and_non_adapters() -> None:
    with pytest.raises(ModuleNotFoundError):
        load_adapter("tests.adapters.nonexistent")
    with pytest.raises(TypeError, match="no @command"):
        load_adapter("tests.conftest")
    with pytest.raises(TypeError, match="neither a module"):
        load_adapter("tests.adapters.greeter.greet")


def test_chaos_refuses_without_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNAKEPOOL_ENABLE_CHAOS", raising=False)
    # The guard runs at import: a test that imported the module (with the setting) before
    # this one, in the same process, must not hide it.
    monkeypatch.delitem(sys.modules, "snakepool.pool.interpreter.chaos", raising=False)
    with pytest.raises(ImportError, match="SNAKEPOOL_ENABLE_CHAOS=1"):
        load_adapter("snakepool.pool.interpreter.chaos")


def test_admin_commands_are_off_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNAKEPOOL_ALLOW_ADMIN_COMMANDS", raising=False)
    table = load_adapter("snakepool.pool.interpreter.builtin")
    assert "configure_lm" not in table.handlers and "configure_lm" not in table.describe()
    assert "ALLOW_ADMIN_COMMANDS" in table.disabled["configure_lm"]
    assert set(table.disabled) == {"configure_lm"}  # every other command stays
    monkeypatch.setenv("SNAKEPOOL_ALLOW_ADMIN_COMMANDS", "1")
    assert "configure_lm" in load_adapter("snakepool.pool.interpreter.builtin").handlers
    assert (
        "configure_lm"
        not in load_adapter("snakepool.pool.interpreter.builtin", allow_admin=False).handlers
    )


def test_admin_mark_follows_a_command_into_any_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNAKEPOOL_ALLOW_ADMIN_COMMANDS", raising=False)
    pytest.importorskip("dspy")
    table = load_adapter("snakepool.pool.interpreter.dspy_programs")
    assert set(table.disabled) == {"configure_lm"} and "create_program" in table.handlers


def test_interpreter_modules_import_no_circle() -> None:
    """No module of the interpreter side imports one that (even lazily) imports it back."""
    import ast
    from pathlib import Path

    import snakepool.pool.interpreter as package

    root = Path(package.__file__).parent
    prefix = "snakepool.pool.interpreter."
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        name = path.stem
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):  # functions' imports too
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith(prefix):
                    edges.add(node.module.removeprefix(prefix))
                elif node.module == prefix.rstrip("."):
                    edges |= {
                        alias.name for alias in node.names if (root / f"{alias.name}.py").exists()
                    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(name for name in graph if name != "__init__" and reaches(name, name, set()))
    assert circles == []
