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
    table = load_adapter("snakepool.pool.interpreter.builtin")
    programs = {"create_program", "execute_program", "list_programs", "delete_program",
                "get_program_info", "configure_lm", "dspy_status"}  # fmt: skip
    assert set(table.handlers) == {"ping", "get_stats", "echo", "calculate", "sleep"} | programs
    assert table.handlers["ping"]({})["pong"] is True
    assert table.specs["execute_program"].read_only and not table.specs["create_program"].read_only


def test_missing_and_non_adapters() -> None:
    with pytest.raises(ModuleNotFoundError):
        load_adapter("tests.adapters.nonexistent")
    with pytest.raises(TypeError, match="no @command"):
        load_adapter("tests.conftest")
    with pytest.raises(TypeError, match="neither a module"):
        load_adapter("tests.adapters.greeter.greet")


def test_chaos_refuses_without_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNAKEPOOL_ENABLE_CHAOS", raising=False)
    with pytest.raises(ImportError, match="SNAKEPOOL_ENABLE_CHAOS=1"):
        load_adapter("snakepool.pool.interpreter.chaos")
