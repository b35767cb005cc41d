"""Properties of the deployment files, checked on what is actually applied: the RENDERED Kustomize overlays
(``kubectl kustomize``), the Dockerfile's targets and the image pins.

kubectl (which embeds kustomize) is the one pinned in ``scripts/deploy_check.sh``'s tool venv
(.tools/deploy-venv); without it these tests are skipped, and ``scripts/deploy_check.sh`` (run by
scripts/lint.sh) installs it before running them.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from prometheus_client import REGISTRY
from pydantic_settings import BaseSettings

from hemascope.cli import main as cli_main
from hemascope.data import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
DOCKERFILE = REPO_ROOT / "deploy" / "docker" / "Dockerfile"
CONSTRAINTS = REPO_ROOT / "deploy" / "docker" / "constraints.txt"
OVERLAYS = ("dev", "gpu")
NAMESPACE = "hemascope"
SERVICES = ("gateway", "feature", "classifier", "detector", "explain")
GPU_SERVICES = ("detector", "feature")
USER_ID = 10001
#: The namespaces whose pods (the ingress controller's) may reach the research console.
CONSOLE_INGRESS = {"matchLabels": {"hemascope.io/console-ingress": "true"}}

Doc = dict[str, Any]


def _settings(service: str) -> type[BaseSettings]:
    if service == "feature":
        from services.feature.settings import FeatureSettings

        return FeatureSettings
    if service == "classifier":
        from services.classifier.settings import ClassifierSettings

        return ClassifierSettings
    if service == "detector":
        from services.detector.settings import DetectorSettings

        return DetectorSettings
    if service == "explain":
        from services.explain.settings import ExplainSettings

        return ExplainSettings
    if service == "console":
        from console.settings import ConsoleSettings

        return ConsoleSettings
    from gateway.settings import GatewaySettings

    return GatewaySettings


def _env_names(service: str) -> set[str]:
    return {f"HEMASCOPE_{service.upper()}_{name.upper()}" for name in _settings(service).model_fields}


#: Variables every process reads outside its service's settings, each with the code that reads it.
SHARED_ENV = {"HEMASCOPE_BACKBONE_DIR"}


def test_shared_env_is_read_by_the_code() -> None:
    assert (
        'os.environ.get("HEMASCOPE_BACKBONE_DIR")'
        in (REPO_ROOT / "services/feature/backbones.py").read_text()
    )


def _default(service: str, field: str) -> Any:
    return _settings(service).model_fields[field].default


# --- rendering --------------------------------------------------------------------------------------------


def _kubectl() -> str | None:
    """The pinned kubectl only: other releases' embedded kustomize renders differently or crashes."""
    local = REPO_ROOT / ".tools" / "deploy-venv" / "bin" / "kubectl"
    return str(local) if local.is_file() else None


@cache
def render(target: str) -> tuple[Doc, ...]:
    """The objects ``kubectl kustomize`` makes of a directory under deploy/k8s (or an absolute path)."""
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip(
            "the pinned kubectl is missing (scripts/deploy_check.sh installs it into .tools/deploy-venv)"
        )
    path = Path(target) if os.path.isabs(target) else K8S / target
    out = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


@pytest.fixture(scope="module")
def resnet50_overlay(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The gpu overlay plus the resnet50 component, as an operator would combine them."""
    where = tmp_path_factory.mktemp("overlay")
    (where / "kustomization.yaml").write_text(
        "resources: [{}]\ncomponents: [{}]\n".format(
            os.path.relpath(K8S / "overlays" / "gpu", where),
            os.path.relpath(K8S / "components/resnet50", where),
        )
    )
    return str(where)


@pytest.fixture(scope="module")
def console_overlay(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The base plus the research console component, as an operator would combine them."""
    where = tmp_path_factory.mktemp("console-overlay")
    (where / "kustomization.yaml").write_text(
        "resources: [{}]\ncomponents: [{}]\n".format(
            os.path.relpath(K8S / "base", where), os.path.relpath(K8S / "components/console", where)
        )
    )
    return str(where)


def kinds(docs: tuple[Doc, ...], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_containers(deployment: Doc, *, init: bool = True) -> Iterator[Doc]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec["containers"]
    if init:
        yield from spec.get("initContainers", [])


def all_targets() -> list[str]:
    return ["base", *(f"overlays/{o}" for o in OVERLAYS)]


@pytest.fixture(params=["base", "overlays/dev", "overlays/gpu", "resnet50", "console"])
def rendered(request: pytest.FixtureRequest, resnet50_overlay: str, console_overlay: str) -> tuple[Doc, ...]:
    combined = {"resnet50": resnet50_overlay, "console": console_overlay}
    return render(combined.get(request.param, request.param))


def _with_console(rendered: tuple[Doc, ...]) -> set[str]:
    """{"console"} when the rendering holds the research console, else nothing."""
    return {"console"} & set(kinds(rendered, "Deployment"))


# --- every rendering --------------------------------------------------------------------------------------


def test_everything_in_the_namespace(rendered: tuple[Doc, ...]) -> None:
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def test_every_service_and_redis_is_deployed(rendered: tuple[Doc, ...]) -> None:
    assert set(kinds(rendered, "Deployment")) == {*SERVICES, "redis", *_with_console(rendered)}


def test_probes_on_every_container(rendered: tuple[Doc, ...]) -> None:
    for name, deployment in kinds(rendered, "Deployment").items():
        for container in pod_containers(deployment, init=False):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{name}/{container['name']} has no {probe}"


def test_services_use_grpc_health_probes_with_a_patient_startup(rendered: tuple[Doc, ...]) -> None:
    """Native gRPC probes on each service's port; a slow model load is covered by the startup probe."""
    deployments = kinds(rendered, "Deployment")
    for service in SERVICES:
        container = deployments[service]["spec"]["template"]["spec"]["containers"][0]
        port = _default(service, "port")
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
            "grpc": port,
            "metrics": _default(service, "metrics_port"),
        }
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            if service == "gateway":  # TLS port: exec `hemascope health` (native gRPC probes cannot do TLS)
                command = probe["exec"]["command"]
                assert command[:2] == ["hemascope", "health"]
                assert command[-1] == f"127.0.0.1:{port}"
                assert any(arg.startswith("--ca=/etc/hemascope/tls/") for arg in command)
            else:
                assert probe["grpc"]["port"] == port
        startup = container["startupProbe"]
        window = startup["periodSeconds"] * startup["failureThreshold"]
        assert window >= (60 if service in ("gateway", "classifier") else 300), (service, window)


def test_no_container_runs_as_root(rendered: tuple[Doc, ...]) -> None:
    for name, deployment in kinds(rendered, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == USER_ID, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod_containers(deployment):
            context = container["securityContext"]
            assert context.get("runAsUser", USER_ID) != 0, (name, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (name, container["name"])


def test_requests_and_limits_on_every_container(rendered: tuple[Doc, ...]) -> None:
    for name, deployment in kinds(rendered, "Deployment").items():
        for container in pod_containers(deployment):
            resources = container["resources"]
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory", "ephemeral-storage"):
                    assert resource in resources.get(part, {}), (name, container["name"], part, resource)


def test_images_are_pinned(rendered: tuple[Doc, ...]) -> None:
    targets = _dockerfile_targets()
    for deployment in kinds(rendered, "Deployment").values():
        for container in pod_containers(deployment):
            image = container["image"]
            repo, _, tag = image.rpartition(":")
            assert repo and tag and tag != "latest", image
            if repo.startswith("hemascope/"):  # one of ours: a target of the Dockerfile
                assert repo.removeprefix("hemascope/") in targets, image


def test_each_deployment_has_a_service_and_a_disruption_budget(rendered: tuple[Doc, ...]) -> None:
    services, budgets = kinds(rendered, "Service"), kinds(rendered, "PodDisruptionBudget")
    for name, deployment in kinds(rendered, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert services[name]["spec"]["selector"].items() <= labels.items(), name
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items(), name


def test_settings_in_config_maps_and_env_exist(rendered: tuple[Doc, ...]) -> None:
    """A misspelt setting would be silently ignored by pydantic-settings (extra='ignore'): catch it here."""
    maps = {
        name.removeprefix("hemascope-").rsplit("-", 1)[0]: doc
        for name, doc in kinds(rendered, "ConfigMap").items()
    }
    assert set(maps) == {*SERVICES, *_with_console(rendered)}
    for service, config in maps.items():
        unknown = set(config["data"]) - _env_names(service)
        assert not unknown, (service, unknown)
    for service in (*SERVICES, *_with_console(rendered)):
        deployment = kinds(rendered, "Deployment")[service]
        for container in pod_containers(deployment):
            names = {e["name"] for e in container.get("env", []) if e["name"].startswith("HEMASCOPE_")}
            assert names <= _env_names(service), (service, names - _env_names(service))


def test_gateway_reaches_each_service_by_its_service_name(rendered: tuple[Doc, ...]) -> None:
    config = next(d for n, d in kinds(rendered, "ConfigMap").items() if n.startswith("hemascope-gateway"))
    services = kinds(rendered, "Service")
    for service in SERVICES[1:]:
        address = config["data"][f"HEMASCOPE_GATEWAY_{service.upper()}_ADDRESS"]
        port = _default(service, "port")
        assert address == f"dns:///{service}.{NAMESPACE}.svc.cluster.local:{port}"
        assert services[service]["spec"]["clusterIP"] == "None"  # headless: every pod resolvable
        assert {"name": "grpc", "port": port} in [
            {"name": p["name"], "port": p["port"]} for p in services[service]["spec"]["ports"]
        ]


def test_tls_and_api_keys_are_wired_from_secrets(rendered: tuple[Doc, ...]) -> None:
    gateway = kinds(rendered, "Deployment")["gateway"]["spec"]["template"]["spec"]
    config = next(d for n, d in kinds(rendered, "ConfigMap").items() if n.startswith("hemascope-gateway"))
    mounts = {m["name"]: m["mountPath"] for m in gateway["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in gateway["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "hemascope-gateway-tls"
    assert volumes["api-keys"]["secret"]["secretName"] == "hemascope-gateway-api-keys"
    data = config["data"]
    assert Path(data["HEMASCOPE_GATEWAY_TLS_CERT_FILE"]).parent == Path(mounts["tls"])
    assert Path(data["HEMASCOPE_GATEWAY_TLS_KEY_FILE"]).parent == Path(mounts["tls"])
    assert Path(data["HEMASCOPE_GATEWAY_API_KEYS_FILE"]).parent == Path(mounts["api-keys"])
    assert data["HEMASCOPE_GATEWAY_REQUIRE_API_KEY"] == "true"
    for secret in ("tls", "api-keys"):  # no subPath: Secret updates (key rotation) reach the pod
        assert all("subPath" not in m for m in gateway["containers"][0]["volumeMounts"]), secret


def test_cache_users_get_the_redis_password_and_the_cache_key_from_secrets(rendered: tuple[Doc, ...]) -> None:
    for name in ("feature", "explain"):
        spec = kinds(rendered, "Deployment")[name]["spec"]["template"]["spec"]
        container = next(c for c in spec["containers"] if c["name"] == name)
        env = {e["name"]: e for e in container["env"]}
        prefix = f"HEMASCOPE_{name.upper()}_"
        password = env[prefix + "REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert password == {"name": "hemascope-redis", "key": "password"}
        assert "@" not in env[prefix + "REDIS_URL"]["value"]  # no password in the URL
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert volumes["cache-key"]["secret"]["secretName"] == "hemascope-cache-key"
        assert mounts["cache-key"]["readOnly"] is True and "subPath" not in mounts["cache-key"]
        key_file = Path(env[prefix + "CACHE_KEY_FILE"]["value"])
        assert key_file.parent == Path(mounts["cache-key"]["mountPath"])
        assert {"redis_password", "cache_key_file"} <= set(_settings(name).model_fields)


def _policies(rendered: tuple[Doc, ...]) -> dict[str, Doc]:
    return kinds(rendered, "NetworkPolicy")


def test_default_deny_and_only_the_gateway_open_to_everyone(rendered: tuple[Doc, ...]) -> None:
    policies = _policies(rendered)
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for name, policy in policies.items():
        for rule in policy["spec"].get("ingress", []):
            if not rule.get("from"):  # from anyone
                assert policy["spec"]["podSelector"] == {
                    "matchLabels": {"app.kubernetes.io/name": "gateway"}
                }, name
                assert [p["port"] for p in rule["ports"]] == [_default("gateway", "port")]
            for peer in rule.get("from", []):
                assert "ipBlock" not in peer, name
                if (
                    peer.get("namespaceSelector") == CONSOLE_INGRESS
                ):  # the ingress controller's, to the console
                    assert policy["spec"]["podSelector"] == {
                        "matchLabels": {"app.kubernetes.io/name": "console"}
                    }
                    assert [p["port"] for p in rule["ports"]] == [_default("console", "port")]
                elif "namespaceSelector" in peer:  # another namespace: only Prometheus, only metrics ports
                    assert peer["namespaceSelector"] == {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                    metrics = {_default(s, "metrics_port") for s in SERVICES}
                    assert {p["port"] for p in rule["ports"]} <= metrics, name


def test_only_the_services_that_need_redis_reach_it(rendered: tuple[Doc, ...]) -> None:
    policies = _policies(rendered)
    [rule] = policies["redis-ingress"]["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"hemascope.io/redis-client": "true"}}}]
    for name, deployment in kinds(rendered, "Deployment").items():
        template = deployment["spec"]["template"]
        env = {e["name"] for c in template["spec"]["containers"] for e in c.get("env", [])}
        uses_redis = any(n.endswith("_REDIS_URL") for n in env)
        assert (template["metadata"]["labels"].get("hemascope.io/redis-client") == "true") == uses_redis, name
    assert {n for n in SERVICES if "redis_url" in _settings(n).model_fields} == {"feature", "explain"}


# --- the research console (components/console) ----------------------------------------------------------


def _console(console_overlay: str) -> tuple[Doc, dict[str, str], dict[str, Doc], dict[str, Doc]]:
    """The console's pod spec, its settings, its mounts and its volumes, by name (mounts by path)."""
    docs = render(console_overlay)
    pod = kinds(docs, "Deployment")["console"]["spec"]["template"]["spec"]
    config = next(d for n, d in kinds(docs, "ConfigMap").items() if n.startswith("hemascope-console-"))
    [container] = pod["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    return pod, config["data"], mounts, volumes


def test_the_console_reads_bundles_reports_and_batch_results_from_read_only_volumes(
    console_overlay: str,
) -> None:
    """Each folder the console's pages only read is a read-only mount its setting names: the bundles and
    reports from the models volume, the batch job's results from its own volume; the database and the jobs'
    folders are on the console's writable volume (the root file system is read-only)."""
    _, env, mounts, volumes = _console(console_overlay)
    wanted = {
        "BUNDLES_DIR": ("hemascope-models", "bundles"),
        "REPORTS_DIR": ("hemascope-models", "reports"),
        "BATCH_RESULTS_ROOT": ("hemascope-batch-data", "results"),
    }
    for setting, (claim, sub_path) in wanted.items():
        mount = mounts[env[f"HEMASCOPE_CONSOLE_{setting}"]]
        assert mount["readOnly"] is True and mount["subPath"] == sub_path, setting
        volume = volumes[mount["name"]]["persistentVolumeClaim"]
        assert volume == {"claimName": claim, "readOnly": True}, setting
    batch = render("batch")
    [job] = [d for d in batch if d["kind"] == "RayJob"]
    assert "--out /data/results" in job["spec"]["entrypoint"]  # the results/ the console mounts
    data = mounts["/var/lib/hemascope/console"]
    assert "readOnly" not in data
    assert volumes[data["name"]]["persistentVolumeClaim"] == {"claimName": "hemascope-console-data"}
    assert "hemascope-console-data" in kinds(render(console_overlay), "PersistentVolumeClaim")
    assert Path(env["HEMASCOPE_CONSOLE_JOBS_DIR"]).is_relative_to(data["mountPath"])
    database = env["HEMASCOPE_CONSOLE_DATABASE_URL"].removeprefix("sqlite:///")
    assert Path(database).is_relative_to(data["mountPath"])


def test_the_console_gets_its_files_from_secrets_and_holds_no_gateway_key(console_overlay: str) -> None:
    """The users file and the cookie secret are Secrets mounted as folders (updates reach the pod); of the
    gateway's TLS Secret only the CA is mounted. PromoteBundle, like every call, is authorised by the key a
    person logs in with: no API key or client certificate is configured."""
    _, env, mounts, volumes = _console(console_overlay)
    files = {
        "GATEWAY_CA_FILE": "hemascope-gateway-tls",
        "USERS_FILE": "hemascope-console-users",
        "SECRET_KEY_FILE": "hemascope-console-secret",
    }
    for setting, secret in files.items():
        path = Path(env[f"HEMASCOPE_CONSOLE_{setting}"])
        mount = mounts[str(path.parent)]
        assert mount["readOnly"] is True and "subPath" not in mount, setting
        assert volumes[mount["name"]]["secret"]["secretName"] == secret, setting
    ca = volumes[mounts[str(Path(env["HEMASCOPE_CONSOLE_GATEWAY_CA_FILE"]).parent)]["name"]]["secret"]
    assert ca["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # never the gateway's private key
    assert (
        env["HEMASCOPE_CONSOLE_GATEWAY_ADDRESS"] == f"gateway.{NAMESPACE}.svc:{_default('gateway', 'port')}"
    )
    assert env["HEMASCOPE_CONSOLE_COOKIE_SECURE"] == "true"
    credentials = ("API_KEY", "CERT_FILE", "KEY_FILE")
    assert [k for k in env if k.endswith(credentials) and k != "HEMASCOPE_CONSOLE_SECRET_KEY_FILE"] == []


def test_the_console_reaches_only_the_gateway(console_overlay: str) -> None:
    policies = kinds(render(console_overlay), "NetworkPolicy")
    [rule] = policies["console-egress"]["spec"]["egress"]
    assert rule["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]
    assert [p["port"] for p in rule["ports"]] == [_default("gateway", "port")]
    [inbound] = policies["console-ingress"]["spec"]["ingress"]
    assert inbound["from"] == [{"namespaceSelector": CONSOLE_INGRESS}]
    pod, env, _, _ = _console(console_overlay)
    assert int(env["HEMASCOPE_CONSOLE_PORT"]) == pod["containers"][0]["ports"][0]["containerPort"]
    assert kinds(render(console_overlay), "Deployment")["console"]["spec"]["strategy"] == {"type": "Recreate"}


# --- overlay-specific properties -------------------------------------------------------------------------


def test_dev_is_single_replica_cpu_only() -> None:
    docs = render("overlays/dev")
    for name, deployment in kinds(docs, "Deployment").items():
        assert deployment["spec"]["replicas"] == 1, name
        for container in pod_containers(deployment):
            assert "nvidia.com/gpu" not in str(container["resources"]), name
            assert "-cuda:" not in container["image"], name
    assert not kinds(docs, "HorizontalPodAutoscaler")
    assert not [d for d in docs if d["kind"] == "ScaledObject"]


def test_base_autoscales_every_service_on_cpu() -> None:
    docs = render("base")
    hpas = kinds(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == set(SERVICES)
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.fixture(params=["overlays/gpu", "resnet50"])
def gpu_docs(request: pytest.FixtureRequest, resnet50_overlay: str) -> tuple[Doc, ...]:
    return render(resnet50_overlay if request.param == "resnet50" else request.param)


def test_gpu_pods_request_gpus_on_gpu_nodes(gpu_docs: tuple[Doc, ...]) -> None:
    deployments = kinds(gpu_docs, "Deployment")
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        if name in GPU_SERVICES:
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert container["image"].startswith(f"hemascope/{name}-cuda:")
            assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
                "tolerations"
            ]
        else:
            assert "nvidia.com/gpu" not in str(container["resources"]), name
    configs = {n.rsplit("-", 1)[0]: d["data"] for n, d in kinds(gpu_docs, "ConfigMap").items()}
    for name in GPU_SERVICES:
        assert configs[f"hemascope-{name}"][f"HEMASCOPE_{name.upper()}_USE_GPU"] == "true"


def test_gpu_pods_and_cuda_images_name_the_runtime_they_serve_with_and_the_measured_one(
    gpu_docs: tuple[Doc, ...],
) -> None:
    dockerfile = DOCKERFILE.read_text()
    version = re.search(r"ARG ONNXRUNTIME_GPU_VERSION=(\S+)", dockerfile)
    assert version is not None
    served = f"onnxruntime-gpu {version.group(1)}, CUDA execution provider (CUDA 13, cuDNN 9)"
    measured = re.search(
        r"^## GPU .*?PyTorch ([0-9][^ *]*)", (REPO_ROOT / "docs" / "benchmarks.md").read_text(), re.M | re.S
    )
    assert measured is not None
    for name in GPU_SERVICES:
        stage = dockerfile.split(f"FROM runtime AS {name}-cuda", 1)[1].split("\nFROM ", 1)[0]
        assert f'io.hemascope.gpu-runtime="{served}"' in stage
        assert f"PyTorch {measured.group(1)}" in stage
        annotations = kinds(gpu_docs, "Deployment")[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["hemascope.io/gpu-runtime"] == served
        assert f"PyTorch {measured.group(1)}" in annotations["hemascope.io/gpu-measured-with"]


def _registered_metrics() -> set[str]:
    import services.detector.core
    import services.feature.core  # noqa: F401  (registers its metrics)

    return {family.name for family in REGISTRY.collect()}


def test_gpu_services_scale_with_keda_on_their_exported_metrics(gpu_docs: tuple[Doc, ...]) -> None:
    from hemascope.telemetry import QUEUE_DEPTH
    from services.detector.metrics import IN_FLIGHT, QUEUE_NAME

    scaled = kinds(gpu_docs, "ScaledObject")
    assert set(scaled) == set(GPU_SERVICES)
    hpa_targets = {
        h["spec"]["scaleTargetRef"]["name"] for h in kinds(gpu_docs, "HorizontalPodAutoscaler").values()
    }
    assert not hpa_targets & set(GPU_SERVICES), "two autoscalers on one Deployment"
    assert hpa_targets == set(SERVICES) - set(GPU_SERVICES)
    exported = _registered_metrics()
    for name, obj in scaled.items():
        spec = obj["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 120
        assert spec["cooldownPeriod"] > 0
        queries = [t["metadata"]["query"] for t in spec["triggers"]]
        assert all(t["type"] == "prometheus" for t in spec["triggers"])
        assert all(float(t["metadata"]["threshold"]) > 0 for t in spec["triggers"])
        for query in queries:
            assert f'namespace="{NAMESPACE}"' in query and f'service="{name}"' in query, query
            for metric in re.findall(r"(hemascope_[a-z_]+)\{", query):
                assert metric in exported, f"{metric} is not a metric the services export"
        if name == "detector":
            assert any(f"{IN_FLIGHT._name}{{" in q for q in queries)
            assert any(f"{QUEUE_DEPTH._name}{{" in q and f'queue="{QUEUE_NAME}"' in q for q in queries)
        else:
            assert any('queue=~"feature-.*"' in q for q in queries)
            assert any('method=~"/hemascope.v1.FeatureService/.*"' in q for q in queries)


def test_gpu_overlay_is_monitored(gpu_docs: tuple[Doc, ...]) -> None:
    monitors = kinds(gpu_docs, "ServiceMonitor")
    services = kinds(gpu_docs, "Service")
    assert set(monitors) == set(SERVICES)
    for name, monitor in monitors.items():
        assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in services[name]["spec"]["ports"]}


def test_resnet50_component_exports_in_an_init_container(resnet50_overlay: str) -> None:
    docs = render(resnet50_overlay)
    feature = kinds(docs, "Deployment")["feature"]["spec"]["template"]["spec"]
    [init] = feature["initContainers"]
    assert init["image"].startswith("hemascope/exporter:")
    assert init["args"] == ["export-backbone", "--backbone", "resnet50"]
    config = next(d["data"] for n, d in kinds(docs, "ConfigMap").items() if n.startswith("hemascope-feature"))
    cache_dir = config["HEMASCOPE_FEATURE_MODEL_CACHE_DIR"]
    serving = {m["mountPath"]: m for m in feature["containers"][0]["volumeMounts"]}
    exporting = {m["mountPath"]: m for m in init["volumeMounts"]}
    assert serving[cache_dir]["name"] == exporting[cache_dir]["name"]
    assert Path(config["HEMASCOPE_FEATURE_RESNET50_CHECKPOINT"]).parent.as_posix() in exporting


def test_delete_patches_are_single_documents() -> None:
    """kubectl 1.32's kustomize panics on a patch file of several `$patch: delete` documents (1.37 renders
    it): each delete patch is one document, applied to several objects through its target."""
    for path in K8S.rglob("*.yaml"):
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        if any(isinstance(d, dict) and d.get("$patch") == "delete" for d in documents):
            assert len(documents) == 1, path


# --- the Dockerfile ---------------------------------------------------------------------------------------

RUNTIME_TARGETS = {
    "feature": ("feature", "build-core"),
    "feature-cuda": ("feature", "build-core-cuda"),
    "classifier": ("classifier", "build-core"),
    "detector": ("detector", "build-core"),
    "detector-cuda": ("detector", "build-core-cuda"),
    "explain": ("explain", "build-explain"),
    "gateway": ("gateway", "build-core"),
}


@cache
def _dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """stage name -> [(INSTRUCTION, arguments)], continuation lines joined, comments dropped."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+) AS (\S+)", args.strip())
            assert match, line
            current = [("FROM", match.group(1))]
            stages[match.group(2)] = current
        else:
            current.append((instruction, " ".join(args.split())))
    return stages


def _dockerfile_targets() -> set[str]:
    return set(_dockerfile_stages())


def _instructions(stage: str, instruction: str) -> list[str]:
    return [args for inst, args in _dockerfile_stages()[stage] if inst == instruction]


def _env(stage: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _instructions(stage, "ENV"):
        env.update(dict(pair.split("=", 1) for pair in args.split()))
    return env


def _global_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones FROM lines may use)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.upper().startswith("FROM "):
            break
        if line.upper().startswith("ARG ") and "=" in line:
            name, _, value = line[4:].strip().partition("=")
            args[name] = value
    return args


def test_base_image_pinned_by_exact_tag() -> None:
    for stage, instructions in _dockerfile_stages().items():
        parent = instructions[0][1]
        if parent in _dockerfile_stages():
            continue
        variable = re.fullmatch(r"\$\{(\w+)\}", parent)
        if variable:  # a build argument: its default is the pinned image
            parent = _global_args()[variable.group(1)]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", parent), (
            stage,
            parent,
        )
        assert requires_python_allows(parent)


def requires_python_allows(image: str) -> bool:
    version = re.search(r"python:(\d+\.\d+\.\d+)", image)
    assert version
    spec = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    return Version(version.group(1)) in Requirement(f"python{spec}").specifier


@pytest.mark.parametrize("target", sorted(RUNTIME_TARGETS))
def test_runtime_targets(target: str) -> None:
    """Non-root, a gRPC health check on the exposed port, the right venv, a CLI command that exists."""
    service, venv_stage = RUNTIME_TARGETS[target]
    assert _dockerfile_stages()[target][0] == ("FROM", "runtime")
    assert _instructions(target, "USER") == [f"{USER_ID}:{USER_ID}"]
    env = _env(target)
    assert set(k for k in env if k.startswith("HEMASCOPE_")) <= _env_names(service) | SHARED_ENV
    if "HEMASCOPE_BACKBONE_DIR" in env:  # the fine-tuned backbones' weights are in the image there
        assert _instructions(target, "COPY").count(f"models/backbones {env['HEMASCOPE_BACKBONE_DIR']}") == 1
    port = int(env[f"HEMASCOPE_{service.upper()}_PORT"])
    assert port == _default(service, "port")
    assert env[f"HEMASCOPE_{service.upper()}_HOST"] == "0.0.0.0"
    assert _instructions(target, "EXPOSE") == [f"{port} {_default(service, 'metrics_port')}"]
    [healthcheck] = _instructions(target, "HEALTHCHECK")
    assert healthcheck.endswith(f'CMD ["hemascope", "health", "--quiet", "127.0.0.1:{port}"]')
    assert _instructions(target, "CMD") == [f'["serve", "{service}"]']
    copies = _instructions(target, "COPY")
    assert f"--from={venv_stage} /opt/venv /opt/venv" in copies
    ctx = click.Context(cli_main)
    serve = cli_main.get_command(ctx, "serve")
    assert isinstance(serve, click.Group)
    assert service in serve.list_commands(ctx)
    if service in ("feature", "detector", "classifier", "gateway"):  # ONNX Runtime services: no PyTorch
        assert "torch" not in venv_stage
    if target.endswith("-cuda"):
        assert env[f"HEMASCOPE_{service.upper()}_USE_GPU"] == "true"
    elif service in GPU_SERVICES:
        assert env[f"HEMASCOPE_{service.upper()}_USE_GPU"] == "false"


def test_runtime_stages_carry_no_build_tools() -> None:
    """pip, compilers and caches stay in build stages: runtime stages only COPY, set ENV and register libs."""
    for target in [*RUNTIME_TARGETS, "runtime", "exporter", "batch", "console"]:
        for args in _instructions(target, "RUN"):
            assert "pip" not in args and "apt-get" not in args, (target, args)
    assert "--without-pip" in " ".join(_instructions("build-deps", "RUN"))
    for stage in _dockerfile_stages():
        for args in _instructions(stage, "RUN"):
            if "pip" in args and " install " in args:
                assert "--no-cache-dir" in args and "--constraint" in args, (stage, args)


def test_model_artefacts_baked_at_their_configured_paths() -> None:
    paths = {
        "classifier": _env("classifier")["HEMASCOPE_CLASSIFIER_BUNDLE"],
        "explain": _env("explain")["HEMASCOPE_EXPLAIN_BUNDLE"],
        "detector": _env("detector")["HEMASCOPE_DETECTOR_MODEL"],
    }
    for target, path in paths.items():
        copies = " ".join(_instructions(target, "COPY"))
        assert Path(path).parent.as_posix() in copies or path in copies, (target, path)
    assert "models/detector-bccd/detector.onnx" in " ".join(_instructions("detector", "COPY"))
    for target in ("feature", "feature-cuda"):
        cache_dir = _env(target)["HEMASCOPE_FEATURE_MODEL_CACHE_DIR"]
        assert f"--from=backbone-export {cache_dir} {cache_dir}" in _instructions(target, "COPY")
    assert (
        _env("backbone-export")["HEMASCOPE_FEATURE_MODEL_CACHE_DIR"]
        == _env("feature")["HEMASCOPE_FEATURE_MODEL_CACHE_DIR"]
    )


def _installed_closure(requirements: list[str]) -> set[str]:
    """The distributions (normalised names) ``requirements`` install, their dependencies included, as the
    installed metadata says (extras a requirement names are followed; markers evaluated here)."""
    found: set[str] = set()
    todo = [(Requirement(text), "") for text in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = sorted(requirement.extras) or [""]
        key = [f"{name}[{e}]" for e in extras]
        if all(k in found for k in key):
            continue
        found.update([name, *key])
        for wanted in metadata.requires(name) or []:
            todo.extend((Requirement(wanted), e) for e in extras)
    return {name for name in found if "[" not in name}


def _third_party_imports(package: Path) -> set[str]:
    """Top-level modules a package imports anywhere (function-level imports included), not its own."""
    modules: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.partition(".")[0])
    project = {"hemascope", "services", "gateway", "batch", "console", "__future__"}
    return {m for m in modules if m not in project and m not in sys.stdlib_module_names}


def test_the_console_image_installs_every_module_the_console_imports() -> None:
    """The console target's venv is core plus the [console] extra, which together install every module the
    console imports (pyarrow for the Batch results page among them)."""
    [venv] = [c for c in _instructions("console", "COPY") if c.endswith(" /opt/venv /opt/venv")]
    match = re.fullmatch(r"--from=(\S+) /opt/venv /opt/venv", venv)
    assert match, venv
    stage = match.group(1)
    assert _dockerfile_stages()[stage][0] == ("FROM", "build-core")
    runs = " ".join(_instructions(stage, "RUN"))
    assert '["optional-dependencies"]["console"]' in runs and "--requirement /tmp/deps/console.txt" in runs
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    installed = _installed_closure([*project["dependencies"], *project["optional-dependencies"]["console"]])
    distributions = metadata.packages_distributions()
    imported = _third_party_imports(REPO_ROOT / "console")
    assert "pyarrow" in imported
    for module in sorted(imported):
        names = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert names & installed, f"the console imports {module}, which its image does not install"


# --- pins ---------------------------------------------------------------------------------------------------


def test_constraints_pin_every_dependency_within_pyproject() -> None:
    pins: dict[str, Version] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = Version(version)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for text in [*project["dependencies"], *extras["torch"], *extras["batch"], *extras["console"]]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}"
        assert pins[name] in requirement.specifier, f"{name}=={pins[name]} outside {requirement.specifier}"


# --- the batch job (deploy/k8s/batch: a KubeRay RayJob) -----------------------------------------------------


def _ray_pods(job: Doc) -> dict[str, Doc]:
    """Every pod template of the RayJob: head, each worker group, the submitter."""
    cluster = job["spec"]["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"], "submitter": job["spec"]["submitterPodTemplate"]}
    for group in cluster["workerGroupSpecs"]:
        pods[f"worker-{group['groupName']}"] = group["template"]
    return pods


@pytest.fixture(scope="module")
def batch_job() -> Doc:
    docs = render("batch")
    [job] = [d for d in docs if d["kind"] == "RayJob"]
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in docs)
    return job


def test_batch_job_runs_a_real_command_on_the_baked_in_bundle(batch_job: Doc) -> None:
    import shlex

    args = shlex.split(batch_job["spec"]["entrypoint"])
    assert args[:3] == ["hemascope", "batch", "analyze"]
    batch = cli_main.get_command(click.Context(cli_main), "batch")
    assert isinstance(batch, click.Group)
    analyze = batch.get_command(click.Context(batch), "analyze")
    assert analyze is not None
    context = analyze.make_context("analyze", args[3:])  # unknown options or missing values raise here
    assert context.params["ray_address"] == "auto" and context.params["no_progress"]
    bundle = context.params["bundle"]
    assert f"models/bloodcells-5class {bundle}" in _instructions("batch", "COPY")
    assert context.params["input_spec"].startswith("/data/") and context.params["out"].startswith("/data/")
    assert batch_job["spec"]["shutdownAfterJobFinishes"] is True and batch_job["spec"]["backoffLimit"] >= 1


def test_batch_pods_are_unprivileged_bounded_and_run_the_batch_image(batch_job: Doc) -> None:
    for name, pod in _ray_pods(batch_job).items():
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == USER_ID, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "hemascope-batch", name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, name  # Ray's session dir
            for part in ("requests", "limits"):
                assert {"cpu", "memory", "ephemeral-storage"} <= set(container["resources"][part]), name
            assert container["image"] == "hemascope/batch:0.1.0", name
    assert "batch" in _dockerfile_targets()


def test_batch_ray_version_is_the_pinned_one_and_the_head_does_no_analysis(batch_job: Doc) -> None:
    pins = dict(line.split("==") for line in CONSTRAINTS.read_text().splitlines() if "==" in line)
    cluster = batch_job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == pins["ray"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    pods = _ray_pods(batch_job)
    claims = {
        name: {
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        for name, pod in pods.items()
    }
    assert (
        claims["head"] == claims["worker-cpu"] == {"hemascope-batch-data"}
    )  # workers read what the head lists


def test_batch_image_carries_the_models_at_the_settings_paths() -> None:
    env = _env("batch")
    assert env["HEMASCOPE_FEATURE_MODEL_CACHE_DIR"] == _env("feature")["HEMASCOPE_FEATURE_MODEL_CACHE_DIR"]
    assert f"--from=backbone-export {env['HEMASCOPE_FEATURE_MODEL_CACHE_DIR']} " in " ".join(
        _instructions("batch", "COPY")
    )
    assert env["HEMASCOPE_DETECTOR_MODEL"] == _env("detector")["HEMASCOPE_DETECTOR_MODEL"]
    assert set(k for k in env if k.startswith("HEMASCOPE_")) <= (
        _env_names("feature") | _env_names("detector") | SHARED_ENV
    )
    assert "--from=build-batch /opt/venv /opt/venv" in _instructions("batch", "COPY")
    assert "ray[data]" in " ".join(_instructions("build-batch", "RUN"))
    assert _instructions("batch", "USER") == [f"{USER_ID}:{USER_ID}"]


def test_batch_network_policy_opens_only_ray_to_ray_and_the_operator() -> None:
    [policy] = [d for d in render("batch") if d["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    selector = {"matchLabels": {"app.kubernetes.io/name": "hemascope-batch"}}
    assert spec["podSelector"] == selector
    assert spec["egress"] == [{"to": [{"podSelector": selector}]}]
    for rule in spec["ingress"]:
        for peer in rule["from"]:
            assert peer == {"podSelector": selector} or set(peer) == {"namespaceSelector"}
            if "namespaceSelector" in peer:
                assert {p["port"] for p in rule["ports"]} <= {8265, 6379}
