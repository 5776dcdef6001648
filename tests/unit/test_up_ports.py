"""``snakepool up`` refuses ports two of its processes would both listen on, before it
starts anything: the nodes' metrics range (``--metrics-port`` and the ports after it),
Flower's ``--flower-port`` and a local Redis's port."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from snakepool.tasks.cli import main
from snakepool.tasks.cli.up import port_clash

REDIS = "redis://127.0.0.1:7000/0"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--metrics-port", "5555"], "5555 is --flower-port 5555"),  # flower's default
        (["--metrics-port", "5553", "--v3", "2"], "5555 is --flower-port 5555"),
        (["--metrics-port", "6998", "--flower-port", "0"], "7000 is REDIS_URL's port 7000"),
        (["--flower-port", "7000"], "--flower-port 7000 is REDIS_URL's port 7000"),
        (["--metrics-port", "65534", "--flower-port", "0"], "needs ports up to 65536"),
    ],
)
@pytest.mark.timeout(30)
def test_up_refuses_clashing_ports_before_starting_anything(
    options: list[str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snakepool.tasks.local import launcher

    def no_launch(*_: object, **__: object) -> None:
        raise AssertionError("up started processes despite the clash")

    monkeypatch.setattr(launcher, "Launcher", no_launch)
    done = CliRunner().invoke(main, ["up", *options], env={"SNAKEPOOL_REDIS_URL": REDIS})
    assert done.exit_code == 2, done.output
    assert named in done.output


@pytest.mark.timeout(10)
def test_ports_apart_are_no_clash() -> None:
    assert port_clash(metrics_port=9100, nodes=3, flower_port=5555, redis_url=REDIS) is None
    assert port_clash(metrics_port=0, nodes=3, flower_port=0, redis_url=REDIS) is None
    # A remote Redis's port is another host's: no clash with this host's ports.
    remote = "redis://redis.example:5555/0"
    assert port_clash(metrics_port=9100, nodes=3, flower_port=5555, redis_url=remote) is None
    assert port_clash(metrics_port=65533, nodes=3, flower_port=0, redis_url=REDIS) is None
