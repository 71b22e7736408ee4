"""The presets build the reference data sets with the same content as the readers they
replaced: each bundle is compared, table by table, with a build made by the pre-#17 code
(``python -m research.ingest_parity.build_refs data/ref_before`` at commit 96be9ec)."""

from __future__ import annotations

from pathlib import Path

import pytest

from research.ingest_parity.build_refs import REFS
from research.ingest_parity.compare import compare
from spark_jobs.build_bundle import build
from spark_jobs.options import parse_overrides
from tests.spark.conftest import data_dir

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

REF = Path(__file__).resolve().parents[2] / "data" / "ref_before"


@pytest.mark.parametrize("name,source,overrides", REFS, ids=[r[0] for r in REFS])
def test_preset_matches_reference_build(spark, tmp_path, name, source, overrides):
    src = data_dir(source)
    ref = REF / name
    if not (ref / "_manifest.json").exists():
        pytest.skip(
            f"reference bundle {ref} absent: build it with `python -m "
            "research.ingest_parity.build_refs data/ref_before` at the pre-#17 commit 96be9ec"
        )
    out = tmp_path / name
    build(
        spark, source, str(src), str(out), parse_overrides([*overrides, f"name={name}"]), quiet=True
    )
    assert compare(ref, out) == []
