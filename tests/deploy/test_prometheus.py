"""A real Prometheus scrapes a running worker and API and finds the series the alerts use.

Prometheus (Debian's package, ``./dev setup`` installs it) runs on a free
loopback port with a temporary config and TSDB, scrapes ``freshrec worker``
and ``freshrec api`` every half second, and loads k8s/observability/alerts.yaml.
After one valid and one invalid event and a few requests, every freshrec
metric an alert reads must be a series in Prometheus: a renamed metric would
leave its alert silently unable to fire.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from freshrec.settings import Settings
from freshrec.stack import LOOPBACK, free_port, wait_until
from tests.api_process import api_process, quick_processes
from tests.deploy.test_alerts import RULES
from tests.streams.worker import (
    BASE_TS,
    WorkerProcess,
    publish,
    publish_model,
    send_raw,
    synthetic,
    watch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def alert_metrics() -> set[str]:
    """freshrec metric names the alerting rules read (kube-state-metrics' are not ours)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    names = set()
    for rule in (r for g in groups for r in g["rules"]):
        names |= set(re.findall(r"\b(freshrec_[a-z_]+)", rule["expr"]))
    return names


@pytest.fixture
def deploy_settings(settings: Settings, topics: list[str]) -> Settings:
    return quick_processes(settings)


@pytest.fixture
def api(deploy_settings: Settings, tmp_path: Path) -> Iterator[str]:
    with api_process(deploy_settings, tmp_path / "api.log") as base:
        yield base


@pytest.fixture
def prometheus(deploy_settings: Settings, api: str, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: ./dev setup installs it (apt-get install prometheus)"
    shutil.copy(RULES, tmp_path / "alerts.yaml")
    config = {
        "global": {"scrape_interval": "500ms", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yaml"],
        "scrape_configs": [
            {
                "job_name": "freshrec-worker",
                "static_configs": [{"targets": [f"{LOOPBACK}:{deploy_settings.worker_web_port}"]}],
            },
            {
                "job_name": "freshrec-api",
                "static_configs": [{"targets": [f"{LOOPBACK}:{deploy_settings.api_port}"]}],
            },
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(tmp_path / "prometheus.log", "ab") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={LOOPBACK}:{port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://{LOOPBACK}:{port}"
    try:
        wait_until(lambda: get(base + "/api/v1/status/runtimeinfo") is not None, 30, "prometheus")
        yield base
    finally:
        proc.kill()  # its TSDB is thrown away: an orderly stop (8 s, compacting it) buys nothing
        proc.wait(20)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    return list(get(url)["data"]["result"])


def test_prometheus_scrapes_the_worker_and_the_api_and_finds_every_alerted_series(
    deploy_settings: Settings, api: str, prometheus: str, tmp_path: Path
) -> None:
    publish_model(deploy_settings, synthetic())
    worker = WorkerProcess(deploy_settings, tmp_path / "worker.log").start()
    try:
        publish(deploy_settings, [watch("p-1", "alice", "m1", BASE_TS)])
        # past the publisher's validation, as a broken producer would: dead-lettered
        send_raw(deploy_settings, deploy_settings.topic_watch, [(b"alice", b'{"type": "watch"}')])
        for _ in range(3):
            get(f"{api}/recs/alice?k=5")

        def both_up() -> bool:
            up = {r["metric"]["job"]: r["value"][1] for r in query(prometheus, "up")}
            return up == {"freshrec-worker": "1", "freshrec-api": "1"}

        worker.wait_for(both_up, 60, "both targets up in Prometheus")
        wanted = alert_metrics()
        assert "freshrec_worker_consumer_lag" in wanted

        def missing() -> set[str]:
            return {n for n in wanted if not query(prometheus, f"count({n})")}

        worker.wait_for(lambda: not missing(), 60, "every alerted series in Prometheus")
        rules = get(f"{prometheus}/api/v1/rules")["data"]["groups"]
        assert sum(len(g["rules"]) for g in rules) == len(
            yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
        )
        lag = query(prometheus, "freshrec_worker_consumer_lag")
        assert {r["metric"]["topic"] for r in lag} <= set(deploy_settings.as_env().values())
        created = query(prometheus, "freshrec_model_created_timestamp_seconds")
        assert float(created[0]["value"][1]) > 1.6e9  # the published version's creation time
    finally:
        worker.kill()  # done with it: an orderly stop costs a second or two
