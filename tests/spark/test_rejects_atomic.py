"""Bad input is quarantined and counted (or fails over the threshold); output is atomic."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spark_jobs.build_bundle import build
from spark_jobs.options import parse_overrides
from spark_jobs.report import RejectedShareError
from tests.spark.conftest import data_dir
from tests.spark.util import manifest, table, write_synth

REPO = Path(__file__).resolve().parents[2]


def _corrupt_synth(d: Path) -> dict[tuple[str, int], str]:
    """Append bad lines to a synth part file; returns {(file, line): reason prefix}."""
    part = sorted((d / "events").glob("part-*.csv"))[0]
    n = sum(1 for _ in open(part))
    bad = [
        ("u1,i2,buy", "expected 4 fields"),  # truncated line
        ("u1;i2;buy;1600000000", "expected 4 fields"),  # wrong separator
        ("u1,i2,teleport,1600000000", "behavior: unknown"),
        ("u1,i2,buy,-5", "timestamp: impossible value"),
        ("u1,i2,buy,yesterday", "timestamp: impossible value"),
        (",i2,buy,1600000000", "user: missing id"),
        ("", "blank line"),
    ]
    with open(part, "a") as f:
        f.write("\n".join(b for b, _ in bad) + "\n")
    (d / "events" / "part-99999.csv").write_text("")  # an empty file
    return {(str(part), n + 1 + k): why for k, (_, why) in enumerate(bad)}


def test_corrupted_synth_quarantined(spark, tmp_path):
    src = write_synth(tmp_path / "raw", users=30, per_user=10)
    expected = _corrupt_synth(src)
    out = tmp_path / "bundle"
    s = build(
        spark, "synth", str(src), str(out), parse_overrides(["max_reject_share=0.5"]), quiet=True
    )
    rej = table(out, "_rejected").to_pylist()
    got = {(r["source_file"], r["line"]): r["reason"] for r in rej if r["line"]}
    assert set(got) == set(expected)
    for k, why in expected.items():
        assert got[k].startswith(why), (k, got[k])
    empty = [r for r in rej if r["reason"] == "empty file"]
    assert len(empty) == 1 and empty[0]["source_file"].endswith("part-99999.csv")
    m = manifest(out)
    assert m["rejected"]["rows"] == len(expected) + 1 == s["rows_rejected"]
    good = sum(m["counts"][f"interactions.{x}"] for x in ("train", "valid", "test"))
    # every good row is in the bundle (the synth rows have no duplicate pairs)
    assert good == s["rows_in"] - len(expected)


def test_corrupted_mafengwo_quarantined_or_fails(spark, tmp_path):
    raw = data_dir("mafengwo")
    d = tmp_path / "maf"
    d.mkdir()
    for f in (
        "userRatingTest.txt",
        "groupRatingTrain.txt",
        "groupRatingTest.txt",
        "groupMember.txt",
    ):
        shutil.copy(raw / f, d / f)
    lines = (raw / "userRatingTrain.txt").read_text().splitlines()[:300]
    lines[10] = "17"  # truncated
    lines[20] = "abc 5"  # garbage id
    lines[30] = "12\t40\t3\t9"  # wrong separators / too many fields
    (d / "userRatingTrain.txt").write_text("\n".join(lines) + "\n")
    (d / "groupRatingTest.txt").write_text("")  # an empty file
    out = tmp_path / "b"
    build(
        spark, "mafengwo", str(d), str(out), parse_overrides(["max_reject_share=0.2"]), quiet=True
    )
    rej = {
        (Path(r["source_file"]).name, r["line"]): r["reason"]
        for r in table(out, "_rejected").to_pylist()
    }
    assert rej[("userRatingTrain.txt", 11)].startswith("expected 2 to 3 fields, got 1")
    assert rej[("userRatingTrain.txt", 21)] == "user: non-numeric id 'abc'"
    assert rej[("userRatingTrain.txt", 31)].startswith("expected 2 to 3 fields, got 4")
    assert rej[("groupRatingTest.txt", 0)] == "empty file"
    assert manifest(out)["rejected"]["rows"] == 4
    # over the threshold: a clear error naming file and line, and no bundle at all
    out2 = tmp_path / "b2"
    with pytest.raises(RejectedShareError, match=r"userRatingTrain.txt:11"):
        build(
            spark,
            "mafengwo",
            str(d),
            str(out2),
            parse_overrides(["max_reject_share=0.0001"]),
            quiet=True,
        )
    assert not out2.exists()
    assert not list(tmp_path.glob(".b2.tmp-*"))


def test_killed_job_leaves_no_bundle_and_rerun_is_safe(spark, tmp_path):
    src = write_synth(tmp_path / "raw", users=60, per_user=10)
    out = tmp_path / "bundles" / "s"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spark_jobs.build_bundle",
            "--source",
            "synth",
            "--input",
            str(src),
            "--out",
            str(out),
            "--driver-memory",
            "512m",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        # kill once the job has written its first tables into the temporary directory
        while time.time() < deadline and p.poll() is None:
            tmp = list(out.parent.glob(".s.tmp-*/ids")) if out.parent.exists() else []
            if tmp:
                break
            time.sleep(0.2)
        assert p.poll() is None, "job finished before it could be killed"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert not out.exists(), "a killed job must not leave a bundle"
    assert list(out.parent.glob(".s.tmp-*")), "the partial output stays in the temp dir"
    build(spark, "synth", str(src), str(out), quiet=True)
    assert (out / "_manifest.json").exists()
    assert not list(out.parent.glob(".s.tmp-*")), "stale temp dir of the dead job is removed"
    # a second build over an existing bundle replaces it whole
    build(spark, "synth", str(src), str(out), parse_overrides(["seed=9"]), quiet=True)
    assert manifest(out)["split"]["seed"] == 9
