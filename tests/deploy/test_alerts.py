"""The alerting rules load in Prometheus, and each alert fires on series that break its objective.

``promtool check rules`` parses them; ``promtool test rules`` runs
tests/deploy/alerts_test.yaml, which feeds each alert synthetic series and
pins when it fires, with which labels, summary and runbook. promtool comes
with Debian's ``prometheus`` package (``./dev setup`` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

from tests.deploy.manifests import K8S, ROOT

RULES = K8S / "observability" / "alerts.yaml"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")
DASHBOARD = K8S / "observability" / "dashboard.json"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: ./dev setup installs it (apt-get install prometheus)"
    return found


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def test_rules_pass_promtool_check() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout


def test_each_alert_fires_in_the_promtool_unit_tests() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", str(UNIT_TESTS)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tested = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tested
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert fired == set(alert_names())


def test_every_alert_has_a_runbook_and_a_severity() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["annotations"]["runbook"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]


def test_the_dashboard_queries_parse() -> None:
    """Each panel's query is valid PromQL (promtool parses it as a recording rule)."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert exprs
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)
    ]}]}  # fmt: skip
    path = Path(__file__).parent / ".dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    try:
        done = subprocess.run(
            [promtool(), "check", "rules", str(path)], capture_output=True, text=True
        )
    finally:
        path.unlink()
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_runs_the_retrain_by_hand_under_a_name_the_alert_watches() -> None:
    """Regression: the README named the manual run ``retrain-manual-...``, which
    FreshrecRetrainFailed's ``job_name`` matcher does not match, so a failed manual run
    went unreported."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (expr,) = [
        r["expr"] for g in groups for r in g["rules"] if r["alert"] == "FreshrecRetrainFailed"
    ]
    watched = re.search(r'job_name=~"([^"]+)"', expr)
    assert watched
    readme = (ROOT / "README.md").read_text()
    names = re.findall(r"create job --from=cronjob/freshrec-retrain\s+(\S+?)-\$\(date", readme)
    assert names
    for name in names:
        if name.startswith("rollback"):
            continue  # a one-off `models rollback`, watched by whoever runs it
        assert re.fullmatch(watched.group(1), f"{name}-1700000000"), name


def exported_series() -> set[str]:
    """Names of every series the worker and the API can export, from their registries."""
    import serving.metrics  # noqa: F401  (registers the API's collectors in REGISTRY)
    from streams.metrics import WorkerMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for registry in (WorkerMetrics().registry, REGISTRY)
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ())
    }


def test_the_alerts_and_the_dashboard_read_only_metrics_the_code_exports() -> None:
    """A renamed metric would leave a rule or panel silently empty. tests/deploy/
    test_prometheus.py sees the alerts' series in a real Prometheus; this also covers the
    dashboard's, some of which only appear after a retry or a model switch."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    groups = yaml.safe_load(RULES.read_text())["groups"]
    exprs += [r["expr"] for g in groups for r in g["rules"]]
    used = {name for e in exprs for name in re.findall(r"\b(freshrec_[a-z_]+)", e)}
    assert used
    missing = used - exported_series()
    assert not missing, f"read but never exported: {sorted(missing)}"


def test_the_readme_says_what_each_alert_means_and_what_to_do() -> None:
    """README.md's "Alerts" table has a row for every alert, with its severity."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Alerts") :]
    section = section[: section.index("\n## ")]
    rows = dict(re.findall(r"^\| `(\w+)` \((page|ticket)\) \|", section, re.MULTILINE))
    groups = yaml.safe_load(RULES.read_text())["groups"]
    severities = {r["alert"]: r["labels"]["severity"] for g in groups for r in g["rules"]}
    assert rows == severities
