"""Paths through Hadoop's FileSystem (the one Spark itself uses), so any URI Spark reads or
writes (``file://``, ``hdfs://``, ``s3a://``, ``gs://``, plain local paths) works for listing,
small reads and writes, deletes and Parquet footers, with Spark's own credentials and config.

Local paths keep their plain form (``/abs/path``) because that is what the readers key their
per-file facts by (``input_file_name()`` with ``file:`` stripped); remote paths stay URIs.
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any

from pyspark.sql import SparkSession

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    return bool(_SCHEME.match(path)) and not path.startswith("file://")


def norm(path: str) -> str:
    """Local paths absolute and scheme-less; URIs untouched (but ``file://`` stripped)."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif path.startswith("file:"):
        path = path[len("file:") :]
    if is_uri(path):
        return path.rstrip("/")
    return os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts if p]])


class Store:
    """Thin wrapper over ``org.apache.hadoop.fs.FileSystem`` for one root path."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self._jvm: Any = spark.sparkContext._jvm  # type: ignore[attr-defined]
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
        self.root = norm(root)
        self.fs = self._path(self.root).getFileSystem(self._conf)
        self.local = str(self.fs.getScheme()) == "file"
        if self.local:
            # The checksummed local FS hides Spark's .crc side files from listings; the raw one
            # shows them, so the writer can delete them (readers glob table directories).
            self.fs = self.fs.getRawFileSystem()

    def _path(self, p: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(p)

    def exists(self, p: str) -> bool:
        return bool(self.fs.exists(self._path(p)))

    def is_dir(self, p: str) -> bool:
        return self.exists(p) and bool(self.fs.getFileStatus(self._path(p)).isDirectory())

    def is_file(self, p: str) -> bool:
        return self.exists(p) and bool(self.fs.getFileStatus(self._path(p)).isFile())

    def size(self, p: str) -> int:
        return int(self.fs.getFileStatus(self._path(p)).getLen())

    def _name(self, status: Any) -> str:
        return norm(str(status.getPath().toString()))

    def ls(self, d: str) -> list[tuple[str, bool]]:
        """(path, is_dir) of the entries of directory ``d``, sorted by name."""
        return sorted(
            (self._name(s), bool(s.isDirectory())) for s in self.fs.listStatus(self._path(d))
        )

    def files(self, d: str, recursive: bool = True) -> list[str]:
        """Data files under ``d`` (names starting with ``.`` or ``_`` skipped), sorted."""
        out = []
        for p, is_dir in self.ls(d):
            base = p.rsplit("/", 1)[-1]
            if base.startswith((".", "_")):
                continue
            if is_dir:
                if recursive:
                    out += self.files(p, True)
            else:
                out.append(p)
        return sorted(out)

    def glob(self, d: str, pattern: str) -> list[str]:
        """Files directly in ``d`` (or in the sub-folder of a ``sub/pat`` pattern) matching."""
        sub, _, pat = pattern.rpartition("/")
        where = join(d, sub) if sub else d
        if not self.is_dir(where):
            return []
        return [
            p
            for p, is_dir in self.ls(where)
            if not is_dir and fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat)
        ]

    def read_text(self, p: str) -> str:
        if self.local:
            with open(p, encoding="utf-8") as f:
                return f.read()
        return "\n".join(r[0] for r in self.spark.read.text(p, wholetext=True).collect())

    def write_bytes(self, p: str, data: bytes) -> None:
        out = self.fs.create(self._path(p), True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()

    def mkdirs(self, p: str) -> None:
        self.fs.mkdirs(self._path(p))

    def delete(self, p: str, recursive: bool = True) -> None:
        self.fs.delete(self._path(p), recursive)

    def rename(self, a: str, b: str) -> None:
        if not self.fs.rename(self._path(a), self._path(b)):
            raise OSError(f"rename {a} -> {b} failed")

    def parquet_rows(self, p: str) -> int:
        """Row count of one Parquet file from its footer (no Spark job)."""
        j = self._jvm.org.apache.parquet.hadoop
        r = j.ParquetFileReader.open(j.util.HadoopInputFile.fromPath(self._path(p), self._conf))
        try:
            return int(r.getRecordCount())
        finally:
            r.close()
