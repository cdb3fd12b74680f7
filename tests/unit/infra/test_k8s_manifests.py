"""The Kubernetes manifests of infra/k8s/ validate offline against the vendored schemas (Kubernetes v1.34 kinds,
KubeRay 1.7 CRDs ``ray.io/v1``), strictly: an unknown field anywhere fails, as ``kubectl apply`` does with its
default strict field validation. The CRDs' CEL rules on ``deletionStrategy`` are checked by hand (jsonschema
does not run CEL). The RayJob entrypoints name scripts and files that exist in the repository."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "infra" / "k8s"
SCHEMAS = K8S / "schemas"
IMAGE_ROOT = "/opt/scannet/"  # where the images (infra/docker) hold the repository
KIND_SCHEMAS = {
    ("v1", "ConfigMap"): "kubernetes/configmap.json",
    ("v1", "Secret"): "kubernetes/secret.json",
    ("v1", "Service"): "kubernetes/service.json",
    ("v1", "PersistentVolumeClaim"): "kubernetes/persistentvolumeclaim.json",
    ("apps/v1", "Deployment"): "kubernetes/deployment.json",
    ("apps/v1", "StatefulSet"): "kubernetes/statefulset.json",
    ("ray.io/v1", "RayCluster"): "kuberay/raycluster.json",
    ("ray.io/v1", "RayJob"): "kuberay/rayjob.json",
}
MANIFEST_FILES = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def strict(schema):
    """A CRD schema with ``additionalProperties: false`` on every object that lists its properties and does not
    keep unknown fields (the API server prunes or, with strict field validation, rejects unknown fields)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / KIND_SCHEMAS[(api_version, kind)]).read_text())
    if api_version.startswith("ray.io/"):
        schema = strict(schema)
        # metadata is `type: object` in a CRD: check it with Kubernetes' ObjectMeta (from a vendored kind)
        meta = json.loads((SCHEMAS / "kubernetes" / "configmap.json").read_text())
        schema["properties"]["metadata"] = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
        schema["$defs"] = meta["$defs"]
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_manifests() -> list[tuple[str, dict]]:
    return [(f"{p.name}#{i}", d) for p in MANIFEST_FILES for i, d in enumerate(documents(p))]


def errors(manifest: dict) -> list[str]:
    found = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator(manifest["apiVersion"], manifest["kind"]).iter_errors(manifest)
    ]
    if manifest["kind"] == "RayJob":
        found += rayjob_rules(manifest["spec"])
    return found


def rayjob_rules(spec: dict) -> list[str]:
    """The x-kubernetes-validations (CEL) of the RayJob CRD on deletionStrategy, and the documented
    incompatibilities of deletion rules (KubeRay 1.7 docs/reference/api.md, RayJobSpec.deletionStrategy)."""
    found = []
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return found
    legacy = "onSuccess" in strategy or "onFailure" in strategy
    if legacy and "deletionRules" in strategy:
        found.append("deletionStrategy: legacy policies and deletionRules together")
    if not ((("onSuccess" in strategy) and ("onFailure" in strategy)) or "deletionRules" in strategy):
        found.append("deletionStrategy: needs onSuccess and onFailure, or deletionRules")
    for rule in strategy.get("deletionRules", []):
        condition = rule.get("condition", {})
        if ("jobStatus" in condition) == ("jobDeploymentStatus" in condition):
            found.append(f"deletionRules: exactly one of jobStatus / jobDeploymentStatus in {condition}")
    if "deletionRules" in strategy:
        if spec.get("shutdownAfterJobFinishes"):
            found.append("deletionRules: incompatible with shutdownAfterJobFinishes")
        if spec.get("ttlSecondsAfterFinished"):
            found.append("deletionRules: incompatible with ttlSecondsAfterFinished (use condition.ttlSeconds)")
        if "rayClusterSpec" not in spec:
            found.append("deletionRules: need a RayJob that creates its cluster (rayClusterSpec)")
    return found


def test_there_are_manifests_of_every_kind_we_rely_on():
    kinds = {(d["apiVersion"], d["kind"]) for _, d in all_manifests()}
    assert kinds == set(KIND_SCHEMAS), kinds ^ set(KIND_SCHEMAS)
    jobs = {d["metadata"]["name"] for _, d in all_manifests() if d["kind"] == "RayJob"}
    assert jobs == {"scannet-train", "scannet-tune", "scannet-screen"}


@pytest.mark.parametrize("name,manifest", all_manifests(), ids=[n for n, _ in all_manifests()])
def test_manifest_validates(name, manifest):
    assert errors(manifest) == []


def ray_cluster_specs() -> list[tuple[str, dict]]:
    found = []
    for name, manifest in all_manifests():
        if manifest["kind"] == "RayCluster":
            found.append((name, manifest["spec"]))
        elif manifest["kind"] == "RayJob":
            found.append((name, manifest["spec"]["rayClusterSpec"]))
    return found


@pytest.mark.parametrize("name,spec", ray_cluster_specs(), ids=[n for n, _ in ray_cluster_specs()])
def test_ray_clusters_gpu_workers_autoscaling_token_shared_storage(name, spec):
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"] == {"mode": "token", "secretName": "scannet-ray-token"}
    head = spec["headGroupSpec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in json.dumps(head)  # a CPU head
    (gpu,) = spec["workerGroupSpecs"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    pod = gpu["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for template in (head, pod):
        assert template["securityContext"]["runAsNonRoot"] is True
        claims = {v["persistentVolumeClaim"]["claimName"] for v in template["volumes"] if "persistentVolumeClaim" in v}
        assert claims == {"scannet-shared"}
        (c,) = template["containers"]
        assert {"configMapRef": {"name": "scannet-config"}} in c["envFrom"]
        assert {"name": "shared", "mountPath": "/mnt/shared"} in c["volumeMounts"]


def rayjobs() -> list[dict]:
    return [d for _, d in all_manifests() if d["kind"] == "RayJob"]


@pytest.mark.parametrize("job", rayjobs(), ids=[j["metadata"]["name"] for j in rayjobs()])
def test_rayjob_submission_deadline_and_deletion_rules(job):
    spec = job["spec"]
    assert spec["submissionMode"] == "K8sJobMode"
    assert 0 < spec["activeDeadlineSeconds"] <= 3 * 24 * 3600
    rules = {
        (r["condition"].get("jobStatus") or r["condition"]["jobDeploymentStatus"], r["policy"]): r["condition"].get(
            "ttlSeconds", 0
        )
        for r in spec["deletionStrategy"]["deletionRules"]
    }
    assert rules[("SUCCEEDED", "DeleteWorkers")] == 0  # the GPUs go as soon as the job succeeded
    assert rules[("FAILED", "DeleteCluster")] > 0  # a grace period to look at a failed cluster
    assert rules[("Failed", "DeleteCluster")] > 0  # deployment failed (deadline, submission)
    assert ("FAILED", "DeleteSelf") not in rules  # the RayJob's record stays


def entrypoint_paths(entrypoint: str) -> list[Path]:
    """Repository files an entrypoint names (``/opt/scannet/...`` in the image is the repository root)."""
    return [ROOT / t[len(IMAGE_ROOT) :] for t in shlex.split(entrypoint) if t.startswith(IMAGE_ROOT)]


@pytest.mark.parametrize("job", rayjobs(), ids=[j["metadata"]["name"] for j in rayjobs()])
def test_rayjob_entrypoints_name_files_of_the_repository(job):
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[0] == "python" and re.fullmatch(r"/opt/scannet/jobs/\w+\.py", words[1]), words[:2]
    paths = entrypoint_paths(job["spec"]["entrypoint"])
    assert paths and all(p.is_file() for p in paths), [str(p) for p in paths if not p.is_file()]


def test_a_broken_manifest_fails():
    """A misspelt field, a wrong type, a policy KubeRay does not know, and a rule with both conditions are
    each reported."""
    (job,) = [j for j in rayjobs() if j["metadata"]["name"] == "scannet-train"]
    assert errors(job) == []
    cases = []
    typo = copy.deepcopy(job)
    typo["spec"]["deletionStrategy"]["deletionRule"] = typo["spec"]["deletionStrategy"].pop("deletionRules")
    cases.append(typo)
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["activeDeadlineSeconds"] = "two days"
    cases.append(wrong_type)
    policy = copy.deepcopy(job)
    policy["spec"]["deletionStrategy"]["deletionRules"][0]["policy"] = "DeleteEverything"
    cases.append(policy)
    both = copy.deepcopy(job)
    both["spec"]["deletionStrategy"]["deletionRules"][0]["condition"]["jobDeploymentStatus"] = "Failed"
    cases.append(both)
    container = copy.deepcopy(job)
    worker = container["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    worker["resources"]["limit"] = worker["resources"].pop("limits")
    cases.append(container)
    for case in cases:
        assert errors(case), case
    (deployment,) = [d for _, d in all_manifests() if d["kind"] == "Deployment"]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    assert errors(broken)


def test_no_secret_values_in_the_repository():
    """Secrets are referenced by name; the example file holds placeholders only and is not applied."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "secrets.example.yaml" not in kustomization["resources"]
    for _, manifest in all_manifests():
        if manifest["kind"] == "Secret":
            assert "data" not in manifest
            assert all(re.fullmatch(r"<generated: .+>", v) for v in manifest["stringData"].values()), manifest
    text = "\n".join(p.read_text() for p in MANIFEST_FILES)
    assert not re.search(r"(?i)(password|token)\s*[:=]\s*['\"]?[0-9a-f]{16,}", text)


def test_kustomization_lists_files_that_exist():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert all((K8S / name).is_file() for name in kustomization["resources"])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (the schema tests above still run)")
def test_kustomize_builds_everything_into_the_namespace():
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    manifests = [d for d in yaml.safe_load_all(built) if d]
    assert len(manifests) == sum(
        len(documents(K8S / name)) for name in ["storage.yaml", "config.yaml", "mlflow.yaml", "raycluster.yaml"]
    )
    assert {m["metadata"]["namespace"] for m in manifests} == {"scannet"}
    assert all(errors(m) == [] for m in manifests)
