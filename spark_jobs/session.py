"""SparkSession with the settings that behave on a small box (see ../shared/STACK.md)."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession


def make_session(
    master: str | None = "local[2]",
    *,
    app: str = "distrec-build-bundle",
    driver_memory: str = "2g",
    shuffle_partitions: int = 8,
) -> SparkSession:
    """Build (or reuse) a SparkSession.

    ``master=None`` leaves the master to ``spark-submit`` (cluster runs). Local runs get the
    UI and console progress bars switched off and bind to loopback, because the sandbox has
    no routable hostname and the progress bar garbles logs.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run the driver's interpreter (the venv), not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    b = SparkSession.builder.appName(app)
    if master:
        b = b.master(master)
        b = b.config("spark.driver.memory", driver_memory)
        b = b.config("spark.driver.host", "127.0.0.1")
        b = b.config("spark.driver.bindAddress", "127.0.0.1")
    b = (
        b.config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        # Parquet lists written the standard way (3-level, element name "element"), which
        # pyarrow reads as list<int64> and casts to the bundle schema.
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    )
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
