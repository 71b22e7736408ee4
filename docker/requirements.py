"""Print the pip requirements of one image variant, read from the project's pyproject.toml.

The pyproject pins the CPU stack (``torch==2.13.0+cpu`` and the local ``fbgemm-gpu`` shim that
pulls ``fbgemm-gpu-cpu``). Images must not drift from it, so they install exactly its
dependency list with only the variant's substitutions:

* ``gpu``: ``torch==2.13.0`` (the CUDA build from PyPI) and the real ``fbgemm-gpu==1.8.0``;
* ``cpu``: the list unchanged (torch from the PyTorch CPU index, the shim from the source tree);
* ``spark``: no torch stack at all (the bundle build needs pyspark, pyarrow, numpy, pandas).

Usage: ``python docker/requirements.py gpu [pyproject.toml] > requirements.txt``; the project
itself is then installed with ``pip install --no-deps .``.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

TORCH_STACK = (
    "torch",
    "torchrec",
    "fbgemm-gpu",
    "tensordict",
    "torchmetrics",
    "pyre-extensions",
    "iopath",
)


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~;@\[]", req, maxsplit=1)[0].lower()


def requirements(variant: str, pyproject: Path) -> list[str]:
    """The variant's requirement lines, in pyproject order."""
    deps: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out = []
    for req in deps:
        name = _name(req)
        if variant == "spark" and name in TORCH_STACK:
            continue
        if variant == "gpu" and name == "torch":
            req = re.sub(r"\+cpu\b", "", req)
        elif variant == "gpu" and name == "fbgemm-gpu":
            version = re.search(r"==([\w.]+)", _shim_version(pyproject))
            req = f"fbgemm-gpu=={version.group(1) if version else '1.8.0'}"
        elif name == "fbgemm-gpu":
            req = f"fbgemm-gpu @ {(pyproject.parent / 'tools' / 'fbgemm_shim').resolve().as_uri()}"
        out.append(req)
    return out


def _shim_version(pyproject: Path) -> str:
    """The fbgemm-gpu-cpu pin of the shim: the GPU image takes the same release of fbgemm-gpu."""
    shim = tomllib.loads(
        (pyproject.parent / "tools" / "fbgemm_shim" / "pyproject.toml").read_text()
    )
    for dep in shim["project"]["dependencies"]:
        if _name(dep) == "fbgemm-gpu-cpu":
            return dep
    raise SystemExit("tools/fbgemm_shim/pyproject.toml: no fbgemm-gpu-cpu dependency")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("cpu", "gpu", "spark"):
        print("usage: requirements.py cpu|gpu|spark [pyproject.toml]", file=sys.stderr)
        return 2
    path = Path(argv[1] if len(argv) > 1 else "pyproject.toml")
    print("\n".join(requirements(argv[0], path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
