"""Tiny sequence bundles laid out like a partitioned (Spark) bundle: several row groups per table,
so the streaming sequence reader (distrec.data.seq_stream) deals whole row groups to shards."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq


def regroup(path: Path, rows_per_group: int) -> None:
    """Rewrite every Parquet file under ``path`` with ``rows_per_group`` rows per row group."""
    for f in sorted(path.rglob("*.parquet")):
        t = pq.read_table(f)
        pq.write_table(t, f, row_group_size=rows_per_group)


def write_grouped_seq_bundle(path: Path, users: int = 120) -> Path:
    """write_seq_bundle (user_holdout, 80 % train users) with 6 train sequences and 2 eval rows
    per row group (16 / 6 groups at 120 users)."""
    from tests.unit.models.dismir.seq_bundle import write_seq_bundle

    write_seq_bundle(path, users=users)
    regroup(path / "sequences", 6)
    regroup(path / "eval", 2)
    return path


def write_grouped_chunks_bundle(path: Path) -> Path:
    """MDGR's chunks test bundle (16 users, one chunk per user and split), 2 chunks per group."""
    from tests.unit.models.mdgr.test_mdgr_distributed import write_chunks_bundle

    write_chunks_bundle(path)
    regroup(path / "eval", 2)
    return path
