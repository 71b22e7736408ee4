"""Build options: a typed dataclass filled from ``key=value`` command-line overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class OptionError(ValueError):
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
    graph_partitions: int = 8  # src-range files per graph (a rank reads whole files)
    rows_per_file: int = 1_000_000  # interactions/sequences rows per Parquet file (about)
    row_group_mb: int = 16  # Parquet row group size
    # generic reader
    format: str = "csv"  # csv | tsv | parquet | json (JSON Lines) | text (whitespace separated)
    sep: str = ","
    header: bool = True
    columns: dict[str, str] = field(default_factory=dict)  # col.user=uid col.item=... col.behavior
    behaviors: list[str] = field(default_factory=list)  # ordered, target last; [] = as found
    ts_unit: str = "s"  # s | ms: unit of the raw timestamp column
    numeric_ids: bool = False  # reject non-integer user/item ids


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
        return [s for s in raw.split(",") if s]
    return raw


def parse_overrides(pairs: list[str], base: BuildOptions | None = None) -> BuildOptions:
    """Apply ``key=value`` strings; ``col.<field>=<column>`` sets the generic column mapping.

    Unknown keys and badly typed values raise :class:`OptionError` naming the key.
    """
    opts = dataclasses.replace(base) if base else BuildOptions()
    opts.columns = dict(opts.columns)
    types = {f.name: f.type for f in dataclasses.fields(BuildOptions)}
    for pair in pairs:
        if "=" not in pair:
            raise OptionError(f"override {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key.startswith("col."):
            opts.columns[key[4:]] = raw
            continue
        if key not in types or key == "columns":
            valid = ", ".join(sorted(k for k in types if k != "columns"))
            raise OptionError(f"unknown option {key!r}; valid: {valid}, col.<field>")
        setattr(opts, key, _coerce(key, types[key], raw))
    if opts.format == "tsv" and opts.sep == ",":
        opts.sep = "\t"
    return opts
