"""deploy/: the Kubernetes manifests validated offline, without a cluster.

KubeRay resources (RayCluster, RayJob) against the ``openAPIV3Schema`` of the KubeRay CRDs
carried in deploy/crds (strict: an unknown field fails, as ``kubectl apply`` with server-side
field validation would); built-in kinds (Deployment, Service, ...) with kubernetes-validate.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from crfm_bench.config import load_params

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBE_VERSION = "1.33"  # the built-in kinds' API version checked (a recent stable Kubernetes)


def strict(schema: dict) -> dict:
    """The CRD schema with unknown fields refused: every object schema that lists its
    ``properties`` (and does not preserve unknown fields) gets ``additionalProperties: false``."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_schemas() -> dict[str, jsonschema.protocols.Validator]:
    out = {}
    for path in sorted((DEPLOY / "crds").glob("ray.io_*.yaml")):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                key = f"{crd['spec']['group']}/{version['name']}:{kind}"
                out[key] = jsonschema.Draft7Validator(schema)
    return out


SCHEMAS = crd_schemas()


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def all_docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in docs(p.name)]


def errors_of(doc: dict) -> list[str]:
    """Validation errors of one manifest (KubeRay CRD schema or Kubernetes built-in kind)."""
    key = f"{doc['apiVersion']}:{doc['kind']}"
    if key in SCHEMAS:
        return [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in SCHEMAS[key].iter_errors(doc)
        ]
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


def test_crds_are_the_released_kuberay_ones_with_their_licence():
    assert {"ray.io/v1:RayCluster", "ray.io/v1:RayJob"} <= set(SCHEMAS)
    assert "Apache License" in (DEPLOY / "crds" / "LICENSE").read_text()
    assert "v1.7.0" in (DEPLOY / "crds" / "README.md").read_text()


@pytest.mark.parametrize(
    ("name", "doc"), all_docs(), ids=lambda v: v if isinstance(v, str) else v["kind"]
)
def test_every_manifest_validates(name, doc):
    assert errors_of(doc) == [], name


def ray_cluster() -> dict:
    [rc] = docs("ray-cluster.yaml")
    return rc


def ray_job() -> dict:
    [job] = docs("ray-job.yaml")
    return job


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (["spec", "workerGroupSpecs", 0, "minReplicas"], "zero", "minReplicas"),  # wrong type
        (["spec", "workerGroupSpecs", 0, "maxReplica"], 4, "maxReplica"),  # misspelt field
        (["spec", "authOptions", "mode"], "password", "authOptions"),  # not in the enum
        (["spec", "headGroupSpec", "template", "spec", "containers"], None, "containers"),
    ],
)
def test_a_broken_field_fails_validation(path, value, needle):
    broken = ray_cluster()
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    errors = errors_of(broken)
    assert errors and any(needle in e for e in errors), errors


def test_a_broken_builtin_kind_fails_validation():
    deployment = next(d for d in docs("mlflow.yaml") if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "one"
    assert errors_of(deployment)
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["template"]["spec"]["containerz"] = []
    assert errors_of(deployment)


def test_ray_cluster_has_token_auth_a_gpu_group_and_autoscaling_bounds():
    spec = ray_cluster()["spec"]
    assert spec["authOptions"] == {"mode": "token", "secretName": "crfm-ray-auth"}
    assert spec["enableInTreeAutoscaling"] is True
    [gpu] = spec["workerGroupSpecs"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    [container] = gpu["template"]["spec"]["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"  # never a public Service
    # the token Secret has the key KubeRay reads
    secrets = {d["metadata"]["name"]: d for d in docs("secrets.example.yaml")}
    assert "auth_token" in secrets["crfm-ray-auth"]["stringData"]


def test_ray_job_runs_the_cluster_profile_on_the_same_cluster_shape():
    job = ray_job()["spec"]
    assert job["rayClusterSpec"] == ray_cluster()["spec"]  # one shape, no drift
    entry = job["entrypoint"]
    assert "crfm-bench run" in entry
    profile = entry.split("--params", 1)[1].split()[0]
    assert profile == "/app/params/cluster.yaml"  # the image's copy of params/cluster.yaml
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY params ./params" in dockerfile
    assert 'pip install -c constraints.txt ".[cluster]"' in dockerfile  # S3 + PostgreSQL clients
    assert (ROOT / "params" / "cluster.yaml").is_file()


def test_mlflow_service_is_what_the_cluster_profile_tracks_to():
    params = load_params(ROOT / "params" / "cluster.yaml")
    services = {d["metadata"]["name"]: d for d in docs("mlflow.yaml") if d["kind"] == "Service"}
    host, port = params.tracking.uri.removeprefix("http://").split(":")
    name, namespace = host.split(".")[:2]
    assert namespace == "crfm-bench" and int(port) in {
        p["port"] for p in services[name]["spec"]["ports"]
    }
    deployment = next(d for d in docs("mlflow.yaml") if d["kind"] == "Deployment")
    args = " ".join(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "postgresql+psycopg2://" in args and "--artifacts-destination s3://" in args
    assert host in args  # --allowed-hosts lets the Service's name through
