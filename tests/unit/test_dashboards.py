"""Prometheus' scrape config and Grafana's provisioned dashboard (deploy/): they scrape the
nodes compose runs, on the port they serve, and query only metrics the nodes export."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from snakepool.config import load_settings
from snakepool.config.flags import FlagStore
from snakepool.errors import CommandFailed
from snakepool.tasks.prometheus.exporter import MetricsExporter
from snakepool.tasks.worker.node import Node
from tests.unit.test_compose import SERVICES, argv, environment

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "snakepool.json").read_text())
_METRIC = re.compile(r"\bsnakepool_[a-z0-9_]+")


def _yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def node_services() -> list[str]:
    return [
        n for n, s in SERVICES.items() if "command" in s and argv(s)[:2] == ["snakepool", "worker"]
    ]


def mounts(service: str) -> dict[str, str]:
    """Container path → repository path of a service's bind mounts."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = source[2:]
    return found


def exported_names() -> set[str]:
    """Every sample name a node exports once it has served requests (fakeredis node)."""

    class Pool:
        def commands(self) -> dict[str, dict[str, bool]]:
            return {"ping": {}}

        def stats(self) -> dict[str, int]:
            return dict.fromkeys(("size", "idle", "busy", "starting", "queued", "crashes",
                                  "timeouts", "recycled", "restarts"), 1)  # fmt: skip

    node = Node(load_settings(redis_url="fakeredis://dashboards"), name="n@h", lanes=("v3",))
    node.pool = Pool()  # type: ignore[assignment]
    node.redis.flushall()
    FlagStore(node.redis, prefix=node.keys.prefix).update(  # every per-command family
        lambda f: replace(f, excluded_commands=("echo",), v3_commands=("ping",)), who="t", why="t"
    )
    exporter = MetricsExporter(node, port=0)
    exporter.requests.on_request("v3", "ping", 0.01, None)
    exporter.requests.on_request("v3", "ping", 0.01, CommandFailed("x"))
    exporter.requests.on_shadow("v3", "ping", True)
    names = set()
    for family in text_string_to_metric_families(exporter.scrape().decode()):
        names.update(sample.name for sample in family.samples)
    return names


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and annotation."""
    found = []
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    for annotation in DASHBOARD["annotations"]["list"]:
        if "expr" in annotation:
            found.append((f"annotation {annotation['name']}", annotation["expr"]))
    return found


def test_prometheus_scrapes_every_node_service_on_the_metrics_port() -> None:
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "snakepool")
    (discovery,) = job["dns_sd_configs"]
    assert sorted(discovery["names"]) == sorted(node_services())
    for name in node_services():
        port = environment(SERVICES[name])["SNAKEPOOL_METRICS_PORT"]
        assert int(port) == discovery["port"], name
        # Scraped from the prometheus container: every interface, not the default loopback.
        assert environment(SERVICES[name])["SNAKEPOOL_METRICS_ADDRESS"] == "0.0.0.0", name
        assert not SERVICES[name].get("ports"), f"{name}: metrics need no published port"
    assert mounts("prometheus")["/etc/prometheus/prometheus.yml"] == (
        "deploy/prometheus/prometheus.yml"
    )


def test_grafana_is_provisioned_from_the_repository() -> None:
    grafana = mounts("grafana")
    provisioning = ROOT / grafana["/etc/grafana/provisioning"]
    (source,) = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in SERVICES
    (provider,) = _yaml(provisioning / "dashboards" / "snakepool.yml")["providers"]
    assert provider["options"]["path"] in grafana
    assert (ROOT / grafana[provider["options"]["path"]] / "snakepool.json").is_file()
    uids = {t["datasource"]["uid"] for p in DASHBOARD["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}
    home = environment(SERVICES["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/snakepool.json"


def test_every_query_uses_metrics_the_nodes_export() -> None:
    exported = exported_names()
    assert {"snakepool_requests_total", "snakepool_request_duration_seconds_bucket"} <= exported
    for where, expr in expressions():
        used = set(_METRIC.findall(expr))
        assert used, f"{where}: queries no snakepool metric"
        assert used <= exported, f"{where}: {sorted(used - exported)} are not exported"
        assert expr.count("(") == expr.count(")"), f"{where}: unbalanced parentheses"


@pytest.mark.parametrize(
    ("title", "fragment"),
    [
        ("Request rate by lane", "sum by (lane) (rate(snakepool_requests_total"),
        ("Server-error ratio by lane", 'outcome="server_error"'),
        ("p99 latency by lane", "histogram_quantile(0.99"),
        ("Pool saturation by node", 'snakepool_interpreters{state="busy"}'),
        ("Rollout percent to V3", "snakepool_rollout_percent"),
        ("Finalized", "snakepool_rollout_finalized"),
        ("Commands excluded from V3", "snakepool_rollout_command_excluded"),
        ("V3 allow-list", "snakepool_rollout_v3_only"),
    ],
)
def test_the_dashboard_has_the_panels_operators_need(title: str, fragment: str) -> None:
    panel = next(p for p in DASHBOARD["panels"] if p["title"] == title)
    assert any(fragment in t["expr"] for t in panel["targets"]), panel["targets"]


def test_lanes_side_by_side_and_rollbacks_annotated() -> None:
    top = sorted(
        (p for p in DASHBOARD["panels"] if p["type"] != "row" and p["gridPos"]["y"] == 1),
        key=lambda p: p["gridPos"]["x"],
    )
    assert [p["title"] for p in top] == [
        "Request rate by lane", "Server-error ratio by lane", "p99 latency by lane",
    ]  # fmt: skip
    rollbacks = next(a for a in DASHBOARD["annotations"]["list"] if a["name"] == "Rollbacks")
    assert rollbacks["enable"] and "snakepool_rollout_percent offset" in rollbacks["expr"]
