"""deploy/ checked against the code, so the two cannot drift apart (its schemas and hadolint:
tests/test_deploy_schemas.py).

- the Dockerfiles (the image, and the train worker's deploy/finetune/Dockerfile) against the images' own rules;
- queues, commands, ports, variables, grace periods, the learn folder's volume and stakeflow.toml against
  stakeflow's constants (stakeflow/core/contracts.py, stakeflow/temporal/cluster.py) and settings fields.

No container runs here (this machine has no Docker engine): these are the checks that can be made
without one.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

from stakeflow.config import Settings
from stakeflow.core.contracts import ROLES, queue_name
from stakeflow.temporal import cluster
from stakeflow.webhooks.app import API_TOKEN_ENV
from stakeflow.workers.main import GRACEFUL_SHUTDOWN
from tests.deploy_support import (
    DEPLOY,
    K8S,
    REPO,
    TRAIN_DOCKERFILE,
    by_name,
    compose,
    container,
    env_of,
    k8s_docs,
    kind,
)


def stages(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split at each FROM."""
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    found: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            found.append([])
        if found:
            found[-1].append(line)
    return found


def test_dockerfile_rules():
    text = (DEPLOY / "Dockerfile").read_text()
    build, final = stages(text)[0], stages(text)[-1]
    assert len(stages(text)) >= 2, "multi-stage: the installed venv is copied into a clean final stage"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text.replace("-bookworm", "")
    assert final[0].startswith("FROM ${PYTHON_IMAGE}") and build[0].startswith("FROM ${PYTHON_IMAGE} AS build")
    final_text = "\n".join(final)
    for tool in ("gcc", "g++", "build-essential", "cmake", "make ", "apt-get install"):
        assert tool not in final_text, f"{tool} in the final image"
    assert "COPY --from=build /opt/stakeflow /opt/stakeflow" in final_text
    user = [line for line in final if line.startswith("USER ")]
    assert user and user[-1] != "USER root" and re.match(r"USER \d+", user[-1]), (
        "the image runs as a numeric non-root user"
    )
    assert "embedded" not in text.replace("The embedded llama.cpp model is not in it", ""), "no embedded model"
    assert 'ENTRYPOINT ["stakeflow"]' in final_text
    exposed = {int(p) for line in final if line.startswith("EXPOSE ") for p in line.split()[1:]}
    assert exposed == {cluster.METRICS_PORT, cluster.WEBHOOK_PORT, cluster.CODEC_PORT}
    # Only what the image needs is sent to the builder: no tests, benchmarks, local venvs or secrets.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[1] == "*" or "*" in ignore
    copied = {m.group(1).rstrip("/") for m in re.finditer(r"^COPY (?!--)(\S+)", text, re.M)}
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert {c for part in copied for c in part.split()} <= allowed | {"pyproject.toml", "README.md"}


def dockerfile_env(text: str) -> dict[str, str]:
    """The ENV values of a Dockerfile's final stage (``ENV A=1 B=2``, continuation lines joined)."""
    found: dict[str, str] = {}
    for line in stages(text)[-1]:
        if line.startswith("ENV "):
            found |= dict(re.findall(r"(\w+)=(\S+)", line))
    return found


def test_train_dockerfile_rules():
    from stakeflow.activities import learn

    text = TRAIN_DOCKERFILE.read_text()
    [final] = stages(text)
    # Built on the stakeflow image, by default the tag deploy/ builds and runs (compose.yaml's default).
    base = re.search(r"^ARG STAKEFLOW_IMAGE=(\S+)$", text, re.M).group(1)
    assert compose()["x-stakeflow"]["image"] == f"${{STAKEFLOW_IMAGE:-{base}}}"
    assert final[0] == "FROM ${STAKEFLOW_IMAGE}"
    # The recipe's dependencies go into the image's venv, the one the worker runs (so {python} has them).
    main = (DEPLOY / "Dockerfile").read_text()
    assert "python -m venv /opt/stakeflow" in main and "PATH=/opt/stakeflow/bin:$PATH" in main
    assert re.search(
        r"^RUN /opt/stakeflow/bin/pip install --no-cache-dir -r \S*requirements\.txt", "\n".join(final), re.M
    )
    # The recipe where activities/learn.py looks for it in an image: sys.prefix (/opt/stakeflow)/share/...
    copies = dict(re.findall(r"^COPY (deploy/\S+) (\S+)$", "\n".join(final), re.M))
    assert copies["deploy/finetune/train.py"] == f"/opt/stakeflow/{learn.RECIPES[-1].relative_to(sys.prefix)}"
    assert learn.RECIPES[-1].relative_to(sys.prefix).as_posix() == "share/stakeflow/finetune/train.py"
    assert copies["deploy/finetune/requirements.txt"].startswith("/")
    user = [line for line in final if line.startswith("USER ")]
    assert re.fullmatch(r"USER [1-9]\d*:\d+", user[-1]), "back to the numeric non-root user to run"
    assert user[-1] == "USER 10001:10001" and "--uid 10001" in main
    assert final[-2:] == ['ENTRYPOINT ["stakeflow"]', f"CMD {json.dumps(cluster.worker_command('train'))}"]
    # Its context is the repository root too: only the recipe is sent to the builder.
    ignore = (DEPLOY / "finetune" / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert set(copies) <= allowed


# --- no drift ----------------------------------------------------------------------------------------


def test_worker_services_name_the_code_s_queues_and_commands():
    services = compose()["services"]
    deployments = by_name("Deployment")
    scaled = by_name("ScaledObject")
    config = by_name("ConfigMap")["stakeflow-env"]["data"]
    assert set(cluster.WORKER_SERVICES) == {s.removeprefix("worker-") for s in services if s.startswith("worker-")}
    served = sorted(r for roles in cluster.WORKER_SERVICES.values() for r in roles)
    assert served == sorted(ROLES), "every queue role has a worker service"
    for svc, roles in cluster.WORKER_SERVICES.items():
        assert services[f"worker-{svc}"]["command"] == cluster.worker_command(svc)
        name = f"stakeflow-worker-{svc}"
        assert container(deployments[name])["args"] == cluster.worker_command(svc)
        so = scaled[name]
        assert so["spec"]["scaleTargetRef"]["name"] == name
        triggers = {t["metadata"]["taskQueue"]: t["metadata"] for t in so["spec"]["triggers"]}
        assert set(triggers) == {queue_name(r) for r in roles}
        for role in roles:
            meta = triggers[queue_name(role)]
            assert meta["queueTypes"] == cluster.QUEUE_TYPES[role]
            assert (meta["endpoint"], meta["namespace"]) == (config["TEMPORAL_ADDRESS"], config["TEMPORAL_NAMESPACE"])
            assert meta["enableTLS"] == "false"  # KEDA's default is TLS on; the in-cluster frontend is plaintext


def test_the_train_worker_is_on_a_gpu_and_scales_to_zero():
    from stakeflow.config import LearnConfig

    svc = compose()["services"]["worker-train"]
    assert svc["profiles"] == ["learn"], "started only by `docker compose --profile learn`"
    assert svc["build"]["dockerfile"] == "deploy/finetune/Dockerfile" and svc["build"]["context"] == ".."
    # FROM the image the other services are built into (compose builds that one first).
    [(name, ref)] = svc["build"]["additional_contexts"].items()
    assert svc["build"]["args"]["STAKEFLOW_IMAGE"] == name and ref == "service:worker-tools"
    [device] = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    [vllm_gpu] = compose()["services"]["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert vllm_gpu["count"] == 1 and device["device_ids"] != ["0"], "not vLLM's GPU (count: 1 is GPU 0)"

    deployments = by_name("Deployment")
    train = deployments["stakeflow-worker-train"]
    c = container(train)
    assert (
        c["image"].split(":")[0] == container(deployments["stakeflow-worker-tools"])["image"].split(":")[0] + "-train"
    )
    images = {i["name"] for i in yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]}
    assert c["image"].split(":")[0] in images
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert train["spec"]["replicas"] == 0
    vllm = deployments["stakeflow-vllm"]["spec"]["template"]["spec"]
    assert train["spec"]["template"]["spec"]["tolerations"] == vllm["tolerations"]
    so = by_name("ScaledObject")["stakeflow-worker-train"]["spec"]
    assert so["minReplicaCount"] == 0 and so["maxReplicaCount"] == 1
    # KEDA sees the backlog, not a training in progress: it waits longer than a training may last.
    assert so["cooldownPeriod"] > LearnConfig().timeout_s


LEARN_MOUNTS = {"worker-tools": False, "worker-train": False, "vllm": True, "webhooks": True}  # -> read-only


def test_the_learn_folder_is_one_volume_at_the_code_s_path(tmp_path, monkeypatch):
    # The path is where the code puts the learn folder in the image: under its STAKEFLOW_HOME, as
    # deploy/stakeflow.toml configures it.
    image_home = dockerfile_env((DEPLOY / "Dockerfile").read_text())["STAKEFLOW_HOME"]
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text((DEPLOY / "stakeflow.toml").read_text())
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    from stakeflow.config import load_settings
    from stakeflow.stores.promotions import learn_dir

    assert learn_dir(load_settings()) == home / Path(cluster.LEARN_DIR).relative_to(image_home)

    services = compose()["services"]
    mounted = {}
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            source, target, *mode = v.split(":")
            if source == "learn":
                mounted[name] = (target, mode == ["ro"])
    assert "learn" in compose()["volumes"]
    assert {n: m for n, m in mounted.items() if n != "setup-learn"} == {
        n: (cluster.LEARN_DIR, ro) for n, ro in LEARN_MOUNTS.items()
    }
    assert mounted["setup-learn"][0] == cluster.LEARN_DIR  # makes the fresh volume the stakeflow user's
    assert services["setup-learn"]["command"] == ["10001:10001", cluster.LEARN_DIR]
    for name in ("worker-tools", "worker-train"):
        assert services[name]["depends_on"]["setup-learn"]["condition"] == "service_completed_successfully"

    [pvc] = [d for d in kind("PersistentVolumeClaim") if d["metadata"]["name"] == "stakeflow-learn"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "pods on different nodes share it"
    deployments = by_name("Deployment")
    found = {}
    for name, dep in deployments.items():
        spec = dep["spec"]["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                if claims.get(m["name"], {}).get("claimName") == "stakeflow-learn":
                    found[name] = (m["mountPath"], m.get("readOnly", False))
                    assert claims[m["name"]].get("readOnly", False) == m.get("readOnly", False)
    k8s_names = {
        "worker-tools": "stakeflow-worker-tools",
        "worker-train": "stakeflow-worker-train",
        "vllm": "stakeflow-vllm",
        "webhooks": "stakeflow-webhooks",
    }
    assert found == {k8s_names[n]: (cluster.LEARN_DIR, ro) for n, ro in LEARN_MOUNTS.items()}


def test_grace_periods_outlast_the_worker_s_graceful_shutdown():
    assert GRACEFUL_SHUTDOWN.total_seconds() < cluster.WORKER_GRACE_S
    for name, d in by_name("Deployment").items():
        if name.startswith("stakeflow-worker-"):
            assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == cluster.WORKER_GRACE_S
    for name, s in compose()["services"].items():
        if name.startswith("worker-"):
            assert s["stop_grace_period"] == f"{cluster.WORKER_GRACE_S}s"
            assert s.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_ports_are_the_code_s():
    d = by_name("Deployment")
    for name, dep in d.items():
        c = container(dep)
        ports = {p["containerPort"] for p in c.get("ports", [])}
        if name.startswith("stakeflow-worker-"):
            assert env_of(c)["STAKEFLOW_METRICS_PORT"] == str(cluster.METRICS_PORT) and ports == {cluster.METRICS_PORT}
            assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(cluster.METRICS_PORT)
    assert container(d["stakeflow-webhooks"])["args"][-1] == str(cluster.WEBHOOK_PORT)
    assert container(d["stakeflow-codec-server"])["args"][-1] == str(cluster.CODEC_PORT)
    assert {p["containerPort"] for p in container(d["stakeflow-vllm"])["ports"]} == {cluster.VLLM_PORT}
    config = by_name("ConfigMap")["stakeflow-env"]["data"]
    assert config["STAKEFLOW_OPEN_BASE_URL"] == f"http://stakeflow-vllm:{cluster.VLLM_PORT}/v1"
    assert config["TEMPORAL_ADDRESS"].endswith(f":{cluster.TEMPORAL_PORT}")
    services = compose()["services"]
    assert services["webhooks"]["command"][-1] == str(cluster.WEBHOOK_PORT)
    assert services["codec-server"]["command"][-1] == str(cluster.CODEC_PORT)
    env = compose()["x-stakeflow-env"]
    assert env["STAKEFLOW_METRICS_PORT"] == str(cluster.METRICS_PORT)
    assert env["STAKEFLOW_OPEN_BASE_URL"] == f"http://vllm:{cluster.VLLM_PORT}/v1"
    # The CLI's defaults are the same ports.
    from stakeflow.cli.stack import codec_server, serve

    assert {p.name: p.default for p in serve.params}["port"] == cluster.WEBHOOK_PORT
    assert {p.name: p.default for p in codec_server.params}["port"] == cluster.CODEC_PORT


def stakeflow_variables() -> set[str]:
    """Every STAKEFLOW_* variable the code reads: settings fields, plus the few read outside them."""
    names = {f"STAKEFLOW_{f.upper()}" for f in Settings.model_fields}
    return names | {API_TOKEN_ENV, "STAKEFLOW_DEBUG", "STAKEFLOW_TEMPORAL_PROFILE"}


TEMPORAL_VARIABLES = {
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_PROFILE",
}


def all_variables() -> dict[str, set[str]]:
    """Variable names per stakeflow process, from both files: {"k8s stakeflow-webhooks": {...}, ...}."""
    found: dict[str, set[str]] = {}
    config = set(by_name("ConfigMap")["stakeflow-env"]["data"])
    for name, dep in by_name("Deployment").items():
        if name == "stakeflow-vllm":
            continue
        c = container(dep)
        from_map = config if any("configMapRef" in e for e in c.get("envFrom", [])) else set()
        found[f"k8s {name}"] = set(env_of(c)) | from_map
    for name, job in by_name("Job").items():
        [c] = job["spec"]["template"]["spec"]["containers"]
        found[f"k8s {name}"] = set(env_of(c))
    for name, svc in compose()["services"].items():
        if svc.get("image", "").startswith(("${STAKEFLOW_IMAGE", "${STAKEFLOW_TRAIN_IMAGE")):
            found[f"compose {name}"] = set(svc.get("environment", {}))
    return found


def test_variables_are_ones_the_code_reads():
    known = stakeflow_variables()
    hooks = {h["secret_env"] for h in _toml()["hooks"].values()}
    for where, names in all_variables().items():
        unknown = {n for n in names if n.startswith("STAKEFLOW_") and n not in known}
        assert not unknown, f"{where} sets {unknown}, which no setting reads"
        assert {n for n in names if n.startswith("TEMPORAL_")} <= TEMPORAL_VARIABLES, where
        otel = {n for n in names if n.startswith("OTEL_")}  # the standard OpenTelemetry variables (README, Traces)
        hf = {"HF_TOKEN"} if "worker-train" in where else set()  # the trainer downloads the base model
        others = names - known - TEMPORAL_VARIABLES - hooks - otel - hf - {"ANTHROPIC_API_KEY"}
        assert not others, f"{where} sets {others}"
        if "worker-frontier" not in where:
            assert "ANTHROPIC_API_KEY" not in names, f"{where} holds the frontier key"
    everywhere = all_variables()
    for where in ("k8s stakeflow-webhooks", "compose webhooks"):
        assert hooks <= everywhere[where] and API_TOKEN_ENV in everywhere[where]
        assert "STAKEFLOW_FRONTIER_AVAILABLE" in everywhere[where]
    for where in ("k8s stakeflow-worker-frontier", "compose worker-frontier"):
        assert "ANTHROPIC_API_KEY" in everywhere[where]
    assert {"k8s stakeflow-worker-train", "compose worker-train"} <= set(everywhere)
    for where, names in everywhere.items():
        if "setup" not in where:
            assert names & {"STAKEFLOW_CODEC_KEYS", "STAKEFLOW_CODEC_KEYS_FILE"}, (
                f"{where} would write payloads in clear"
            )


def _toml() -> dict:
    import tomllib

    return tomllib.loads((DEPLOY / "stakeflow.toml").read_text())


def test_the_configmap_carries_deploy_s_stakeflow_toml_and_it_loads(tmp_path, monkeypatch):
    text = (DEPLOY / "stakeflow.toml").read_text()
    assert by_name("ConfigMap")["stakeflow-toml"]["data"]["stakeflow.toml"] == text
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(text)
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    from stakeflow.config import load_settings

    s = load_settings()
    assert "github-issues" in s.hooks and s.frontier_model


def test_vllm_serves_loras_on_a_gpu_and_reports_health():
    vllm = container(by_name("Deployment")["stakeflow-vllm"])
    args = " ".join(vllm["args"])
    for flag in ("--enable-lora", "--max-loras=", "--max-lora-rank=", "--port=8000"):
        assert flag in args
    assert env_of(vllm)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    svc = compose()["services"]["vllm"]
    assert "--enable-lora" in svc["command"] and svc["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    [device] = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and "/health" in " ".join(svc["healthcheck"]["test"])


def test_secrets_are_referenced_and_the_readme_says_how_to_create_them():
    readme = (DEPLOY / "README.md").read_text()
    referenced = set()
    for d in k8s_docs():
        text = json.dumps(d)
        referenced |= set(re.findall(r'"secretName": "([^"]+)"', text))
        referenced |= set(re.findall(r'"secretKeyRef": \{"name": "([^"]+)"', text))
    assert kind("Secret") == [], "no Secret objects in the repository: they are created by the operator"
    assert referenced
    for name in referenced - {"stakeflow-ingress-tls"}:
        assert f"kubectl -n stakeflow create secret generic {name}" in readme, name
    assert (REPO / ".gitignore").read_text().count("deploy/.env") == 1


def test_the_setup_job_registers_the_search_attributes():
    [job] = kind("Job")
    [c] = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["admin", "setup-search-attributes"]
    assert compose()["services"]["setup"]["command"] == ["admin", "setup-search-attributes"]
    pdbs = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for p in kind("PodDisruptionBudget")}
    components = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in kind("Deployment")}
    # One GPU pod each: no budget (pdb.yaml says why).
    assert components - {"vllm", "worker-train"} <= pdbs and not {"vllm", "worker-train"} & pdbs


def test_the_readme_s_search_attribute_command_registers_every_attribute():
    from stakeflow.core.contracts import ATTRIBUTES

    readme = (DEPLOY / "README.md").read_text()
    block = readme.split("temporal operator search-attribute create", 1)[1].split("```", 1)[0]
    pairs = re.findall(r"--name (\w+) --type (\w+)", block)
    assert sorted(pairs) == sorted((a.name, a.kind) for a in ATTRIBUTES)
