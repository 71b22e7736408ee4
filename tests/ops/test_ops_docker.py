"""Static checks of the Dockerfile (there is no Docker engine here to build it)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from tests.ops.support import REPO

DOCKERFILE = REPO / "Dockerfile"


def stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+\s+AS\s+(\w+)", line, re.I)
        if m:
            current = m.group(1)
            out[current] = []
        elif current:
            out[current].append(line)
    return out


def test_targets_and_non_root_user() -> None:
    s = stages()
    assert {"base", "cpu", "gpu", "spark"} <= set(s)
    for target in ("cpu", "gpu", "spark"):
        users = [i.split()[1] for i in s[target] if i.upper().startswith("USER ")]
        assert users and users[-1].split(":")[0] not in ("0", "root"), f"{target} runs as root"
        assert any(i.startswith("ENTRYPOINT") for i in s[target])


def test_copied_paths_exist() -> None:
    for instrs in stages().values():
        for i in instrs:
            if i.startswith("COPY") and "--from" not in i:
                *srcs, _dst = [a for a in i.split()[1:] if not a.startswith("--")]
                for src in srcs:
                    assert (REPO / src).exists(), f"COPY source {src} is missing"


def _requirements(variant: str) -> list[str]:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "docker" / "requirements.py"),
            variant,
            str(REPO / "pyproject.toml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_image_requirements_follow_pyproject() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {d.split("==")[0]: d for d in deps if "==" in d}
    gpu = _requirements("gpu")
    assert f"torch=={pinned['torch'].split('==')[1].replace('+cpu', '')}" in gpu
    assert not any("+cpu" in r or "fbgemm_shim" in r for r in gpu)
    assert f"fbgemm-gpu=={pinned['torchrec'].split('==')[1]}" in gpu  # same release line
    for name in ("torchrec", "pyspark", "pyarrow", "numpy", "prometheus-client"):
        assert pinned[name] in gpu, f"gpu image drifts from pyproject on {name}"
    cpu = " ".join(_requirements("cpu"))
    assert pinned["torch"] in cpu and "fbgemm_shim" in cpu
    spark = _requirements("spark")
    assert pinned["pyspark"] in spark and not any(r.startswith("torch") for r in spark)


def test_spark_entrypoint_is_valid_bash() -> None:
    script = REPO / "docker" / "spark-entrypoint.sh"
    if subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode != 0:
        pytest.fail(f"{script} has a syntax error")
    text = script.read_text()
    assert "KubernetesExecutorBackend" in text and "--deploy-mode client" in text
