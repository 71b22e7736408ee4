"""The dataset bundle contract between ``spark_jobs`` (writer) and ``distrec.data`` (reader).

This module must stay importable without torch: the Spark driver and executors import it.
Only the standard library and pyarrow are used.

Layout (paths relative to the bundle root)::

    _manifest.json                 Manifest (below)
    ids/users/ ids/items/ ids/groups/          raw_id string -> idx int64 (0..n-1)
    interactions/split=<split>/    user, item, behavior int8, ts int64 (nullable)
    groups/members/                group, user
    groups/items/split=<split>/    group, item
    sequences/                     user, items list<int64>, ts list<int64> (training part)
    eval/<protocol>/split=<split>/ user, input list<int64>, targets list<int64>, candidates list<int64>
    graphs/<name>/                 src, dst list<int64>, w list<float32>; N src-range files (v2)
    _rejected/                     source_file, line, reason, raw

Every table is a directory of Parquet files (Spark or pyarrow output); the reader globs it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

# 2: tables list their files (``TableInfo.files``) and the manifest records ``partitions``
# (the largest world size the files are balanced for). Version 1 bundles are still read: they
# have ``partitions == 0`` and ``files is None`` (readers glob the table directory).
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
MANIFEST_FILE = "_manifest.json"

SPLITS = ("train", "valid", "test")

# Protocol names selected with ``split=<name>`` in the Spark job; the manifest records which one made
# the bundle so the trainer can pick the matching evaluation.
SPLIT_PROTOCOLS = ("given", "random_per_user", "user_holdout", "chunks", "leave_one_out")

# Graph table names. Per-behavior user->item and item->user graphs are ``ui.<behavior>`` and
# ``iu.<behavior>``; the rest are fixed names.
GRAPH_ITEM_COOC = "item_cooc"
GRAPH_USER_GROUP = "user_group"
GRAPH_GROUP_USER = "group_user"
GRAPH_GROUP_ITEM = "group_item"


def ui_graph(behavior: str) -> str:
    """Name of the user->item adjacency of one behavior, e.g. ``ui.buy``."""
    return f"ui.{behavior}"


def iu_graph(behavior: str) -> str:
    """Name of the item->user adjacency of one behavior, e.g. ``iu.buy``."""
    return f"iu.{behavior}"


ID_MAP = pa.schema([("raw_id", pa.string()), ("idx", pa.int64())])
INTERACTIONS = pa.schema(
    [("user", pa.int64()), ("item", pa.int64()), ("behavior", pa.int8()), ("ts", pa.int64())]
)
GROUP_MEMBERS = pa.schema([("group", pa.int64()), ("user", pa.int64())])
GROUP_ITEMS = pa.schema([("group", pa.int64()), ("item", pa.int64())])
SEQUENCES = pa.schema(
    [("user", pa.int64()), ("items", pa.list_(pa.int64())), ("ts", pa.list_(pa.int64()))]
)
# Held-out evaluation rows: ``input`` is what the model may see (a sequence prefix, empty for
# graph models that use the training graph), ``targets`` the held-out positives, ``candidates``
# a fixed sampled candidate list (empty for full ranking).
EVAL_ROWS = pa.schema(
    [
        ("user", pa.int64()),
        ("input", pa.list_(pa.int64())),
        ("input_ts", pa.list_(pa.int64())),
        ("targets", pa.list_(pa.int64())),
        ("candidates", pa.list_(pa.int64())),
    ]
)
GRAPH = pa.schema(
    [("src", pa.int64()), ("dst", pa.list_(pa.int64())), ("w", pa.list_(pa.float32()))]
)
REJECTED = pa.schema(
    [
        ("source_file", pa.string()),
        ("line", pa.int64()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "ids/users": ID_MAP,
    "ids/items": ID_MAP,
    "ids/groups": ID_MAP,
    "interactions": INTERACTIONS,
    "groups/members": GROUP_MEMBERS,
    "groups/items": GROUP_ITEMS,
    "sequences": SEQUENCES,
    "_rejected": REJECTED,
}


def schema_for(table: str) -> pa.Schema:
    """Schema of a bundle table path such as ``interactions``, ``graphs/ui.buy`` or ``eval/x``."""
    if table.startswith("graphs/"):
        return GRAPH
    if table.startswith("eval/"):
        return EVAL_ROWS
    if table in TABLE_SCHEMAS:
        return TABLE_SCHEMAS[table]
    raise KeyError(
        f"unknown bundle table {table!r}; known: {sorted(TABLE_SCHEMAS)}, graphs/*, eval/*"
    )


def schema_to_json(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


@dataclass
class TableInfo:
    """One table in the manifest: where it is, how many rows, its columns."""

    path: str
    rows: int
    schema: dict[str, str]
    partitioned_by: str | None = None  # "split" or "src_range"
    # v2: one entry per file, in index order (per split in SPLITS order): path (relative to the
    # table directory), rows, index, plus split (split tables) or src_lo/src_hi (graphs, inclusive).
    files: list[dict[str, Any]] | None = None


@dataclass
class Manifest:
    """``_manifest.json``: everything the trainer needs to size tables and pick protocols."""

    name: str
    source: str
    counts: dict[str, int]  # users, items, groups, interactions.<split>, behavior.<name>
    behaviors: list[str]  # ordered, target behavior last
    split: dict[str, Any]  # {"protocol": ..., plus its parameters (ratios, seed, ...)}
    tables: dict[str, TableInfo]
    filters: dict[str, Any] = field(default_factory=dict)  # k-core, dedup, ...
    rejected: dict[str, Any] = field(default_factory=dict)  # rows, share, by_reason
    created_by: str = "spark_jobs.build_bundle"
    format_version: int = FORMAT_VERSION
    partitions: int = 0  # v2: files per table (per split); 0 in version 1 bundles

    @property
    def num_users(self) -> int:
        return int(self.counts["users"])

    @property
    def num_items(self) -> int:
        return int(self.counts["items"])

    @property
    def num_groups(self) -> int:
        return int(self.counts.get("groups", 0))

    @property
    def target_behavior(self) -> str:
        return self.behaviors[-1]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "<manifest>") -> Manifest:
        version = d.get("format_version")
        if version not in READ_VERSIONS:
            raise BundleFormatError(
                f"{where}: format_version {version!r} is not supported (this distrec reads "
                f"format_version {', '.join(map(str, READ_VERSIONS))}); rebuild the bundle with "
                "spark_jobs.build_bundle"
            )
        required = ("name", "source", "counts", "behaviors", "split", "tables")
        missing = [k for k in required if k not in d]
        if missing:
            raise BundleFormatError(f"{where}: manifest lacks field(s) {missing}")
        for k in ("users", "items"):
            if k not in d["counts"]:
                raise BundleFormatError(f"{where}: counts.{k} is missing")
        if not d["behaviors"]:
            raise BundleFormatError(f"{where}: behaviors is empty (need at least the target)")
        tables = {}
        for name, t in d["tables"].items():
            try:
                tables[name] = TableInfo(**t)
            except TypeError as e:
                raise BundleFormatError(f"{where}: tables.{name}: {e}") from e
        fields = {k: v for k, v in d.items() if k != "tables"}
        return cls(tables=tables, **fields)

    @classmethod
    def load(cls, bundle_dir: str) -> Manifest:
        path = os.path.join(bundle_dir, MANIFEST_FILE)
        if not os.path.exists(path):
            raise BundleFormatError(
                f"{bundle_dir}: no {MANIFEST_FILE}; not a dataset bundle (build one with "
                "`python -m spark_jobs.build_bundle`)"
            )
        with open(path) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise BundleFormatError(f"{path}: not valid JSON: {e}") from e
        return cls.from_dict(d, where=path)

    def write(self, bundle_dir: str) -> None:
        """Write the manifest atomically (tmp file + rename)."""
        path = os.path.join(bundle_dir, MANIFEST_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.to_json())
        os.replace(tmp, path)


class BundleFormatError(ValueError):
    """A bundle that this version of distrec cannot read; the message names the file and field."""
