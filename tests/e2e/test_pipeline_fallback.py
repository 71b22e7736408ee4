"""``train.pipeline``: TrainPipelineSparseDist for the fx-traceable models (MF); every other model
says why it is not pipelineable, and a run of one with ``train.pipeline=true`` logs that reason
and trains with plain steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from distrec.models.api import RecModel
from distrec.models.cigf.model import Cigf
from distrec.models.dismir.model import DisMIR
from distrec.models.igrec.model import IGRec
from distrec.models.lightgcn.model import LightGCN
from distrec.models.mdgr.model import MDGR
from distrec.models.mf.model import MF
from tests.helpers.bundles import write_tiny_bundle


def test_each_model_is_pipelineable_or_says_why() -> None:
    assert MF.pipelineable
    for cls in (LightGCN, Cigf, IGRec, DisMIR, MDGR):
        assert not cls.pipelineable, cls
        assert cls.pipeline_blocker != RecModel.pipeline_blocker, f"{cls.__name__}: say why"
        assert "pipeline_blocker" in (cls.__doc__ or ""), f"{cls.__name__}: docstring"


def test_run_logs_the_fallback(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "b", users=40, items=30, per_user=8)
    run = tmp_path / "run"
    p = subprocess.run(
        [sys.executable, "-m", "distrec.train", "lightgcn", "--config",
         "configs/lightgcn/synth.yaml", f"data.bundle={bundle}", f"run.dir={run}",
         "train.epochs=1", "train.pipeline=true", "metrics.enabled=false", "model.dim=8"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    log = (run / "logs" / "rank0.log").read_text()
    assert f"LightGCN is not pipelineable ({LightGCN.pipeline_blocker})" in log
    assert json.loads((run / "metrics.json").read_text())["global_step"] > 0
