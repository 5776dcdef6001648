import copy

import pytest

from snakepool import errors


@pytest.mark.parametrize(
    ("cls", "category", "retryable"),
    [
        (errors.QueueFull, "capacity", True),
        (errors.QueueTimeout, "capacity", True),
        (errors.RequestTimeout, "timeout", True),
        (errors.ResultTimeout, "timeout", False),
        (errors.WorkerCrashed, "worker", True),
        (errors.PoolUnavailable, "unavailable", True),
        (errors.UnknownCommand, "client", False),
        (errors.InvalidArguments, "client", False),
        (errors.CommandFailed, "command", False),
        (errors.PayloadTooLarge, "client", False),
        (errors.SessionNotFound, "client", False),
        (errors.ProgramNotFound, "client", False),
        (errors.ConfigError, "config", False),
        (errors.DeadLettered, "client", False),
        (errors.StaleFence, "conflict", False),
    ],
)
def test_tree_and_classification(
    cls: type[errors.SnakepoolError], category: str, retryable: bool
) -> None:
    error = cls("boom", detail=1)
    assert isinstance(error, errors.SnakepoolError)
    assert (error.category, error.retryable) == (category, retryable)
    assert error.is_client_error == (category == "client")
    rebuilt = errors.error_from_dict(error.to_dict())
    assert type(rebuilt) is cls and rebuilt.message == "boom" and rebuilt.detail == 1
    assert copy.deepcopy(error).data == {"detail": 1}


def test_data_is_attributes() -> None:
    error = errors.WorkerCrashed("gone", exit_code=None, signal=9)
    assert error.signal == 9 and error.exit_code is None
    with pytest.raises(AttributeError):
        _ = error.nonexistent


def test_unknown_type_falls_back_to_root() -> None:
    rebuilt = errors.error_from_dict({"type": "Nope", "message": "m"})
    assert type(rebuilt) is errors.SnakepoolError


def test_describe_exit() -> None:
    assert errors.describe_exit(-9) == (None, 9, "SIGKILL")
    assert errors.describe_exit(3) == (3, None, None)
    assert errors.describe_exit(None) == (None, None, None)


def test_args_survive_a_celery_style_json_round_trip() -> None:
    import json

    error = errors.CommandFailed("boom", remote_type="ValueError", remote_traceback="tb")
    stored = json.loads(json.dumps({"exc_type": "CommandFailed", "exc_message": error.args}))
    rebuilt = errors.CommandFailed(*stored["exc_message"])
    assert str(rebuilt) == "boom" and rebuilt.remote_traceback == "tb"
    assert rebuilt.remote_type == "ValueError"


def test_a_result_timeout_is_also_the_builtin_timeout_error() -> None:
    error = errors.ResultTimeout("no result", task_id="abc", timeout=2.0)
    assert isinstance(error, TimeoutError) and isinstance(error, errors.SnakepoolError)
    assert (error.task_id, error.timeout, error.errno, error.strerror) == ("abc", 2.0, None, None)
    assert str(error) == "no result" and not error.is_client_error
    with pytest.raises(TimeoutError, match="no result"):
        raise error
