"""One local SparkSession for all Spark tests (start-up costs ~10 s)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def spark():
    from spark_jobs.session import make_session

    s = make_session("local[2]", app="distrec-tests", driver_memory="1g", shuffle_partitions=4)
    yield s
    s.stop()


def data_dir(name: str) -> Path:
    d = DATA / name
    if not d.is_dir():
        pytest.skip(f"real data set {name} not found at {d} (../shared/data is absent)")
    return d
