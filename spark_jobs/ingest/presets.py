"""Presets: the reference data sets' file roles, default names and column maps in one table.

A preset is generic input with fixed knowledge of a published layout. ``--input DIR`` finds
each role's file by its default name; ``--input-file ROLE=PATH`` replaces one (another file
name, another directory, a URI). Column maps are 0-based field positions in the
whitespace/comma-separated lines of the published files; per-role constants (behavior,
split) come from the table, so the parsers (one module per layout) hold no file names.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from spark_jobs.errors import MissingInputError, UserError
from spark_jobs.options import BuildOptions
from spark_jobs.store import Store, join


@dataclass(frozen=True)
class Role:
    """One input file role: default name patterns (first alternative that matches wins)."""

    name: str
    patterns: tuple[str, ...]
    columns: dict[str, int] = field(default_factory=dict)
    behavior: str = ""
    split: str = ""
    required: bool = True
    when: str = ""  # "given": only with split=given; "!given": only without it


PAIR = {"user": 0, "item": 1}
GROUP_PAIR = {"group": 0, "item": 1}

PRESETS: dict[str, tuple[Role, ...]] = {
    "jd_vcgae": (
        Role("trn_pv", ("trn_pv",), PAIR, behavior="pv", split="train"),
        Role("trn_fav", ("trn_fav",), PAIR, behavior="fav", split="train"),
        Role("trn_buy", ("trn_buy",), PAIR, behavior="buy", split="train"),
        Role("vld_buy", ("vld_buy",), PAIR, behavior="buy", split="valid"),
        Role("tst_buy", ("tst_buy",), PAIR, behavior="buy", split="test"),
    ),
    "mafengwo": (
        Role("user_train", ("userRatingTrain.txt",), PAIR, behavior="buy", split="train"),
        Role("user_test", ("userRatingTest.txt",), PAIR, behavior="buy", split="test"),
        Role("group_train", ("groupRatingTrain.txt",), GROUP_PAIR, split="train"),
        Role("group_test", ("groupRatingTest.txt",), GROUP_PAIR, split="test"),
        Role("members", ("groupMember.txt",), {"group": 0, "users": 1}),
    ),
    "gowalla_1000u": (
        Role(
            "checkins",
            ("Gowalla_checkins.txt",),
            {"user": 0, "item": 1, "timestamp": 2},
            behavior="checkin",
            when="!given",
        ),
        Role(
            "train", ("Gowalla_train.txt",), PAIR, behavior="checkin", split="train", when="given"
        ),
        Role("test", ("Gowalla_test.txt",), PAIR, behavior="checkin", split="test", when="given"),
    ),
    "amazon_beauty": (
        Role("items", ("*_item_org_rank.txt", "*_item_*.txt"), {"user": 0, "items": 1}),
        Role("times", ("*_time_org_rank.txt", "*_time_*.txt"), {"user": 0, "timestamps": 1}),
    ),
    "ml-100k": (
        Role(
            "interactions",
            ("*.inter",),
            {"user": 0, "item": 1, "rating": 2, "timestamp": 3},
            behavior="rating",
        ),
    ),
    "synth": (
        Role("meta", ("meta.json",)),
        Role(
            "events", ("events/part-*.csv",), {"user": 0, "item": 1, "behavior": 2, "timestamp": 3}
        ),
        Role("members", ("groups/members-*.csv",), {"group": 0, "user": 1}, required=False),
        Role(
            "group_items",
            ("groups/events-*.csv",),
            {"group": 0, "item": 1, "timestamp": 2},
            required=False,
        ),
    ),
}


def role(source: str, name: str) -> Role:
    return next(r for r in PRESETS[source] if r.name == name)


def resolve(
    spark: SparkSession, source: str, path: str, opts: BuildOptions
) -> dict[str, list[str]]:
    """Files of each active role of ``source`` (sorted; local paths absolute).

    A missing required role is a :class:`MissingInputError` naming every expected role and
    what the input directory holds; an unknown ``--input-file`` role is a user error.
    """
    given = opts.split == "given"
    active = [r for r in PRESETS[source] if not r.when or (r.when == "given") == given]
    names = [r.name for r in PRESETS[source]]
    unknown = sorted(set(opts.input_files) - set(names))
    if unknown:
        raise UserError(
            f"--input-file {unknown[0]}=...: source {source} has no role {unknown[0]!r}; "
            f"roles: {', '.join(names)}"
        )
    store = Store(spark, path or ".")
    out: dict[str, list[str]] = {}
    missing: list[Role] = []
    for r in active:
        if r.name in opts.input_files:
            p = opts.input_files[r.name]
            if store.is_file(p):
                out[r.name] = [Store(spark, p).root]
            elif store.is_dir(p) and store.files(p):
                out[r.name] = store.files(p)
            else:
                raise MissingInputError(
                    f"--input-file {r.name}={p}: no such file (source {source}, role {r.name})"
                )
            continue
        got: list[str] = []
        if path and store.is_file(path):  # --input names one file: the role it matches
            base = path.rstrip("/").rsplit("/", 1)[-1]
            if any(fnmatch.fnmatch(base, pat.rsplit("/", 1)[-1]) for pat in r.patterns):
                got = [store.root]
        elif path and store.is_dir(path):
            for pat in r.patterns:
                got = sorted(store.glob(path, pat))
                if got:
                    break
        if got:
            out[r.name] = got
        elif r.required:
            missing.append(r)
    if missing:
        found = []
        if path and store.is_dir(path):
            found = [p.rsplit("/", 1)[-1] + ("/" if d else "") for p, d in store.ls(path)]
        expected = "; ".join(f"{r.name}={'|'.join(r.patterns)}" for r in active)
        raise MissingInputError(
            f"{path or '(no --input)'}: source {source}: missing role "
            f"{', '.join(r.name for r in missing)}; expected roles {expected}; found: "
            f"{', '.join(found[:20]) or 'nothing'}"
            f"{' ...' if len(found) > 20 else ''}; give --input-file ROLE=PATH"
        )
    return out


def one(files: dict[str, list[str]], name: str) -> str:
    return files[name][0]


__all__ = ["PRESETS", "Role", "join", "one", "resolve", "role"]
