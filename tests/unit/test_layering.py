"""Layering: the ``scannet`` library never imports the platform layer (Ray, MLflow, ``scannet_platform``).

Every module of the package is imported in a fresh interpreter, since the test process itself has long
loaded them all. One interpreter imports every module in turn and reports what each one added to
``sys.modules``; if anything forbidden shows up, each offending module is imported again in an interpreter
of its own, so the failure says exactly which module pulls in what, and through which line.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import scannet

FORBIDDEN = ("ray", "mlflow", "scannet_platform")
PACKAGE_DIR = Path(scannet.__file__).resolve().parent
ROOT = PACKAGE_DIR.parent

# Run in the child: argv = [package dir, forbidden names (comma separated), module, module, ...]. Prints one
# JSON object: module -> {"error": ...} or {"loaded": {forbidden top name: [modules]}, "via": {top: import chain}}.
CHILD = r"""
import importlib, json, sys, traceback

package_dir, forbidden, modules = sys.argv[1], tuple(sys.argv[2].split(",")), sys.argv[3:]
first_importer = {}  # forbidden top-level name -> the package lines on the stack that imported it


class Spy:
    '''Consulted before the real finders: notes who imports a forbidden package, finds nothing itself.'''

    def find_spec(self, name, path=None, target=None):
        if name in forbidden and name not in first_importer:
            ours = [f for f in traceback.extract_stack() if f.filename.startswith(package_dir)]
            chain = [f"scannet/{f.filename[len(package_dir) + 1:]}:{f.lineno}" for f in ours]
            first_importer[name] = " -> ".join(chain) or "?"
        return None


sys.meta_path.insert(0, Spy())
report = {}
for module in modules:
    before = set(sys.modules)
    try:
        importlib.import_module(module)
    except BaseException as error:
        report[module] = {"error": f"{type(error).__name__}: {error}"}
        continue
    loaded = {}
    for name in sorted(set(sys.modules) - before):
        top = name.partition(".")[0]
        if top in forbidden:
            loaded.setdefault(top, []).append(name)
    if loaded:
        report[module] = {"loaded": loaded, "via": {top: first_importer.get(top, "?") for top in loaded}}
print(json.dumps(report))
"""


def scannet_modules() -> list[str]:
    def fail(name: str) -> None:
        raise ImportError(f"cannot import {name} while listing the package")

    return ["scannet"] + sorted(m.name for m in pkgutil.walk_packages(scannet.__path__, "scannet.", onerror=fail))


def import_in_fresh_interpreter(modules: list[str]) -> dict[str, dict]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(PACKAGE_DIR), ",".join(FORBIDDEN), *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def describe(module: str, entry: dict) -> str:
    if "error" in entry:
        return f"{module}: does not import ({entry['error']})"
    pulled = "; ".join(
        f"{top} ({len(names)} modules, e.g. {', '.join(names[:3])}) via {entry['via'][top]}"
        for top, names in entry["loaded"].items()
    )
    return f"{module} pulls in {pulled}"


def test_module_list_is_complete():
    modules = scannet_modules()
    assert {"scannet", "scannet.featurizer", "scannet.model", "scannet.train"} <= set(modules)
    assert len(modules) > 20, modules


def test_scannet_imports_no_platform_layer():
    modules = scannet_modules()
    report = import_in_fresh_interpreter(modules)
    if report:
        # One interpreter attributes a forbidden package only to the first module that loads it: import every
        # module from the first offender on in an interpreter of its own for the full, exact picture.
        start = min(modules.index(m) for m in report)
        report = {}
        for module in modules[start:]:
            report.update(import_in_fresh_interpreter([module]))
    if report:
        offenders = "\n".join(describe(module, entry) for module, entry in report.items())
        pytest.fail(f"the scannet library must not import {', '.join(FORBIDDEN)}:\n{offenders}", pytrace=False)


# ------------------------------------------------------------------------------------------ the platform's rooms

PLATFORM_DIR = ROOT / "platform" / "scannet_platform"
#: Feature rooms of the platform: none imports another's modules; they share what lies below them (runtime,
#: tracking, data_pipeline, metric_names, environment).
FEATURES = ("train", "tune", "screen")


def platform_imports(path: Path) -> set[str]:
    """Every ``scannet_platform.*`` module the file imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scannet_platform"):
            found.add(node.module)
            if node.module == "scannet_platform":
                found |= {f"scannet_platform.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("scannet_platform")}
    return found


def test_platform_is_a_visible_package():
    assert (PLATFORM_DIR / "__init__.py").is_file()
    import scannet_platform

    assert Path(scannet_platform.__file__).resolve().parent == PLATFORM_DIR.resolve()


@pytest.mark.parametrize("feature", FEATURES)
def test_no_platform_feature_imports_another(feature):
    others = [f"scannet_platform.{other}" for other in FEATURES if other != feature]
    offenders = []
    for path in sorted((PLATFORM_DIR / feature).rglob("*.py")):
        for module in platform_imports(path):
            if any(module == other or module.startswith(other + ".") for other in others):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_shared_platform_modules_import_no_feature():
    features = tuple(f"scannet_platform.{feature}" for feature in FEATURES)
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted(PLATFORM_DIR.rglob("*.py"))
        if path.relative_to(PLATFORM_DIR).parts[0] not in FEATURES
        for module in platform_imports(path)
        if module.startswith(features)
    ]
    assert not offenders, "\n".join(offenders)
