"""Build options: a typed dataclass filled from ``key=value`` command-line overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from spark_jobs.errors import UserError


class OptionError(UserError):
    """A ``key=value`` override that does not fit :class:`BuildOptions`; names the key."""


@dataclass
class BuildOptions:
    """Everything that changes what a bundle contains; recorded in the manifest.

    Reader options (``sep``, ``col.*``, ...) only matter for the generic reader.
    """

    name: str = ""  # bundle name; default: the source name
    split: str = (
        ""  # given | random_per_user | user_holdout | chunks | leave_one_out; "" = source default
    )
    seed: int = 2026
    valid_ratio: float = 0.1
    test_ratio: float = 0.1
    holdout_input_ratio: float = (
        0.8  # user_holdout: share of a held-out user's sequence given as input
    )
    chunk_size: int = 100  # chunks (MDGR): items per chunk
    chunk_input: int = 50  # first chunk_input items are input, the rest targets
    chunk_negatives: int = 50  # sampled unseen items per chunk
    min_user_interactions: int = (
        0  # users with fewer (after dedup) are dropped; chunks uses chunk_size
    )
    dedup: bool = True  # drop repeated (user, item, behavior) events, keeping the earliest
    kcore_user: int = 0  # k-core: keep users with >= k interactions (0 = off)
    kcore_item: int = 0  # k-core: keep items with >= k interactions (0 = off)
    kcore_max_iter: int = 20
    cooc_topk: int = 50  # item_cooc: neighbours kept per item (0 = all)
    cooc_max_items_per_user: int = 200  # heavy users contribute a seeded sample of this many items
    group_items_top: int = 30  # IGRec: derived group-item edges = members' most bought items
    max_reject_share: float = 0.01  # fail when rejected / read rows exceeds this
    partitions: int = 16  # files per table (per split); the largest world size readers balance
    row_group_mb: int = 16  # Parquet row group size
    commit: str = (
        "auto"  # auto (rename locally, manifest-last in place for URIs) | rename | inplace
    )
    # generic reader (presets set these per file role; see spark_jobs/ingest/presets.py)
    format: str = "csv"  # csv | tsv | json (JSON Lines) | parquet | orc | text (whitespace)
    sep: str = ","
    quote: str = '"'
    escape: str = '"'  # RFC 4180: a quote inside a quoted field is doubled
    header: bool = True
    columns: dict[str, str] = field(default_factory=dict)  # col.user=uid, members.col.group=gid
    reader: dict[str, str] = field(default_factory=dict)  # csv.<opt>=v: passed to Spark's reader
    behaviors: list[str] = field(default_factory=list)  # ordered, target last
    target: str = ""  # optional check: the target behavior (must be the last of behaviors)
    behavior: str = "interact"  # the behavior name when no behavior column is mapped
    behavior_map: dict[str, str] = field(default_factory=dict)  # raw value -> behavior name
    id_type: str = "auto"  # auto | int | string (auto: mixed integer / text ids are an error)
    float_ids: bool = False  # read float-style integer ids (516.0) as integers (516)
    numeric_ids: bool = False  # same as id_type=int (kept for old command lines)
    ts_unit: str = "auto"  # auto | s | ms | us | iso: raw timestamp unit (auto: numbers are s)
    ts_format: str = ""  # Spark datetime pattern for non-ISO timestamp strings
    tz: str = "UTC"  # time zone of timestamps without an offset (ISO strings, TIMESTAMP_NTZ)
    input_files: dict[str, str] = field(default_factory=dict)  # --input-file ROLE=PATH


_DICT_KEYS = {"columns", "reader", "behavior_map", "input_files"}
ROLES = ("interactions", "members", "group_items")


def _coerce(key: str, kind: Any, raw: str) -> Any:
    if kind is bool or kind == "bool":
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise OptionError(f"option {key}: expected a boolean, got {raw!r}")
    if kind is int or kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise OptionError(f"option {key}: expected an integer, got {raw!r}") from None
    if kind is float or kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise OptionError(f"option {key}: expected a number, got {raw!r}") from None
    if kind == "list[str]":
        return [s.strip() for s in raw.split(",") if s.strip()]
    if kind == "dict[str, str]":
        out = {}
        for item in (s for s in raw.split(",") if s):
            if ":" not in item:
                raise OptionError(f"option {key}: expected raw:name pairs, got {item!r}")
            a, b = item.split(":", 1)
            out[a.strip()] = b.strip()
        return out
    return raw


def parse_overrides(pairs: list[str], base: BuildOptions | None = None) -> BuildOptions:
    """Apply ``key=value`` strings; ``col.<field>=<column>`` sets the generic column mapping.

    Unknown keys and badly typed values raise :class:`OptionError` naming the key.
    """
    opts = dataclasses.replace(base) if base else BuildOptions()
    for k in _DICT_KEYS:
        setattr(opts, k, dict(getattr(opts, k)))
    types = {f.name: f.type for f in dataclasses.fields(BuildOptions)}
    for pair in pairs:
        if "=" not in pair:
            raise OptionError(f"override {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        role, _, rest = key.partition(".")
        if role in ROLES and rest.startswith("col."):
            opts.columns[f"{role}.{rest[4:]}"] = raw
            continue
        if key.startswith("col."):
            opts.columns[key[4:]] = raw
            continue
        if key.startswith("csv."):
            opts.reader[key[4:]] = raw
            continue
        if key not in types or key in _DICT_KEYS - {"behavior_map"}:
            valid = ", ".join(sorted(k for k in types if k not in _DICT_KEYS - {"behavior_map"}))
            raise OptionError(
                f"unknown option {key!r}; valid: {valid}, col.<field>, <role>.col.<field>, "
                "csv.<spark reader option>"
            )
        setattr(opts, key, _coerce(key, types[key], raw))
    if opts.numeric_ids:
        opts.id_type = "int"
    choices = {
        "format": ("csv", "tsv", "json", "parquet", "orc", "text"),
        "id_type": ("auto", "int", "string"),
        "ts_unit": ("auto", "s", "ms", "us", "iso"),
        "commit": ("auto", "rename", "inplace"),
    }
    for k, allowed in choices.items():
        if getattr(opts, k) not in allowed:
            raise OptionError(
                f"option {k}: expected one of {', '.join(allowed)}, got {getattr(opts, k)!r}"
            )
    if opts.partitions < 1:
        raise OptionError(f"option partitions: expected an integer >= 1, got {opts.partitions}")
    return opts
