"""Bundle output, committed manifest-last, through Hadoop's FileSystem (any URI Spark writes).

Local output: every table goes into a temporary sibling directory, the manifest is written
last, and one rename publishes the directory. A killed job leaves at most
``.<name>.tmp-<pid>-<rand>`` next to the target (removed by the next run once its pid is
gone), never a half-written bundle at ``out``.

Remote output (``hdfs://``, ``s3a://``, ``gs://``; or ``commit=inplace``): object stores have
no atomic directory rename, so the bundle is written in place and the manifest, which names
every table and file, is the last object written. An existing bundle loses its manifest
first, so readers (which refuse a directory without a manifest) never see a mix.

Partitioned layout (#15): every table but ids/* and _rejected is written as exactly
``partitions`` files per split; graph file k covers the src range [floor(k*n/N),
floor((k+1)*n/N) - 1], sorted by src. The held-out splits (valid, test) of ``interactions`` and
``groups/items`` are range-partitioned the same way by user / group and sorted, so a rank that
evaluates a block of users reads only the row groups whose footer statistics meet it; the
other tables and the train split are round-robin with near-equal row counts. The manifest lists
each file with its row count (and key range: ``src_lo``/``src_hi`` for graphs, ``range_by`` /
``key_lo`` / ``key_hi`` for range-partitioned split files), read from the Parquet footers, which
costs no Spark job.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distrec.data.schema import (
    MANIFEST_FILE,
    SPLITS,
    Manifest,
    TableInfo,
    schema_for,
    schema_to_json,
)
from spark_jobs.store import Store, join

_PART = re.compile(r"part-(\d{5})")
# The splits a rank reads for evaluation only: range-partitioned by ``held_out_by`` (write()).
HELDOUT_SPLITS = ("valid", "test")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def src_range(k: int, n: int, num_src: int) -> tuple[int, int]:
    """Inclusive src bounds of graph file k of n over [0, num_src) (hi = lo - 1 if empty)."""
    return k * num_src // n, (k + 1) * num_src // n - 1


def _empty_parquet(schema: pa.Schema) -> bytes:
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf)
    return buf.getvalue()


class BundleWriter:
    """Writes tables (under a temporary directory when local) and publishes with :meth:`commit`."""

    def __init__(
        self,
        spark: Any,
        out: str,
        *,
        partitions: int = 16,
        row_group_mb: int = 16,
        commit: str = "auto",
    ) -> None:
        if commit not in ("auto", "rename", "inplace"):
            raise ValueError(f"option commit: expected auto, rename or inplace, got {commit!r}")
        self.spark = spark
        self.store = Store(spark, out)
        self.out = self.store.root
        self.partitions = max(1, int(partitions))
        self.inplace = commit == "inplace" or (commit == "auto" and not self.store.local)
        if self.inplace:
            self.tmp = self.out
            if self.store.exists(self.out):
                # Manifest first: from here on readers refuse the directory.
                self.store.delete(join(self.out, MANIFEST_FILE), False)
                self.store.delete(self.out, True)
            self.store.mkdirs(self.out)
        else:
            parent, name = os.path.split(self.out)
            os.makedirs(parent, exist_ok=True)
            self._clean_stale(parent, name)
            self.tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.makedirs(self.tmp)
        self.row_group_bytes = row_group_mb * 1024 * 1024
        self.tables: dict[str, TableInfo] = {}
        self._hash_keys: list[int] | None = None

    @staticmethod
    def _clean_stale(parent: str, name: str) -> None:
        import glob

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
        return join(self.tmp, table)

    # ------------------------------------------------------------------ writing
    def _write_dir(
        self, d: str, df: DataFrame, table: str, n: int | None, sort: list[str] | None
    ) -> list[dict[str, Any]]:
        """Write ``df`` as Parquet into ``d``; with ``n``, exactly n files indexed 0..n-1
        (Spark names a file after its task partition; empty partitions get an empty file)."""
        if sort:
            df = df.sortWithinPartitions(*sort)
        df.write.mode("overwrite").option("parquet.block.size", self.row_group_bytes).parquet(d)
        got: dict[int, str] = {}
        plain: list[str] = []
        for p, is_dir in self.store.ls(d):
            base = p.rsplit("/", 1)[-1]
            if base.startswith((".", "_")) or is_dir:
                if not is_dir:  # Spark's _SUCCESS and .crc files are noise for readers
                    self.store.delete(p, False)
                continue
            m = _PART.match(base)
            if n and m and int(m.group(1)) not in got:
                got[int(m.group(1))] = p
            else:
                plain.append(p)
        if n is None:
            files = sorted(plain + list(got.values()))
            return [
                {"path": self._rel(d, f), "rows": self.store.parquet_rows(f), "index": k}
                for k, f in enumerate(files)
            ]
        if plain:
            raise RuntimeError(f"{d}: unexpected files {plain[:3]} (expected part-<k>-...)")
        out = []
        empty: bytes | None = None
        for k in range(n):
            f = got.get(k)
            if f is None:
                empty = empty or _empty_parquet(schema_for(table))
                f = join(d, f"part-{k:05d}-empty.parquet")
                self.store.write_bytes(f, empty)
                rows = 0
            else:
                rows = self.store.parquet_rows(f)
            out.append({"path": self._rel(d, f), "rows": rows, "index": k})
        return out

    def _rel(self, d: str, f: str) -> str:
        table_root = d.split("/split=")[0]
        return f[len(table_root) + 1 :]

    def write(
        self,
        table: str,
        df: DataFrame,
        *,
        partition_by: str | None = None,
        sort: list[str] | None = None,
        single: bool = False,
        held_out_by: tuple[str, int] | None = None,
    ) -> TableInfo:
        """Write ``df`` (columns in schema order, plus ``partition_by``) as ``table``: N files
        (per split when ``partition_by="split"``), or one file when ``single``.
        ``held_out_by=(column, num_keys)``: the held-out splits' files are N contiguous ranges of
        ``column`` over [0, num_keys) instead of round-robin (``sort`` should start with it)."""
        cols = [f.name for f in schema_for(table)]
        n = None if single else self.partitions
        entries: list[dict[str, Any]] = []
        if partition_by is None:
            d = df.select(*cols)
            d = d.coalesce(1) if single else d.repartition(self.partitions)
            entries = self._write_dir(self.path(table), d, table, n, sort)
        else:
            if partition_by != "split":
                raise ValueError(f"partition_by={partition_by!r}: only 'split' is supported")
            for s in SPLITS:
                d = df.filter(F.col("split") == s).select(*cols)
                # (column, num_keys) when this split's files are key ranges, else None
                ranged = held_out_by if s in HELDOUT_SPLITS and not single else None
                if ranged is not None:
                    d = self._by_range(d, *ranged)
                else:
                    d = d.coalesce(1) if single else d.repartition(self.partitions)
                got = self._write_dir(join(self.path(table), f"split={s}"), d, table, n, sort)
                for e in got:
                    e["split"] = s
                    if ranged is not None:
                        e["range_by"] = ranged[0]
                        e["key_lo"], e["key_hi"] = src_range(e["index"], n or 1, ranged[1])
                entries += got
        return self._register(table, partition_by, entries)

    def _hash_key(self, k: int) -> int:
        """A long whose Spark partition under ``repartition(N, col)`` is k (Murmur3, seed 42,
        the same hash ``F.hash`` computes), so the range of file k lands in task k."""
        if self._hash_keys is None:
            n = self.partitions
            rows = (
                self.spark.range(0, 64 * n)
                .select("id", F.pmod(F.hash("id"), F.lit(n)).alias("p"))
                .groupBy("p")
                .agg(F.min("id").alias("id"))
                .collect()
            )
            keys = {int(r["p"]): int(r["id"]) for r in rows}
            missing = [k for k in range(n) if k not in keys]
            if missing:
                raise RuntimeError(f"no hash key for partitions {missing}")
            self._hash_keys = [keys[k] for k in range(n)]
        return self._hash_keys[k]

    def _by_range(self, df: DataFrame, col: str, num_keys: int) -> DataFrame:
        """``df`` in N Spark partitions, partition k holding the rows whose ``col`` lies in the
        range of file k (:func:`src_range`) over [0, num_keys)."""
        n = self.partitions
        m = max(1, num_keys)
        k = F.floor(((F.col(col) + 1) * n - 1) / F.lit(m)).cast("long")
        keys = F.create_map(
            *[
                x
                for i in range(n)
                for x in (F.lit(i).cast("long"), F.lit(self._hash_key(i)).cast("long"))
            ]
        )
        return df.withColumn("_v", keys[k]).repartition(n, "_v").drop("_v")

    def write_graph(self, name: str, df: DataFrame, num_src: int) -> TableInfo:
        """Range-partition by src into N contiguous ranges over [0, num_src), sorted by src."""
        table = f"graphs/{name}"
        n = self.partitions
        d = self._by_range(df.select("src", "dst", "w"), "src", num_src)
        entries = self._write_dir(self.path(table), d, table, n, ["src"])
        for e in entries:
            e["src_lo"], e["src_hi"] = src_range(e["index"], n, num_src)
        return self._register(table, "src_range", entries)

    def _register(
        self, table: str, partitioned_by: str | None, entries: list[dict[str, Any]]
    ) -> TableInfo:
        info = TableInfo(
            path=table,
            rows=sum(e["rows"] for e in entries),
            schema=schema_to_json(schema_for(table)),
            partitioned_by=partitioned_by,
            files=entries,
        )
        self.tables[table] = info
        return info

    def split_rows(self, table: str) -> dict[str, int]:
        """Rows per ``split=<s>`` partition of a written table."""
        out: dict[str, int] = {}
        for e in self.tables[table].files or []:
            out[e["split"]] = out.get(e["split"], 0) + e["rows"]
        return out

    def write_manifest(self, manifest: Manifest) -> None:
        """The last object of a bundle: written only after every table it names."""
        self.store.write_bytes(join(self.tmp, MANIFEST_FILE), manifest.to_json().encode())

    def commit(self) -> None:
        """Local: move an existing bundle aside, rename tmp into place, drop the old one.
        In place: nothing left to do (the manifest was the last write)."""
        if self.inplace:
            return
        old = None
        if os.path.exists(self.out):
            parent, name = os.path.split(self.out)
            old = os.path.join(parent, f".{name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.rename(self.out, old)
        os.rename(self.tmp, self.out)
        if old:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        if self.inplace:
            self.store.delete(join(self.tmp, MANIFEST_FILE), False)
            return
        shutil.rmtree(self.tmp, ignore_errors=True)
