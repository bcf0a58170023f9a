"""The deployment files agree with the code and with their schemas.

docker-compose.yml, the Dockerfile, deploy/prometheus/prometheus.yml and the manifests under
deploy/kubernetes/ name CLI commands, MODELSTREAM_* settings and ports that the code defines;
these tests read both sides, so neither can drift alone. Schema checks run where the validators
are installed (check-jsonschema ships the compose-spec schema, kubernetes-validate the Kubernetes
ones, kubectl renders the kustomization) and are skipped, with the reason, where they are not.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from services.cli.main import SERVICES, _parser
from services.runtime.metrics import ServiceEndpoint
from services.runtime.settings import _SECRET_FILES, SERVICE_PORTS, Settings

yaml = pytest.importorskip("yaml", reason="PyYAML reads the deployment files (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
K8S = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = K8S / "kustomization.yaml"

SETTINGS_ENV = {f"MODELSTREAM_{name.upper()}" for name in Settings.model_fields}
SECRET_FILE_ENV = {f"MODELSTREAM_{name.upper()}_FILE" for name in _SECRET_FILES}
WORKLOAD_KINDS = {"Deployment", "Job"}
# Services that run as exactly one replica: the monitor's windows must see every partition; the
# retrain coordinator is the low-volume control plane (more replicas would only wait).
SINGLETONS = {"monitor", "retrain"}
# Services that publish new model versions: they mount the artifact store read-write.
WRITERS = {"retrain"}
# Services whose deployment files come with the service itself. retrain: whoever lands its
# compose service, Deployment, scrape job and dashboard target drops it from here, and every
# check below then covers it too.
PENDING: set[str] = set()
DEPLOYED = tuple(s for s in SERVICES if s not in PENDING)
# The dashboard reads topics by assignment and scrapes the others: no consumer group, no Redis.
READERS = {"dashboard"}
STREAM_SERVICES = tuple(s for s in DEPLOYED if s not in READERS)
# Replicas per service in the Kubernetes manifests.
K8S_REPLICAS = {"ingest": 2, "predict": 3, "join": 2, "monitor": 1, "dashboard": 1,
                "retrain": 1}


# -- loading --------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def compose_services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def uses_modelstream_image(svc: dict[str, Any]) -> bool:
    return "build" in svc or "modelstream" in str(svc.get("image", "")).split("/")[-1]


def modelstream_compose_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose_services().items() if uses_modelstream_image(s)}


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in k8s_files():
        docs.extend((path, d) for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def k8s_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_documents() if d["kind"] == kind}


def applied_objects(kind: str) -> dict[str, dict[str, Any]]:
    """Objects of the files the kustomization applies (not the *.example.yaml ones)."""
    listed = {K8S / r for r in load_yaml(KUSTOMIZATION)["resources"]}
    return {
        d["metadata"]["name"]: d
        for p, d in k8s_documents()
        if d["kind"] == kind and p in listed
    }


def workloads() -> list[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every Deployment and Job that is applied."""
    return [
        (name, obj["spec"]["template"]["spec"])
        for kind in sorted(WORKLOAD_KINDS)
        for name, obj in applied_objects(kind).items()
    ]


def configmap_env() -> dict[str, str]:
    (cm,) = applied_objects("ConfigMap").values()
    return {k: str(v) for k, v in cm["data"].items()}


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets: its ConfigMaps (envFrom), then its own env."""
    env: dict[str, str] = {}
    configmaps = applied_objects("ConfigMap")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        env[item["name"]] = str(item.get("value", ""))
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings built from exactly ``env`` (secret-file variables left out: no files here)."""
    for key in list(os.environ):
        if key.startswith("MODELSTREAM_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("MODELSTREAM_") and key not in SECRET_FILE_ENV:
            monkeypatch.setenv(key, value)
    return Settings()


def cli_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def run_choices() -> set[str]:
    run = cli_commands(_parser())["run"]
    (service,) = [a for a in run._actions if a.dest == "service"]
    return set(service.choices or ())


def assert_cli_argv(argv: list[str], where: str) -> argparse.Namespace:
    """``modelstream *argv`` is a command the CLI accepts."""
    assert argv, f"{where}: no command"
    assert argv[0] in cli_commands(_parser()), f"{where}: no CLI command {argv[0]!r}"
    try:
        return _parser().parse_args(argv)
    except SystemExit as exc:  # argparse rejected it
        raise AssertionError(f"{where}: `modelstream {' '.join(argv)}` is rejected") from exc


def reads_artifacts(service: str) -> bool:
    """Whether ``modelstream run SERVICE`` opens the artifact store (so needs the volume)."""
    return "ArtifactStore" in (ROOT / "services" / service / "service.py").read_text()


def service_port(env: dict[str, str], service: str) -> int:
    return int(env.get("MODELSTREAM_METRICS_PORT") or SERVICE_PORTS[service])


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("modelstream_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the CLI that containers run ------------------------------------------------------------


def test_run_choices_are_the_services() -> None:
    assert run_choices() == set(SERVICES)
    assert set(SERVICES) <= set(SERVICE_PORTS)
    assert set(K8S_REPLICAS) == set(DEPLOYED)
    assert SINGLETONS.issubset(SERVICES) and READERS.issubset(SERVICES)


def test_which_services_read_the_artifact_store() -> None:
    # The deployment files mount the store exactly where this says; a change here is a change
    # to docker-compose.yml and deploy/kubernetes/ too.
    assert {s for s in SERVICES if reads_artifacts(s)} == {"ingest", "predict", "monitor"}


def test_compose_services_run_real_cli_commands() -> None:
    services = modelstream_compose_services()
    assert {"topics", "model", *DEPLOYED} <= set(services)
    for name, svc in services.items():
        if "entrypoint" in svc:
            continue  # a Python one-off: checked below
        argv = [str(a) for a in svc["command"]]
        args = assert_cli_argv(argv, f"compose service {name}")
        if args.command == "run":
            assert args.service == name, f"compose service {name} runs {args.service}"


def _python_c(svc: dict[str, Any]) -> str:
    entry = [str(a) for a in svc["entrypoint"]]
    assert entry[:2] == ["python", "-c"] and len(entry) == 3, entry
    return entry[2]


def test_compose_python_entrypoints_import_what_exists() -> None:
    for name, svc in modelstream_compose_services().items():
        if "entrypoint" not in svc:
            continue
        tree = ast.parse(_python_c(svc), filename=f"compose:{name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module
                module = __import__(node.module, fromlist=["_"])
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{name}: {node.module}.{alias.name}"


def test_compose_model_init_places_the_demo_model(tmp_path: Path) -> None:
    """Runs the `model` one-shot's Python as the container would, on a scratch store."""
    svc = compose_services()["model"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSTREAM_")}
    env.update(compose_env(svc))
    env["MODELSTREAM_ARTIFACT_DIR"] = str(tmp_path / "artifacts")
    env["MODELSTREAM_DATA_DIR"] = str(tmp_path / "var")
    proc = subprocess.run(
        [sys.executable, "-c", _python_c(svc)], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "artifacts" / "agrawal" / "1" / "model.onnx").is_file()
    assert (tmp_path / "artifacts" / "agrawal" / "1" / "card.json").is_file()


def test_dockerfile_entrypoint_and_default_command() -> None:
    instructions = dict(reversed(dockerfile_instructions()))  # the first of each, for ARG/FROM
    last = dict(dockerfile_instructions())  # the last of each: the runtime stage
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(last["ENTRYPOINT"]) == ["modelstream"]
    assert "modelstream" in scripts
    args = assert_cli_argv(json.loads(last["CMD"]), "Dockerfile CMD")
    assert (args.command, args.service) == ("run", "predict")
    assert "python:3.11-slim" in instructions["ARG"] or "python:3.11-slim" in instructions["FROM"]
    user = last["USER"].split(":")[0]
    assert user not in {"root", "0"}
    assert "/healthz" in last["HEALTHCHECK"]
    assert "modelstream-healthcheck" in last["HEALTHCHECK"]


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pat) for pat in patterns for p in prefixes)


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".venv", "var", "tests/interop/node/node_modules", ".git"):
        assert _ignored(excluded, patterns), f".dockerignore lets {excluded} in"
    sources = []
    for op, rest in dockerfile_instructions():
        if op == "COPY" and "--from=" not in rest:
            sources.extend(rest.split()[:-1])
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
        assert not _ignored(src, patterns), f".dockerignore drops {src}, which the build copies"


# -- settings -------------------------------------------------------------------------------


def test_compose_modelstream_env_is_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, svc in modelstream_compose_services().items():
        env = compose_env(svc)
        unknown = {k for k in env if k.startswith("MODELSTREAM_")} - SETTINGS_ENV - SECRET_FILE_ENV
        assert not unknown, f"compose service {name}: not settings: {sorted(unknown)}"
        settings = settings_from(env, monkeypatch)  # values parse, too
        assert settings.kafka_bootstrap and settings.redis_url
        assert str(settings.artifacts) == "/artifacts"
        assert settings.metrics_host == "0.0.0.0"


def test_k8s_modelstream_env_is_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    names = set(configmap_env())
    for _, pod in workloads():
        for c in pod["containers"]:
            names |= {e["name"] for e in c.get("env", [])}
            settings_from(container_env(c), monkeypatch)  # values parse, too
    names = {n for n in names if n.startswith("MODELSTREAM_")}
    unknown = names - SETTINGS_ENV - SECRET_FILE_ENV
    assert not unknown, f"not settings: {sorted(unknown)}"


def test_k8s_secret_files_come_from_the_mounted_secret() -> None:
    (example,) = k8s_objects("Secret").values()
    keys = set(example.get("stringData", {})) | set(example.get("data", {}))
    assert all(not v for v in example.get("stringData", {}).values()), "no real secret values"
    for name, pod in workloads():
        secret_volumes = {
            v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v
        }
        for c in pod["containers"]:
            mounts = {
                m["mountPath"]: secret_volumes[m["name"]]
                for m in c.get("volumeMounts", []) if m["name"] in secret_volumes
            }
            for key, value in container_env(c).items():
                if key not in SECRET_FILE_ENV:
                    continue
                directory, _, filename = value.rpartition("/")
                assert mounts.get(directory) == example["metadata"]["name"], (
                    f"{name}: {key}={value} is not in the mounted Secret"
                )
                assert filename in keys, f"{name}: {key}: the Secret has no key {filename}"


# -- ports, partitions, wiring (compose) ----------------------------------------------------


def test_compose_ports_match_the_env_and_prometheus() -> None:
    services = compose_services()
    scraped = {}
    for job in load_yaml(PROMETHEUS)["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd.get("type") == "A"
            for target in sd["names"]:
                scraped[target] = sd["port"]
    runners = {
        n: s for n, s in modelstream_compose_services().items()
        if s.get("command", [None])[0] == "run"
    }
    assert set(runners) == set(DEPLOYED)
    for name, svc in runners.items():
        port = service_port(compose_env(svc), name)
        assert str(port) in [str(p) for p in svc.get("expose", [])], name
        assert scraped.get(name) == port, f"prometheus scrapes {name} on {scraped.get(name)}"
        assert "modelstream-healthcheck" in " ".join(svc["healthcheck"]["test"])
    assert set(scraped) <= set(services)


def test_compose_partitions_cover_the_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose_services()
    assert services["predict"]["deploy"]["replicas"] >= 2
    for name in DEPLOYED:
        svc = services[name]
        replicas = svc.get("deploy", {}).get("replicas", svc.get("scale", 1))
        settings = settings_from(compose_env(svc), monkeypatch)
        assert settings.partitions >= replicas, name


def test_monitor_runs_exactly_one_replica() -> None:
    """compose and Kubernetes both run one monitor, and Kubernetes never two at once."""
    services = compose_services()
    deployments = applied_objects("Deployment")
    budgets = applied_objects("PodDisruptionBudget")
    autoscalers = applied_objects("HorizontalPodAutoscaler")
    for name in SINGLETONS:
        svc = services[name]
        assert svc["deploy"]["replicas"] == 1, f"compose {name}"
        assert svc.get("scale", 1) == 1, f"compose {name}"
        dep = deployments[f"modelstream-{name}"]
        assert dep["spec"]["replicas"] == 1, f"k8s {name}"
        # A rolling update would run the old and the new pod side by side, splitting the
        # partitions between two monitors: the old one must stop (and checkpoint) first.
        assert dep["spec"]["strategy"] == {"type": "Recreate"}, f"k8s {name}"
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
        for hpa in autoscalers.values():
            assert hpa["spec"]["scaleTargetRef"] != target, f"an autoscaler scales {name}"
        # No budget that would forbid evicting the only pod (and so block node drains).
        labels = dep["spec"]["template"]["metadata"]["labels"]
        for pdb in budgets.values():
            if _selects(pdb["spec"]["selector"]["matchLabels"], labels):
                spec = pdb["spec"]
                assert spec.get("minAvailable", 0) == 0 and spec.get("maxUnavailable", 1) != 0, (
                    f"PodDisruptionBudget {pdb['metadata']['name']} blocks evicting {name}"
                )
    scalable = set(DEPLOYED) - SINGLETONS
    for name in scalable:
        strategy = deployments[f"modelstream-{name}"]["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate", name


def test_compose_wiring() -> None:
    doc = compose()
    services = doc["services"]
    volumes = set(doc.get("volumes", {}))
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if dep in ("topics", "model"):
                assert cond["condition"] == "service_completed_successfully"
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name}: undeclared volume {source}"
            else:
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    for one_shot in ("topics", "model"):
        assert services[one_shot].get("restart") == "no"
    for name in DEPLOYED:
        deps = services[name]["depends_on"]
        needs = {"kafka", "topics"} if name in READERS else {"kafka", "redis", "topics"}
        assert needs <= set(deps), name
        assert "healthcheck" in services[name], name
        mounts = services[name].get("volumes", [])
        if name in WRITERS:
            assert "model" in deps, name
            assert "artifacts:/artifacts" in mounts, name
        elif reads_artifacts(name):
            assert "model" in deps, name
            assert "artifacts:/artifacts:ro" in mounts, name
        else:
            assert not any(m.split(":")[0] == "artifacts" for m in mounts), name
    assert "artifacts:/artifacts" in services["model"]["volumes"]  # writable there

    kafka_env = compose_env(services["kafka"])
    assert "broker" in kafka_env["KAFKA_PROCESS_ROLES"] and "controller" in kafka_env[
        "KAFKA_PROCESS_ROLES"
    ], "Kafka runs in KRaft mode"
    for name, svc in modelstream_compose_services().items():
        env = compose_env(svc)
        bootstrap = env["MODELSTREAM_KAFKA_BOOTSTRAP"]
        assert f"//{bootstrap}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"], name
        assert bootstrap.split(":")[0] in services
        redis_host = re.match(r"redis://([^:/]+)", env["MODELSTREAM_REDIS_URL"])
        assert redis_host and redis_host.group(1) in services, name


# -- Kubernetes -----------------------------------------------------------------------------


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(match)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_k8s_manifests_are_namespace_agnostic() -> None:
    for path, doc in k8s_documents():
        assert "namespace" not in doc["metadata"], f"{path.name}: {doc['metadata']['name']}"


def test_k8s_deployments_probes_resources_security() -> None:
    deployments = applied_objects("Deployment")
    replicas = {n: d["spec"]["replicas"] for n, d in deployments.items()}
    assert replicas == {f"modelstream-{s}": r for s, r in K8S_REPLICAS.items()}
    for name, dep in deployments.items():
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        assert _selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
        assert pod["securityContext"]["runAsNonRoot"] is True
        (c,) = pod["containers"]
        args = assert_cli_argv(c["args"], name)
        assert args.command == "run" and name == f"modelstream-{args.service}"
        port = service_port(container_env(c), args.service)
        probes = {k: c[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for kind, probe in probes.items():
            assert _port_number(c, probe["httpGet"]["port"]) == port, f"{name} {kind}"
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][section]), f"{name} {section}"
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]


def test_k8s_writable_tmp_and_readonly_artifacts() -> None:
    (pvc,) = applied_objects("PersistentVolumeClaim").values()
    assert pvc["metadata"]["name"] == "modelstream-artifacts"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, pod in workloads():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            if c.get("securityContext", {}).get("readOnlyRootFilesystem"):
                assert "emptyDir" in volumes[mounts["/tmp"]["name"]], f"{name}: /tmp"
            artifact_dir = container_env(c).get("MODELSTREAM_ARTIFACT_DIR")
            claims = {v.get("persistentVolumeClaim", {}).get("claimName") for v in volumes.values()}
            writes = c["args"][0] == "run" and c["args"][1] in WRITERS
            if not writes and (c["args"][0] != "run" or not reads_artifacts(c["args"][1])):
                assert "modelstream-artifacts" not in claims, f"{name} needs no artifacts"
                continue
            mount = mounts[artifact_dir]
            claim = volumes[mount["name"]]["persistentVolumeClaim"]
            assert claim["claimName"] == "modelstream-artifacts"
            if writes:
                assert not mount.get("readOnly") and not claim.get("readOnly"), name
            else:
                assert mount["readOnly"] is True and claim["readOnly"] is True


def test_k8s_headless_services_and_disruption_budgets() -> None:
    deployments = applied_objects("Deployment")
    services = applied_objects("Service")
    budgets = applied_objects("PodDisruptionBudget")
    for dep in deployments.values():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        port = service_port(container_env(c), c["args"][1])
        (svc,) = [s for s in services.values() if _selects(s["spec"]["selector"], labels)]
        assert svc["spec"]["clusterIP"] == "None"
        (svc_port,) = svc["spec"]["ports"]
        assert _port_number(c, svc_port["targetPort"]) == port == svc_port["port"]
        notes = svc["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/port"] == str(port)
        assert notes["prometheus.io/path"] == "/metrics"
        selected = [b for b in budgets.values()
                    if _selects(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(selected) <= 1, dep["metadata"]["name"]
        if dep["spec"]["replicas"] > 1:  # a singleton needs none (see the monitor's test)
            assert selected, f"{dep['metadata']['name']} has no PodDisruptionBudget"
        for pdb in selected:
            assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])


def test_k8s_partitions_cover_the_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(configmap_env(), monkeypatch)
    for name, dep in applied_objects("Deployment").items():
        assert settings.partitions >= dep["spec"]["replicas"], name


def test_k8s_topics_job() -> None:
    (job,) = applied_objects("Job").values()
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    (c,) = pod["containers"]
    assert assert_cli_argv(c["args"], "topics Job").command == "topics"
    assert "resources" in c


def test_kustomization_lists_every_manifest_that_exists() -> None:
    kustomization = load_yaml(KUSTOMIZATION)
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    for resource in listed:
        assert (K8S / resource).is_file(), f"kustomization lists missing {resource}"
    expected = {p.name for p in k8s_files() if not p.name.endswith(".example.yaml")}
    assert set(listed) == expected
    assert "secret.example.yaml" not in listed  # applying it would clobber the real Secret
    images = {i["name"] for i in kustomization.get("images", [])}
    for _, pod in workloads():
        for c in pod["containers"]:
            assert c["image"].split(":")[0] in images


# -- the container health check -------------------------------------------------------------


def test_healthcheck_finds_the_port() -> None:
    hc = load_healthcheck()
    assert hc.metrics_port({"MODELSTREAM_METRICS_PORT": "9400"}, ["modelstream", "topics"]) == 9400
    venv = ["/opt/venv/bin/python", "/opt/venv/bin/modelstream"]
    for service in SERVICES:
        port = SERVICE_PORTS[service]
        assert hc.metrics_port({}, [*venv, "run", service]) == port
        assert hc.metrics_port({}, ["/sbin/docker-init", "--", "modelstream", "run", service]) \
            == port
    assert hc.metrics_port({}, [*venv, "topics"]) is None
    assert hc.probe_url({"MODELSTREAM_METRICS_HOST": "0.0.0.0"}, 9302) == \
        "http://127.0.0.1:9302/healthz"
    assert hc.probe_url({"MODELSTREAM_METRICS_HOST": "::"}, 1, "/readyz") == "http://[::1]:1/readyz"


@pytest.fixture
def endpoint() -> Iterator[tuple[ServiceEndpoint, dict[str, bool]]]:
    state = {"ready": False}
    ep = ServiceEndpoint("127.0.0.1", 0, lambda: dict(state)).start()
    yield ep, state
    ep.stop()


def test_healthcheck_against_a_service_endpoint(
    endpoint: tuple[ServiceEndpoint, dict[str, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ep, state = endpoint
    hc = load_healthcheck()
    monkeypatch.setenv("MODELSTREAM_METRICS_HOST", "0.0.0.0")
    monkeypatch.setenv("MODELSTREAM_METRICS_PORT", str(ep.port))
    assert hc.main([]) == 0
    assert hc.main(["/readyz"]) == 1
    state["ready"] = True
    assert hc.main(["/readyz"]) == 0


def test_healthcheck_fails_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the probe
    monkeypatch.setenv("MODELSTREAM_METRICS_PORT", str(port))
    assert load_healthcheck().main([]) == 1


# -- schemas (where the validators are installed) -------------------------------------------


def _compose_schema() -> dict[str, Any]:
    # Located, not imported: the package's CLI is not needed, only the vendored schema file.
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("check-jsonschema (ships the compose-spec schema) is not installed")
    jsonschema = pytest.importorskip("jsonschema")
    path = Path(next(iter(spec.submodule_search_locations)))
    schema_file = path / "builtin_schemas" / "vendor" / "compose-spec.json"
    if not schema_file.is_file():
        pytest.skip(f"this check-jsonschema has no compose-spec schema ({schema_file})")
    schema = json.loads(schema_file.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


def _compose_errors(doc: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(_compose_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_compose_file_matches_the_compose_spec() -> None:
    assert _compose_errors(compose()) == []


def test_compose_spec_check_rejects_a_broken_file() -> None:
    doc = compose()
    doc["services"]["predict"]["deploy"]["replica"] = 2  # a typo
    doc["services"]["ingest"]["depends_on"]["topics"]["condition"] = "service_finished"
    assert len(_compose_errors(doc)) >= 2


KUBERNETES_VERSIONS = ("1.27.0", None)  # the oldest supported, and the newest the package knows


def _kubernetes_validate() -> ModuleType:
    return pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (dev extra)"
    )


@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_k8s_manifest_validates(path: Path) -> None:
    kv = _kubernetes_validate()
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for version in KUBERNETES_VERSIONS:
        for doc in docs:
            kv.validate(doc, version or kv.latest_version(), strict=True)


def test_kubernetes_validate_rejects_a_broken_manifest() -> None:
    kv = _kubernetes_validate()
    (dep,) = [d for d in yaml.safe_load_all((K8S / "predict.yaml").read_text())
              if d["kind"] == "Deployment"]
    dep["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}  # a typo
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, "1.27.0", strict=True)


def test_kustomization_renders() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    proc = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    expected = {
        (d["kind"], d["metadata"]["name"])
        for p, d in k8s_documents() if not p.name.endswith(".example.yaml")
    }
    assert {(d["kind"], d["metadata"]["name"]) for d in rendered} == expected
    for d in rendered:
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelstream"


def test_prometheus_config_checks() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    proc = subprocess.run([promtool, "check", "config", str(PROMETHEUS)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- Prometheus rules and Grafana dashboards name metrics that exist ---------------------------

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yml"
GRAFANA = ROOT / "deploy" / "grafana"
KEDA = ROOT / "deploy" / "keda"
# Labels Prometheus adds to every scraped series (the target's, and the relabelled `service`).
TARGET_LABELS = {"job", "instance", "service"}
# Series of the process collector every prometheus-client process exports, and Prometheus' own.
PROCESS_SERIES = {"process_cpu_seconds_total": (), "process_resident_memory_bytes": (),
                  "up": ()}


def known_series() -> dict[str, tuple[str, ...]]:
    """Every series name services/runtime/metrics.py defines → its label names."""
    from prometheus_client import Counter, Gauge, Histogram

    from services.runtime import metrics

    out: dict[str, tuple[str, ...]] = dict(PROCESS_SERIES)
    suffixes = {Counter: ("_total",), Gauge: ("",), Histogram: ("_bucket", "_sum", "_count")}
    for obj in vars(metrics).values():
        for kind, ends in suffixes.items():
            if isinstance(obj, kind):
                (family,) = obj.describe()
                for end in ends:
                    extra = ("le",) if end == "_bucket" else ()
                    out[family.name + end] = (*obj._labelnames, *extra)  # noqa: SLF001
    return out


def promql_problems(expr: str, where: str) -> list[str]:
    """Series that metrics.py does not define, and label matchers on labels they lack."""
    known = known_series()
    problems = []
    for name in re.findall(r"\b(?:modelstream|process)_[a-z0-9_]+\b|\bup(?=\{)", expr):
        if name not in known:
            problems.append(f"{where}: {name} is not defined in services/runtime/metrics.py")
    for name, matchers in re.findall(r"\b([a-z_][a-z0-9_]*)\{([^}]*)\}", expr):
        if name not in known:
            continue
        for label in re.findall(r"([a-z_][a-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            if label not in known[name] and label not in TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {label}")
    return problems


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make system-deps installs Debian's prometheus)")
    return promtool


def test_promql_check_catches_unknown_names() -> None:
    assert promql_problems('rate(modelstream_events_in_total{service="x"}[1m])', "ok") == []
    assert promql_problems("modelstream_events_in", "x")  # a counter without _total
    assert promql_problems('modelstream_model_quality{metrc="accuracy"}', "x")  # a typo
    assert promql_problems("sum(modelstream_no_such_thing)", "x")


def test_prometheus_rules_check() -> None:
    proc = subprocess.run([_promtool(), "check", "rules", str(RULES)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"SUCCESS: \d+ rules found", proc.stdout)


def test_prometheus_rules_fire_in_promtool_tests() -> None:
    """Every alert has a promtool unit test in which it fires."""
    proc = subprocess.run([_promtool(), "test", "rules", str(RULES_TESTS)],
                          capture_output=True, text=True, timeout=60, cwd=RULES_TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    alerts = {r["alert"] for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r}
    fired = {
        t["alertname"] for case in load_yaml(RULES_TESTS)["tests"]
        for t in case.get("alert_rule_test", []) if t.get("exp_alerts")
    }
    assert alerts == fired


def test_prometheus_rules_cover_the_issue_and_name_real_metrics() -> None:
    rules = [r for g in load_yaml(RULES)["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert names == {
        "ModelstreamFeatureDrift", "ModelstreamAccuracyLow",
        "ModelstreamEstimatedAccuracyDropping", "ModelstreamConsumerLagGrowing",
        "ModelstreamDeadLetterRate", "ModelstreamServiceDown", "ModelstreamModelRolledBack",
    }
    problems = [p for r in rules for p in promql_problems(r["expr"], r["alert"])]
    assert problems == []
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"], r["alert"]
    config = load_yaml(PROMETHEUS)
    assert config["rule_files"] == ["rules.yml"]
    mounts = compose_services()["prometheus"]["volumes"]
    assert "./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in mounts


def grafana_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text())
            for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def test_grafana_dashboards_are_well_formed() -> None:
    dashboards = grafana_dashboards()
    assert set(dashboards) == {"operations.json", "model-quality.json"}
    (datasource,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    uids = set()
    for name, d in dashboards.items():
        assert d["uid"] not in uids and d["title"] and isinstance(d["schemaVersion"], int), name
        uids.add(d["uid"])
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        cells: set[tuple[int, int]] = set()
        for p in d["panels"]:
            where = f"{name}: {p['title']}"
            assert p["type"] in ("timeseries", "stat", "table", "heatmap", "gauge"), where
            assert p["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, where
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, where
            for x in range(g["x"], g["x"] + g["w"]):  # panels do not overlap
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{where} overlaps another panel"
                    cells.add((x, y))
            refs = [t["refId"] for t in p["targets"]]
            assert p["targets"] and len(refs) == len(set(refs)), where
            for t in p["targets"]:
                assert t["expr"].strip(), where


def test_grafana_dashboards_name_real_metrics() -> None:
    problems = [
        problem
        for name, d in grafana_dashboards().items()
        for p in d["panels"] for t in p["targets"]
        for problem in promql_problems(t["expr"], f"{name}: {p['title']}")
    ]
    assert problems == []
    used = {n for d in grafana_dashboards().values() for p in d["panels"] for t in p["targets"]
            for n in re.findall(r"\bmodelstream_[a-z0-9_]+", t["expr"])}
    for wanted in ("modelstream_events_in_total", "modelstream_consumer_lag",
                   "modelstream_prediction_latency_seconds_bucket", "modelstream_model_quality",
                   "modelstream_feature_drift", "modelstream_events_rejected_total"):
        assert wanted in used, wanted


def test_compose_grafana_is_provisioned() -> None:
    grafana = compose_services()["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "modelstream.yml")[
        "providers"]
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    home = compose_env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.rpartition("/")[2] in grafana_dashboards()
    for port in grafana["ports"]:
        assert str(port).startswith("127.0.0.1:"), "Grafana listens on loopback only"


# -- the dashboard's targets ------------------------------------------------------------------


def test_compose_dashboard_scrapes_every_service() -> None:
    services = compose_services()
    dash = services["dashboard"]
    env = compose_env(dash)
    targets = json.loads(env["MODELSTREAM_DASHBOARD_TARGETS"])
    assert set(targets) == set(STREAM_SERVICES)
    for name, hostport in targets.items():
        host, _, port = hostport.rpartition(":")
        assert host == name and host in services
        assert int(port) == service_port(compose_env(services[name]), name)
    assert dash["ports"] == [f"127.0.0.1:{SERVICE_PORTS['dashboard']}:{SERVICE_PORTS['dashboard']}"]


def test_k8s_dashboard_scrapes_every_service() -> None:
    (dep,) = [d for n, d in applied_objects("Deployment").items() if n == "modelstream-dashboard"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    targets = json.loads(container_env(c)["MODELSTREAM_DASHBOARD_TARGETS"])
    assert set(targets) == set(STREAM_SERVICES)
    services = applied_objects("Service")
    for hostport in targets.values():
        host, _, port = hostport.rpartition(":")
        svc = services[host]
        assert svc["spec"]["clusterIP"] == "None", f"{host}: headless, one address per pod"
        assert [p["port"] for p in svc["spec"]["ports"]] == [int(port)]


# -- KEDA -------------------------------------------------------------------------------------


def scaled_objects() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((KEDA / "scaledobjects.yaml").read_text()) if d]
    assert all(d["apiVersion"] == "keda.sh/v1alpha1" and d["kind"] == "ScaledObject"
               for d in docs)
    return {d["spec"]["scaleTargetRef"]["name"]: d for d in docs}


def test_keda_scales_each_consumer_service_on_its_group_lag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.cli.inspect import GROUPS

    settings = settings_from(configmap_env(), monkeypatch)
    deployments = applied_objects("Deployment")
    objects = scaled_objects()
    scaled = set(STREAM_SERVICES) - SINGLETONS
    assert set(objects) == {f"modelstream-{s}" for s in scaled}
    for service in scaled:
        so = objects[f"modelstream-{service}"]
        spec = so["spec"]
        assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount",
                             "pollingInterval", "cooldownPeriod", "advanced", "triggers",
                             "idleReplicaCount", "fallback"}, service
        ref = spec["scaleTargetRef"]
        assert ref.get("kind", "Deployment") == "Deployment"
        assert ref.get("apiVersion", "apps/v1") == "apps/v1"
        dep = deployments[ref["name"]]
        assert spec["minReplicaCount"] == dep["spec"]["replicas"] >= 1, service
        # More replicas than partitions would sit idle.
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"] <= settings.partitions
        topics = set()
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka", service
            meta = trigger["metadata"]
            assert meta["bootstrapServers"] == settings.kafka_bootstrap
            assert meta["consumerGroup"] == f"{settings.topic_prefix}modelstream-{service}"
            assert int(meta["lagThreshold"]) > 0
            assert meta.get("allowIdleConsumers", "false") == "false"
            assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata are strings"
            topics.add(meta["topic"])
        assert topics == {settings.topics.name(t) for t in GROUPS[service]}, service
    for singleton in SINGLETONS:
        assert f"modelstream-{singleton}" not in objects


def test_keda_overlay_renders() -> None:
    kustomization = load_yaml(KEDA / "kustomization.yaml")
    assert kustomization["resources"] == ["../kubernetes", "scaledobjects.yaml"]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    proc = subprocess.run([kubectl, "kustomize", str(KEDA)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    assert {("ScaledObject", n) for n in scaled_objects()} <= kinds
    assert ("Deployment", "modelstream-dashboard") in kinds
    for d in rendered:
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelstream"
