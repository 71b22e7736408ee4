"""Bundle output: every table goes into a temporary sibling directory; one rename publishes it.

A killed or failed job leaves at most ``.<name>.tmp-<pid>-<rand>`` next to the target (removed
by the next run once its pid is gone), never a half-written bundle at ``out``. Row counts in
the manifest come from the Parquet footers, which costs no Spark job.
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid

import pyarrow.parquet as pq
from pyspark.sql import DataFrame

from distrec.data.schema import TableInfo, schema_for, schema_to_json


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BundleWriter:
    """Writes tables under a temporary directory and publishes it with :meth:`commit`."""

    def __init__(self, out: str, row_group_mb: int = 16) -> None:
        self.out = os.path.abspath(out)
        parent, name = os.path.split(self.out)
        os.makedirs(parent, exist_ok=True)
        self._clean_stale(parent, name)
        self.tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.makedirs(self.tmp)
        self.row_group_bytes = row_group_mb * 1024 * 1024
        self.tables: dict[str, TableInfo] = {}

    @staticmethod
    def _clean_stale(parent: str, name: str) -> None:
        for d in glob.glob(os.path.join(parent, f".{name}.tmp-*")) + glob.glob(
            os.path.join(parent, f".{name}.old-*")
        ):
            try:
                pid = int(os.path.basename(d).split("-")[1])
            except (IndexError, ValueError):
                continue
            if not _pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)

    def path(self, table: str) -> str:
        return os.path.join(self.tmp, table)

    def write(
        self,
        table: str,
        df: DataFrame,
        *,
        partition_by: str | None = None,
        files: int | None = None,
        sort: list[str] | None = None,
    ) -> TableInfo:
        """Write ``df`` (columns in schema order, plus ``partition_by``) as ``table``."""
        cols = [f.name for f in schema_for(table)]
        sel = cols + ([partition_by] if partition_by else [])
        df = df.select(*sel)
        if files:
            df = df.repartition(files, partition_by) if partition_by else df.repartition(files)
        if sort:
            df = df.sortWithinPartitions(*sort)
        w = df.write.mode("overwrite").option("parquet.block.size", self.row_group_bytes)
        if partition_by:
            w = w.partitionBy(partition_by)
        w.parquet(self.path(table))
        return self._register(table, partition_by)

    def write_graph(self, name: str, df: DataFrame, parts: int) -> TableInfo:
        """Range-partition by src so rank r reads only the files covering its src range.

        Files are renamed ``part-<lo>-<hi>.parquet`` (inclusive src bounds from the footer).
        """
        table = f"graphs/{name}"
        df = df.select("src", "dst", "w").repartitionByRange(max(1, parts), "src")
        df = df.sortWithinPartitions("src")
        d = self.path(table)
        df.write.mode("overwrite").option("parquet.block.size", self.row_group_bytes).parquet(d)
        for f in sorted(glob.glob(os.path.join(d, "part-*.parquet"))):
            md = pq.ParquetFile(f).metadata
            if md.num_rows == 0:
                os.remove(f)
                continue
            lo = hi = None
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(0).statistics
                lo = st.min if lo is None else min(lo, st.min)
                hi = st.max if hi is None else max(hi, st.max)
            os.rename(f, os.path.join(d, f"part-{lo:012d}-{hi:012d}.parquet"))
        return self._register(table, "src_range")

    def _register(self, table: str, partitioned_by: str | None) -> TableInfo:
        d = self.path(table)
        rows = sum(
            pq.ParquetFile(f).metadata.num_rows
            for f in glob.glob(os.path.join(d, "**", "*.parquet"), recursive=True)
        )
        # Spark's success marker and checksums are noise for readers that glob the directory.
        for junk in glob.glob(os.path.join(d, "**", "_SUCCESS"), recursive=True) + glob.glob(
            os.path.join(d, "**", ".*.crc"), recursive=True
        ):
            os.remove(junk)
        info = TableInfo(
            path=table,
            rows=rows,
            schema=schema_to_json(schema_for(table)),
            partitioned_by=partitioned_by,
        )
        self.tables[table] = info
        return info

    def split_rows(self, table: str) -> dict[str, int]:
        """Rows per ``split=<s>`` partition of a written table."""
        out = {}
        for d in glob.glob(os.path.join(self.path(table), "split=*")):
            s = os.path.basename(d).split("=", 1)[1]
            out[s] = sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(f"{d}/*.parquet"))
        return out

    def commit(self) -> None:
        """Publish: move an existing bundle aside, rename tmp into place, drop the old one."""
        old = None
        if os.path.exists(self.out):
            parent, name = os.path.split(self.out)
            old = os.path.join(parent, f".{name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.rename(self.out, old)
        os.rename(self.tmp, self.out)
        if old:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
