"""The Kubernetes manifests: every overlay renders, validates offline, and keeps its promises.

Each target under k8s/ is rendered with ``kubectl kustomize`` and every object
is validated against the Kubernetes API schemas (kubernetes-validate, strict,
a pinned version), then the invariants ops rely on are checked: probes and
resources on long-running containers, restricted security contexts, a
CronJob that never overlaps itself, no secret value anywhere, no more worker
replicas than partitions, pinned images, and only the API reachable from
outside the namespace. The settings ConfigMap, with the secrets it refers to,
must make a valid :class:`~freshrec.settings.Settings`, and every container's
command must be one the installed CLI knows.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from freshrec.settings import ENV_PREFIX, Settings
from tests.deploy.manifests import (
    KUBERNETES_VERSION,
    LONG_RUNNING,
    ROOT,
    TARGETS,
    containers,
    embedded_pods,
    pod_spec,
    render,
    settings_configmap,
)

#: Settings that hold secrets (hidden from the settings' repr): never a literal value.
SECRET_SETTINGS = {ENV_PREFIX + f.name.upper() for f in fields(Settings) if not f.repr}
PART_OF = "app.kubernetes.io/part-of"
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|ACCESS_KEY|PRIVATE", re.IGNORECASE)


@pytest.fixture(scope="module", params=TARGETS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    target, objs = rendered
    assert objs, target
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{target}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_the_expected_objects_are_there(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objs = rendered
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for expected in [
        ("Namespace", "freshrec"),
        ("Deployment", "freshrec-worker"),
        ("Deployment", "freshrec-api"),
        ("Service", "freshrec-api"),
        ("HorizontalPodAutoscaler", "freshrec-api"),
        ("PodDisruptionBudget", "freshrec-api"),
        ("CronJob", "freshrec-retrain"),
        ("ConfigMap", "freshrec-prometheus-rules"),
        ("ConfigMap", "freshrec-grafana-dashboard"),
    ]:
        assert expected in kinds
    assert any(k == "NetworkPolicy" for k, _ in kinds)
    namespaced = [o for o in objs if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"freshrec"}


def test_every_object_is_part_of_freshrec_and_no_selector_says_so(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """The manifests write ``app.kubernetes.io/part-of`` themselves: kustomize 2's
    ``commonLabels`` (kubectl 1.20 has no ``labels``) would put it into every
    selector too, and a Deployment's selector cannot change once applied."""
    target, objs = rendered
    for obj in objs:
        name = f"{target}: {obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"].get("labels", {}).get(PART_OF) == "freshrec", name
        selector = obj.get("spec", {}).get("selector") or {}
        assert PART_OF not in selector.get("matchLabels", selector), name
        assert PART_OF not in obj.get("spec", {}).get("podSelector", {}).get("matchLabels", {})


def test_prometheus_and_grafana_find_their_config_maps(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """The labels they select by come from k8s/observability/labels.yaml (a patch:
    kustomize 2 has no per-generator options)."""
    _, objs = rendered
    labels = {
        o["metadata"]["name"]: o["metadata"].get("labels", {})
        for o in objs
        if o["kind"] == "ConfigMap"
    }
    assert labels["freshrec-prometheus-rules"]["prometheus_rule"] == "1"
    assert labels["freshrec-grafana-dashboard"]["grafana_dashboard"] == "1"


def test_long_running_containers_have_probes_and_resources(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    target, objs = rendered
    for obj, c in containers(objs):
        where = f"{target}: {obj['kind']}/{obj['metadata']['name']}/{c['name']}"
        if obj["kind"] in LONG_RUNNING:
            assert "livenessProbe" in c and "readinessProbe" in c, where
        for bound in ("requests", "limits"):
            assert set(c.get("resources", {}).get(bound, {})) >= {"cpu", "memory"}, where


def test_pods_run_restricted(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    target, objs = rendered
    for obj in [*objs, *embedded_pods(objs)]:
        spec = pod_spec(obj)
        if spec is None:
            continue
        where = f"{target}: {obj['kind']}/{obj['metadata']['name']}"
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where


def test_the_retrain_cronjob_never_overlaps_and_is_bounded(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objs = rendered
    (cron,) = [o for o in objs if o["kind"] == "CronJob"]
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 0 and job["activeDeadlineSeconds"] > 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_no_secret_value_anywhere(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    target, objs = rendered
    assert not [o for o in objs if o["kind"] == "Secret"], f"{target} carries a Secret"
    data = settings_configmap(objs)
    leaked = sorted(k for k in data if k in SECRET_SETTINGS or SECRET_NAME.search(k))
    assert not leaked, f"{target}: secrets in the ConfigMap: {leaked}"
    for obj, c in containers(objs):
        for env in c.get("env", []):
            if env["name"] in SECRET_SETTINGS or SECRET_NAME.search(env["name"]):
                assert "value" not in env and "secretKeyRef" in env["valueFrom"], (
                    f"{target}: {obj['metadata']['name']}/{c['name']} sets {env['name']} "
                    "to a literal; it must come from a Secret"
                )


def test_the_settings_with_their_secrets_are_valid(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """A typo in a variable name, or a SASL protocol without its credentials, fails here."""
    target, objs = rendered
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    for obj, c in containers(objs):
        env = settings_configmap(objs)
        for e in c.get("env", []):
            env[e["name"]] = "from-a-secret" if "valueFrom" in e else e["value"]
        env = {k: str(ca) if k.endswith("_CA_FILE") else v for k, v in env.items()}
        try:
            settings = Settings.from_env(
                {k: v for k, v in env.items() if k.startswith("FRESHREC_")}
            )
        except Exception as exc:
            pytest.fail(f"{target}: {obj['metadata']['name']}/{c['name']}: {exc}")
        assert settings.api_host == "0.0.0.0" and settings.worker_web_host == "0.0.0.0"


def test_worker_replicas_do_not_exceed_partitions(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    target, objs = rendered
    partitions = int(settings_configmap(objs)["FRESHREC_TOPIC_PARTITIONS"])
    (worker,) = [o for o in objs if o["metadata"]["name"] == "freshrec-worker" and "spec" in o
                 and o["kind"] in LONG_RUNNING]  # fmt: skip
    assert 1 <= worker["spec"]["replicas"] <= partitions, target
    surge = worker["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", 0)
    assert surge == 0, f"{target}: a surge pod would be a worker without a partition"


def test_the_autoscaler_alone_sets_the_api_replicas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """Regression: the API Deployment carried ``replicas``, so every ``kubectl apply -k``
    scaled the API back down to it under load until the autoscaler caught up."""
    target, objs = rendered
    scaled = {
        o["spec"]["scaleTargetRef"]["name"] for o in objs if o["kind"] == "HorizontalPodAutoscaler"
    }
    assert "freshrec-api" in scaled, target
    for o in objs:
        if o["kind"] in LONG_RUNNING and o["metadata"]["name"] in scaled:
            assert "replicas" not in o["spec"], f"{target}: {o['metadata']['name']}"


def selects(policy: dict[str, Any], app: str) -> bool:
    """Whether the NetworkPolicy selects the pods of ``app`` by name."""
    labels = policy["spec"]["podSelector"].get("matchLabels", {})
    return bool(labels.get("app.kubernetes.io/name") == app)


def test_ports_agree_with_the_settings(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """The probes, the scrape annotation and the network policy use the port the process
    binds (FRESHREC_API_PORT, FRESHREC_WORKER_WEB_PORT): an overlay that changed one
    setting alone would leave every probe failing."""
    target, objs = rendered
    settings = settings_configmap(objs)
    expected = {
        "freshrec-api": int(settings["FRESHREC_API_PORT"]),
        "freshrec-worker": int(settings["FRESHREC_WORKER_WEB_PORT"]),
    }
    for name, port in expected.items():
        (deployment,) = [
            o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == name
        ]
        template = deployment["spec"]["template"]
        (c,) = template["spec"]["containers"]
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            probe_port = c[probe]["httpGet"]["port"]
            assert named.get(probe_port, probe_port) == port, f"{target}: {name} {probe}"
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port), target
        policies = [p for p in objs if p["kind"] == "NetworkPolicy" and selects(p, name)]
        assert policies, f"{target}: no policy lets {name} be reached"
        for p in policies:
            for rule in p["spec"]["ingress"]:
                assert [q["port"] for q in rule["ports"]] == [port], f"{target}: {p['metadata']}"


def test_the_model_store_is_an_object_store_or_a_mounted_volume(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """The retrain writes the store and the worker reads it: a path store must be a volume
    both mount (the root filesystem is read-only, and each pod's own)."""
    target, objs = rendered
    store = settings_configmap(objs).get("FRESHREC_MODEL_STORE", "")
    if not store:
        # the default, ./var/models, would be in the pod's own read-only filesystem
        assert target == "base", f"{target}: FRESHREC_MODEL_STORE is not set"
        return
    if "://" in store:
        assert store.startswith(("s3://", "gs://", "gcs://", "az://", "abfs://")), target
        return
    assert store.startswith("/"), f"{target}: FRESHREC_MODEL_STORE={store!r}"
    mounts = {
        c["name"]: {m["mountPath"]: m.get("readOnly", False) for m in c.get("volumeMounts", [])}
        for _, c in containers(objs)
    }
    assert mounts["retrain"].get(store) is False, f"{target}: the retrain cannot write {store}"
    assert store in mounts["worker"], f"{target}: the worker does not mount {store}"


def test_the_worker_has_time_to_commit_and_hand_over_when_stopped(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """SIGTERM: the batch in hand is finished and committed, then the partitions handed over
    (within FRESHREC_BROKER_REBALANCE_TIMEOUT_S); a SIGKILL before that redelivers them.
    Three times that leaves room for a broker or Redis answering after a few retries."""
    target, objs = rendered
    configured = settings_configmap(objs)
    settings = Settings.from_env(
        {k: configured[k] for k in configured if k.startswith("FRESHREC_BROKER_")}
    )
    (worker,) = [o for o in objs if o["kind"] == "Deployment" and "worker" in o["metadata"]["name"]]
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    needed = settings.broker_commit_interval_s + settings.broker_rebalance_timeout_s
    assert grace >= 3 * needed, f"{target}: {grace} s for a stop that can take {needed} s"


def test_images_are_pinned(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    target, objs = rendered
    for _, c in containers(objs):
        image = c["image"]
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and tag not in ("", "latest"), f"{target}: {image}"


def test_only_the_api_is_reachable_from_outside_the_namespace(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    target, objs = rendered
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    assert any(
        p["spec"]["podSelector"] == {} and "Ingress" in p["spec"]["policyTypes"] for p in policies
    ), f"{target}: no policy selects every pod"
    for p in policies:
        selected = p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for rule in p["spec"].get("ingress", []):
            sources = rule.get("from")
            if sources and all(set(s) == {"podSelector"} for s in sources):
                continue  # same namespace only
            ports = {port["port"] for port in rule.get("ports", [])}
            if selected == "freshrec-api":
                continue
            # the one exception: the monitoring namespace scrapes the worker's web port
            assert selected == "freshrec-worker" and ports == {6066}, (target, p["metadata"])
            assert sources == [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ], (target, p["metadata"])


def test_every_container_command_is_one_the_cli_knows(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """`freshrec <args> --help` for each container: manifests and CLI cannot drift apart.

    The installed ``freshrec`` script is run, the image's entrypoint, so the
    project's console-script entry is checked too.
    """
    target, objs = rendered
    for _, c in containers(objs):
        assert "command" not in c, "the image's entrypoint is freshrec; manifests give args"
        args = c["args"]
        done = freshrec_help(tuple(args))
        assert done.returncode == 0, f"{target}: freshrec {' '.join(args)}: {done.stderr}"
        assert "usage: freshrec" in done.stdout


@functools.cache
def freshrec_help(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """``freshrec <args> --help`` run once per distinct ``args``: the overlays repeat the
    base's containers, and each run starts the whole CLI (seconds on a loaded machine)."""
    freshrec = shutil.which("freshrec", path=str(Path(sys.executable).parent))
    assert freshrec, "no freshrec script beside the interpreter: pip install -e '.[dev]'"
    return subprocess.run(
        [freshrec, *args, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
