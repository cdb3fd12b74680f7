"""Write the JSON schemas the manifest tests validate against (run by hand when the pinned versions change).

    pip download kubernetes-validate==1.37.0 --no-deps -d /tmp/kv      # Kubernetes schemas, per version
    # KubeRay's CRDs: ray-operator/config/crd/bases/ray.io_{rayclusters,rayjobs}.yaml at the tag v1.7.0
    python infra/k8s/schemas/vendor.py --kubernetes-wheel /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl \\
        --kubernetes-version v1.34.0 --kuberay-crds rayclusters.yaml rayjobs.yaml

Kubernetes kinds: the ``-local-strict`` schema of each kind (``additionalProperties: false``) made standalone
(only the definitions it reaches, ``$ref``s rewritten to ``#/$defs/...``). KubeRay kinds: the CRD's
``openAPIV3Schema`` of version ``v1`` as it is. Descriptions are dropped from both (size); nothing else changes.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KINDS = {  # file in the kubernetes-json-schema folder -> (apiVersion, kind)
    "configmap-v1.json": ("v1", "ConfigMap"),
    "secret-v1.json": ("v1", "Secret"),
    "service-v1.json": ("v1", "Service"),
    "persistentvolumeclaim-v1.json": ("v1", "PersistentVolumeClaim"),
    "deployment-apps-v1.json": ("apps/v1", "Deployment"),
    "statefulset-apps-v1.json": ("apps/v1", "StatefulSet"),
}


def strip_descriptions(node):
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description" or not isinstance(v, str)}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def refs(node) -> set[str]:
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value.rsplit("/", 1)[-1])
            else:
                found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def rewrite_refs(node):
    if isinstance(node, dict):
        return {
            k: ("#/$defs/" + v.rsplit("/", 1)[-1] if k == "$ref" and isinstance(v, str) else rewrite_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [rewrite_refs(v) for v in node]
    return node


def standalone(schema: dict, definitions: dict) -> dict:
    needed, todo = {}, refs(schema)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed[name] = definitions[name]
            todo |= refs(definitions[name]) - set(needed)
    result = rewrite_refs(strip_descriptions(schema))
    result["$defs"] = {name: rewrite_refs(strip_descriptions(needed[name])) for name in sorted(needed)}
    result.pop("$id", None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubernetes-wheel", type=Path, required=True)
    parser.add_argument("--kubernetes-version", default="v1.34.0")
    parser.add_argument("--kuberay-crds", type=Path, nargs="+", required=True)
    args = parser.parse_args()

    folder = f"kubernetes_validate/kubernetes-json-schema/{args.kubernetes_version}-local-strict"
    with zipfile.ZipFile(args.kubernetes_wheel) as wheel:
        definitions = json.loads(wheel.read(f"{folder}/_definitions.json"))["$defs"]
        for name, (api_version, kind) in KINDS.items():
            schema = standalone(json.loads(wheel.read(f"{folder}/{name}")), definitions)
            schema["x-scannet-source"] = f"kubernetes-validate {args.kubernetes_wheel.name}: {folder}/{name}"
            out = HERE / "kubernetes" / f"{kind.lower()}.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(schema, indent=None, separators=(",", ":"), sort_keys=True) + "\n")
            print(f"{api_version} {kind}: {out.relative_to(HERE)} ({out.stat().st_size:,} bytes)")

    for crd_file in args.kuberay_crds:
        crd = yaml.safe_load(crd_file.read_text())
        kind = crd["spec"]["names"]["kind"]
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = strip_descriptions(version["schema"]["openAPIV3Schema"])
        schema["x-scannet-source"] = f"KubeRay CRD {crd['metadata']['name']} (v1), {crd_file.name}"
        out = HERE / "kuberay" / f"{kind.lower()}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(schema, indent=None, separators=(",", ":"), sort_keys=True) + "\n")
        print(f"ray.io/v1 {kind}: {out.relative_to(HERE)} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
