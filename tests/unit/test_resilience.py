import fakeredis
import pytest

from snakepool import errors
from snakepool.tasks.rollout.breaker import BreakerPolicy, CircuitBreaker
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.worker.pipeline.classify_v2 import classify_v2
from snakepool.tasks.worker.pipeline.retries import retry_delay, should_retry


@pytest.mark.parametrize(
    ("error", "idempotent", "attempt", "expected"),
    [
        (errors.WorkerCrashed("x"), True, 0, True),
        (errors.WorkerCrashed("x"), False, 0, False),  # never for non-idempotent commands
        (errors.WorkerCrashed("x"), True, 3, False),  # attempts are bounded
        (errors.InvalidArguments("x"), True, 0, False),  # client errors are final
        (errors.CommandFailed("x"), True, 0, False),
        (ValueError("x"), True, 0, False),
    ],
)
def test_should_retry(error: BaseException, idempotent: bool, attempt: int, expected: bool) -> None:
    assert should_retry(error, idempotent=idempotent, attempt=attempt) is expected


def test_retry_delay_backs_off_and_is_capped() -> None:
    assert [retry_delay(a) for a in range(3)] == [0.1, 0.2, 0.4]
    assert retry_delay(20) == 5.0


def test_classify_v2_survives_the_args_round_trip() -> None:
    error = classify_v2(errors.QueueFull("busy"))
    rebuilt = errors.QueueFull(*error.args)
    assert (rebuilt.v2_category, rebuilt.severity, rebuilt.retry_strategy) == (
        "resource_exhausted", "warning", "retry_with_backoff",
    )  # fmt: skip


def test_breaker_sheds_a_failing_lane() -> None:
    metrics = LaneMetrics(fakeredis.FakeRedis(), prefix="t:")
    breaker = CircuitBreaker(
        metrics, BreakerPolicy(min_requests=10, check_every=0, cooldown_seconds=0.2)
    )
    assert breaker.route("v3") == "v3"
    for _ in range(10):
        metrics.record("v3", 0.001, errors.WorkerCrashed("x"))
    assert breaker.is_open("v3") and breaker.route("v3") == "v2compat"
    assert breaker.route("v2compat") == "v2compat"
    for _ in range(10):
        metrics.record("v2compat", 0.001, errors.WorkerCrashed("x"))
    assert breaker.route("v3") == "v3"  # both open: diverting would not help


def test_client_errors_do_not_open_the_breaker() -> None:
    metrics = LaneMetrics(fakeredis.FakeRedis(), prefix="t:")
    breaker = CircuitBreaker(metrics, BreakerPolicy(min_requests=10, check_every=0))
    for _ in range(20):
        metrics.record("v3", 0.001, errors.InvalidArguments("x"))
    assert not breaker.is_open("v3")


@pytest.mark.parametrize("garbage", ["string", "bad-count"])
def test_metrics_the_breaker_cannot_read_leave_it_as_it_was(garbage: str) -> None:
    """Review 8: a lane window key holding what we did not write (WRONGTYPE, a count that
    is not a number) raised out of ``route``: the zero-hop client's request failed as
    ``PoolUnavailable`` and the node's heartbeat was not written."""
    client = fakeredis.FakeRedis()
    metrics = LaneMetrics(client, prefix="t:")
    breaker = CircuitBreaker(
        metrics, BreakerPolicy(min_requests=10, check_every=0, cooldown_seconds=60)
    )
    for _ in range(10):
        metrics.record("v3", 0.001, errors.WorkerCrashed("x"))
    assert breaker.route("v3") == "v2compat"  # open
    second = int(metrics.clock())
    for lane in ("v3", "v2compat"):
        key = metrics.keys.lane_window(lane, second)
        client.delete(key)
        if garbage == "string":
            client.set(key, "not a hash")
        else:
            client.hset(key, mapping={"requests": "many", "errors": "0"})
    assert breaker.route("v3") == "v2compat"  # still open: the state it had
    assert breaker.route("v2compat") == "v2compat"
    assert breaker.shedding() == {"v3": "breaker open"}
