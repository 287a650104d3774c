"""Render the kustomize overlays and walk what they hold (for tests/deploy)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
#: Every kustomization ops may apply (the examples too).
TARGETS = ("base", "overlays/dev", "overlays/prod", "examples/retrain-spark")
#: The Kubernetes version the manifests are validated against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.31.0"
#: Kinds whose pods run until stopped (probes are required there).
LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet")


def kubectl() -> str:
    """The kubectl to render with: ``$TESTS_KUBECTL``, by default ``kubectl`` on the PATH.

    Not a ``FRESHREC_*`` name: settings reject unknown variables with that prefix.

    k8s/ must render the same with Debian bookworm's kubernetes-client (kubectl
    1.20, kustomize 2.0.3, what ``./dev`` installs) and with a current kubectl
    (1.32, kustomize v5.5); the variable runs this suite against each.
    """
    wanted = os.environ.get("TESTS_KUBECTL", "kubectl")
    found = shutil.which(wanted)
    if found is None:
        raise RuntimeError(
            f"{wanted} not found: tests/deploy render the manifests with it "
            "(set TESTS_KUBECTL to a kubectl, or run ./dev setup)"
        )
    return found


def render(target: str) -> list[dict[str, Any]]:
    """``kubectl kustomize k8s/<target>``, parsed.

    A failure says what kubectl answered on its stderr and which version it is:
    kustomize 2.0.3 (kubectl 1.20) rejects the fields it does not know
    (``labels``, ``envs``, ``patches``), so k8s/ keeps to those both versions read.
    """
    binary = kubectl()
    done = subprocess.run([binary, "kustomize", str(K8S / target)], capture_output=True, text=True)
    if done.returncode != 0:
        version = subprocess.run(
            [binary, "version", "--client"], capture_output=True, text=True
        ).stdout
        raise RuntimeError(
            f"kubectl kustomize k8s/{target} failed: {done.stderr.strip()}\n{version}"
            "(they render with kubectl 1.20, kustomize 2.0.3, and kubectl 1.32, kustomize v5.5)"
        )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template's spec of a workload, None for other kinds."""
    kind = obj["kind"]
    if kind in (*LONG_RUNNING, "Job"):
        return dict(obj["spec"]["template"]["spec"])
    if kind == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    if kind == "Pod":
        return dict(obj["spec"])
    return None


def embedded_pods(objs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Pods carried as files in ConfigMaps (the Spark executors' pod template): what
    another program starts from our manifests, held to the same rules."""
    for obj in objs:
        if obj["kind"] != "ConfigMap":
            continue
        for name, text in obj.get("data", {}).items():
            if not name.endswith((".yaml", ".yml")):
                continue
            for doc in yaml.safe_load_all(text):
                if isinstance(doc, dict) and doc.get("kind") == "Pod":
                    yield {**doc, "metadata": {"name": f"{obj['metadata']['name']}/{name}"}}


def containers(objs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container of every workload, init containers too."""
    for obj in objs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            yield obj, c


def settings_configmap(objs: list[dict[str, Any]]) -> dict[str, str]:
    maps = [
        o
        for o in objs
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("freshrec-settings")
    ]
    assert len(maps) == 1, [m["metadata"]["name"] for m in maps]
    return dict(maps[0]["data"])
