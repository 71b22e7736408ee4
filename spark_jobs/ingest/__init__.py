"""One reader per raw format: ``read(spark, input_dir, opts) -> RawData``."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from spark_jobs.ingest.common import RawData

# source name -> module under spark_jobs.ingest (imported lazily: a reader's imports stay local)
SOURCES: dict[str, str] = {
    "generic": "generic",
    "synth": "synth",
    "jd_vcgae": "jd",
    "mafengwo": "mafengwo",
    "gowalla_1000u": "gowalla",
    "amazon_beauty": "beauty",
    "ml-100k": "ml100k",
}


def get_reader(source: str) -> Callable[..., RawData]:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    mod = importlib.import_module(f"spark_jobs.ingest.{SOURCES[source]}")
    return mod.read
