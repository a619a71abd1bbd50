"""deploy/ as the tests read it: its folders, the Kubernetes documents, the compose file (tests/test_deploy.py,
tests/test_deploy_schemas.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
TRAIN_DOCKERFILE = DEPLOY / "finetune" / "Dockerfile"
BIN = Path(sys.executable).parent


def k8s_docs() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def kind(k: str) -> list[dict]:
    return [d for d in k8s_docs() if d["kind"] == k]


def by_name(k: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in kind(k)}


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def container(deployment: dict) -> dict:
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}
