"""Generic input: interactions, group members and group interactions read with Spark's own
readers (CSV/TSV with header, quote, escape and separator; JSON Lines; Parquet; ORC; or
whitespace-separated text), a column mapping, id and timestamp normalisation.

File roles (``--input-file ROLE=PATH``, or found under ``--input DIR`` by name):
``interactions`` (required; the whole directory when no role is named), ``members``
(``members*``), ``group_items`` (``group_items*`` / ``group_interactions*``).

Fields (``col.<field>=<column name, or 0-based index without header>``; role-prefixed for the
group files, e.g. ``members.col.group=gid``): interactions user, item, behavior, timestamp,
split, weight; members group, user; group_items group, item, timestamp, split. Unmapped fields
default to the usual names (``user``/``user_id``/``uid``, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.errors import MissingInputError, UserError
from spark_jobs.ingest.common import ID_RE, MAX_TS, RawData, file_index_ord, first_reason
from spark_jobs.lines import number_rows, read_lines
from spark_jobs.options import BuildOptions
from spark_jobs.store import Store

FIELDS = {
    "interactions": ("user", "item", "behavior", "timestamp", "split", "weight"),
    "members": ("group", "user"),
    "group_items": ("group", "item", "timestamp", "split"),
}
REQUIRED = {
    "interactions": ("user", "item"),
    "members": ("group", "user"),
    "group_items": ("group", "item"),
}
ALIASES = {
    "user": ("user", "user_id", "userid", "uid"),
    "item": ("item", "item_id", "itemid", "iid"),
    "group": ("group", "group_id", "groupid", "gid"),
    "behavior": ("behavior", "behaviour", "event", "event_type", "action"),
    "timestamp": ("timestamp", "ts", "time", "event_time"),
    "split": ("split",),
    "weight": ("weight",),
}
ROLE_NAMES = {
    "interactions": ("interactions*", "events*"),
    "members": ("members*", "group_members*"),
    "group_items": ("group_items*", "group_interactions*", "group_events*"),
}
FLOAT_ID_RE = r"^-?[0-9]+\.0*$"
_OFFSET_RE = r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"


@dataclass
class Frame:
    """One role read: ``df`` has source_file, line, raw and ``_f_<field>`` columns."""

    df: DataFrame
    fields: dict[str, str]  # field -> column name in the file
    types: dict[str, T.DataType]
    files: list[str]
    empty: list[str]


def role_files(spark: SparkSession, path: str, opts: BuildOptions) -> dict[str, list[str]]:
    """Data files per role; an unknown role or a missing ``interactions`` is a user error
    that names the expected roles and what was found."""
    store = Store(spark, path or ".")
    unknown = sorted(set(opts.input_files) - set(FIELDS))
    if unknown:
        raise UserError(
            f"--input-file {unknown[0]}: unknown role for source generic; roles: {', '.join(FIELDS)}"
        )
    out: dict[str, list[str]] = {}
    for role, given in opts.input_files.items():
        out[role] = _expand(store, given, role)
    if path and store.is_file(path):
        out.setdefault("interactions", [store.root])
    elif path and store.is_dir(path):
        named = {
            role: sorted(
                {p for pat in pats for p in store.glob(path, pat)}
                | {p for pat in pats for p, d in store.ls(path) if d and _match(p, pat)}
            )
            for role, pats in ROLE_NAMES.items()
        }
        if any(named.values()):
            for role, got in named.items():
                if got and role not in out:
                    out[role] = [f for g in got for f in _expand(store, g, role)]
        elif "interactions" not in out:
            out["interactions"] = store.files(path)
    elif path and path != "." and "interactions" not in out:
        raise MissingInputError(f"{path}: input does not exist")
    if not out.get("interactions"):
        found = (
            ", ".join(p.rsplit("/", 1)[-1] for p, _ in store.ls(path))
            if path and store.is_dir(path)
            else ""
        )
        raise MissingInputError(
            f"{path or '(no --input)'}: no interactions file; generic expects roles "
            f"interactions (required), members, group_items (named {', '.join(ROLE_NAMES['interactions'])} "
            f"or --input-file ROLE=PATH); found: {found or 'nothing'}"
        )
    return out


def _match(p: str, pat: str) -> bool:
    import fnmatch

    return fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat)


def _expand(store: Store, p: str, role: str) -> list[str]:
    if store.is_file(p):
        return [Store(store.spark, p).root]
    if store.is_dir(p):
        got = store.files(p)
        if got:
            return got
    raise MissingInputError(f"--input-file {role}={p}: no such file, or an empty directory")


def _read(spark: SparkSession, role: str, files: list[str], opts: BuildOptions) -> Frame:
    store = Store(spark, files[0])
    empty = [f for f in files if store.size(f) == 0]
    full = [f for f in files if f not in empty]
    if not full:
        raise UserError(f"{files[0]}: role {role}: every input file is empty")
    fmt = opts.format
    cols = {
        k[len(role) + 1 :] if k.startswith(role + ".") else k: v
        for k, v in opts.columns.items()
        if (k.startswith(role + ".") or (role == "interactions" and "." not in k))
    }
    if fmt in ("csv", "tsv"):
        sep = "\t" if fmt == "tsv" and opts.sep == "," else opts.sep
        o = {
            "header": str(opts.header).lower(),
            "sep": sep,
            "quote": opts.quote,
            "escape": opts.escape,
            "inferSchema": "false",
            **opts.reader,
        }
        names = spark.read.options(**o).csv(full[0]).columns
        schema = T.StructType(
            [T.StructField(n, T.StringType()) for n in names]
            + [T.StructField("_corrupt", T.StringType())]
        )
        df = (
            spark.read.options(**o, mode="PERMISSIVE", columnNameOfCorruptRecord="_corrupt")
            .schema(schema)
            .csv(full)
        )
        df = number_rows(df.withColumn("source_file", F.input_file_name()))
        if opts.header:
            df = df.withColumn("line", F.col("line") + 1)  # the header is line 1 of each file
        raw = F.coalesce(F.col("_corrupt"), F.concat_ws(sep, *[F.col(f"`{n}`") for n in names]))
        bad = F.col("_corrupt").isNotNull()
        bad_msg = f"expected {len(names)} fields (sep {sep!r}, quote {opts.quote!r})"
    elif fmt == "text":
        lines = read_lines(spark, full)
        parts = F.split(F.trim("value"), r"\s+")
        if opts.header:
            first = lines.filter(F.col("line") == 1).select("value").limit(1).collect()
            hdr = first[0][0].split() if first else []
            cols = {k: str(hdr.index(v)) if v in hdr else v for k, v in cols.items()}
            for f in FIELDS[role]:  # unmapped fields: their usual names in the header
                hit = next((a for a in ALIASES[f] if a in hdr), None)
                if f not in cols and hit is not None:
                    cols[f] = str(hdr.index(hit))
            lines = lines.filter(F.col("line") > 1)
        width = max([int(v) for v in cols.values() if v.isdigit()] + [1]) + 1
        names = [f"_c{i}" for i in range(width)]
        df = lines.select(
            "source_file", "line", "value", *[F.get(parts, i).alias(n) for i, n in enumerate(names)]
        )
        raw = F.col("value")
        bad = F.size(parts) < width
        bad_msg = f"expected at least {width} whitespace-separated fields"
    elif fmt == "json":
        lines = read_lines(spark, full)
        keys = {cols.get(f, f) for f in FIELDS[role]} | {
            a for f in FIELDS[role] for a in ALIASES[f]
        }
        js = "struct<" + ",".join(f"`{k}`:string" for k in sorted(keys)) + ">"
        j = F.from_json("value", js, {"mode": "PERMISSIVE"})
        # from_json gives a struct of nulls for malformed text; try_parse_json tells them apart.
        df = lines.select(
            "source_file", "line", "value", *[j.getField(k).alias(k) for k in sorted(keys)]
        )
        # Every candidate key is a column; a key no record holds is not in the data.
        has = df.select(
            *[F.max(F.col(f"`{k}`").isNotNull()).alias(k) for k in sorted(keys)]
        ).first()
        names = [k for k in sorted(keys) if has is not None and has[k]]
        raw = F.col("value")
        bad = F.try_parse_json("value").isNull() & (F.trim("value") != "")
        bad_msg = "invalid JSON"
    elif fmt in ("parquet", "orc"):
        src = spark.read.format(fmt).options(**opts.reader).load(full)
        names = src.columns
        df = number_rows(src.withColumn("source_file", F.input_file_name()))
        raw = F.to_json(F.struct(*[F.col(f"`{n}`") for n in names]))
        bad = F.lit(False)
        bad_msg = ""
    else:  # parse_overrides checks the choices; this is a programming error
        raise ValueError(f"format {fmt!r}")
    fields: dict[str, str] = {}
    for f in FIELDS[role]:
        want = cols.get(f)
        if want is not None:
            # A 0-based index names the column of a header-less file (or of text input).
            by_index = want.isdigit() and (
                fmt == "text" or (fmt in ("csv", "tsv") and not opts.header)
            )
            name = f"_c{want}" if by_index else want
            if name not in names:
                raise UserError(
                    f"{full[0]}: role {role}: column {want!r} for field {f} not found; "
                    f"columns: {', '.join(n for n in names if not n.startswith('_corrupt'))}"
                )
            fields[f] = name
        else:
            hit = next((a for a in ALIASES[f] if a in names), None)
            if hit is not None:
                fields[f] = hit
    missing = [f for f in REQUIRED[role] if f not in fields]
    if missing:
        raise UserError(
            f"{full[0]}: role {role}: no column for field {missing[0]} (map it with "
            f"{'' if role == 'interactions' else role + '.'}col.{missing[0]}=<column>); columns: "
            f"{', '.join(n for n in names if n != '_corrupt')}"
        )
    types = {f: df.schema[c].dataType for f, c in fields.items()}
    out = df.select(
        "source_file",
        "line",
        raw.alias("raw"),
        F.when(bad, F.lit(bad_msg)).alias("_bad"),
        *[F.col(f"`{c}`").alias(f"_f_{f}") for f, c in fields.items()],
    )
    return Frame(out, fields, types, full, empty)


def _id_column(fr: Frame, field: str, opts: BuildOptions) -> tuple[Column, list]:
    """Id as a string (ints and float-style ints normalised) and its reject checks; a float-
    style id without ``float_ids=true`` or a mix of integer and text ids is a user error."""
    c = F.col(f"_f_{field}")
    t = fr.types[field]
    s = F.trim(c.cast("string"))
    if isinstance(t, (T.FloatType, T.DoubleType, T.DecimalType)):
        s = F.when(c == F.floor(c), F.floor(c).cast("string")).otherwise(s) if opts.float_ids else s
    kind = (
        F.when(s.isNull() | (s == ""), "missing")
        .when(s.rlike(ID_RE), "int")
        .when(s.rlike(FLOAT_ID_RE), "float")
        .otherwise("text")
    )
    stats = {
        r["k"]: (int(r["n"]), r["ex"])
        for r in fr.df.filter(F.col("_bad").isNull())
        .groupBy(kind.alias("k"))
        .agg(
            F.count("*").alias("n"),
            F.min(F.struct("source_file", "line", s.alias("v"))).alias("ex"),
        )
        .collect()
    }
    col = fr.fields[field]

    def at(k: str) -> str:
        ex = stats[k][1]
        return f"{ex['source_file']}:{ex['line']}"

    if "float" in stats:
        if not opts.float_ids:
            raise UserError(
                f"{at('float')}: field {field} (column {col!r}): float-style id "
                f"{stats['float'][1]['v']!r} ({stats['float'][0]} rows); add float_ids=true to "
                "read such ids as integers"
            )
        s = F.when(s.rlike(FLOAT_ID_RE), F.regexp_replace(s, r"\.0*$", "")).otherwise(s)
    n_int = stats.get("int", (0, None))[0] + stats.get("float", (0, None))[0]
    if opts.id_type == "auto" and n_int and "text" in stats:
        eg = "int" if "int" in stats else "float"
        raise UserError(
            f"{at('text')}: field {field} (column {col!r}): mixed integer and text ids "
            f"({stats['text'][1]['v']!r} here, {stats[eg][1]['v']!r} at {at(eg)}); set "
            "id_type=string to keep every id as text or id_type=int to reject non-integers"
        )
    checks: list = [(s.isNull() | (s == ""), f"{field}: missing id")]
    if opts.id_type == "int":
        checks.append(
            (~s.rlike(ID_RE), F.concat(F.lit(f"{field}: non-numeric id '"), s, F.lit("'")))
        )
    return s, checks


def _ts_column(fr: Frame, opts: BuildOptions) -> tuple[Column, list]:
    """Seconds (int64) from epoch numbers (s/ms/us), ISO-8601 strings or timestamp types."""
    if "timestamp" not in fr.fields:
        return F.lit(None).cast("long"), []
    c = F.col("_f_timestamp")
    t = fr.types["timestamp"]
    scale = {"ms": 1e3, "us": 1e6}.get(opts.ts_unit, 1.0)
    if isinstance(t, T.TimestampType):
        ts = F.unix_seconds(c)
    elif isinstance(t, (T.TimestampNTZType, T.DateType)):
        ts = F.unix_seconds(F.to_utc_timestamp(c.cast("timestamp"), opts.tz))
    elif isinstance(t, T.NumericType):
        ts = F.floor(c.cast("double") / scale).cast("long")
    else:
        s = F.trim(c)
        num = F.floor(s.try_cast("double") / scale).cast("long")
        parsed = (
            F.try_to_timestamp(s, F.lit(opts.ts_format))
            if opts.ts_format
            else F.try_to_timestamp(s)
        )
        # A string without an offset is wall-clock time in ``tz``.
        local = F.when(s.rlike(_OFFSET_RE), parsed).otherwise(F.to_utc_timestamp(parsed, opts.tz))
        iso = F.unix_seconds(local)
        ts = (
            iso
            if opts.ts_unit == "iso"
            else (num if opts.ts_unit != "auto" else F.coalesce(num, iso))
        )
    raw = c.cast("string")
    bad = ts.isNull() | (ts < 0) | (ts >= MAX_TS)
    return ts, [
        (c.isNull() | (raw == ""), "timestamp: missing"),
        (bad, F.concat(F.lit("timestamp: impossible value '"), raw, F.lit("'"))),
    ]


def _split_column(fr: Frame) -> tuple[Column, list]:
    if "split" not in fr.fields:
        return F.lit(None).cast("string"), []
    s = F.lower(F.trim(F.col("_f_split").cast("string")))
    return s, [
        (
            ~s.isin("train", "valid", "test") | s.isNull(),
            F.concat(
                F.lit("split: unknown '"), F.coalesce(s, F.lit("")), F.lit("' (train, valid, test)")
            ),
        )
    ]


def _behaviors(fr: Frame, opts: BuildOptions) -> tuple[Column, list, list[str]]:
    """Behavior column (raw values mapped by ``behavior_map``), its checks, the ordered list."""
    if "behavior" not in fr.fields:
        if opts.behaviors and opts.behaviors != [opts.behavior]:
            raise UserError(
                f"{fr.files[0]}: behaviors={','.join(opts.behaviors)} given but no behavior "
                "column found (map it with col.behavior=<column>)"
            )
        return F.lit(opts.behavior), [], [opts.behavior]
    raw = F.trim(F.col("_f_behavior").cast("string"))
    if opts.behavior_map:
        m = F.create_map(*[x for k, v in opts.behavior_map.items() for x in (F.lit(k), F.lit(v))])
        b = m[raw]
    else:
        b = raw
    behaviors = list(opts.behaviors)
    if not behaviors:
        found = sorted(
            r[0]
            for r in fr.df.filter(F.col("_bad").isNull()).select(b.alias("b")).distinct().collect()
            if r[0] is not None and r[0] != ""
        )
        if len(found) > 1:
            raise UserError(
                f"{fr.files[0]}: field behavior (column {fr.fields['behavior']!r}): {len(found)} "
                f"behaviors found ({', '.join(found[:20])}); give their order with the target "
                f"last, e.g. behaviors={','.join(found[:20])}"
            )
        behaviors = found or [opts.behavior]
    if opts.target and opts.target != behaviors[-1]:
        raise UserError(
            f"option target={opts.target}: the target must be the last of behaviors="
            f"{','.join(behaviors)}"
        )
    unknown = F.concat(
        F.lit("behavior: unknown '"),
        F.coalesce(raw, F.lit("")),
        F.lit(f"' (known: {','.join(opts.behavior_map or behaviors)})"),
    )
    return (
        b,
        [
            ((raw.isNull() | (raw == "")), "behavior: missing"),
            (~b.isin(*behaviors) | b.isNull(), unknown),
        ],
        behaviors,
    )


def _finish(fr: Frame, cols: dict[str, Column], checks: list) -> DataFrame:
    reason = first_reason([(F.col("_bad").isNotNull(), F.col("_bad")), *checks])
    return fr.df.select(
        *[c.alias(k) for k, c in cols.items()], reason.alias("reason"), "source_file", "line", "raw"
    )


def read(spark: SparkSession, path: str, opts: BuildOptions) -> RawData:
    roles = role_files(spark, path, opts)
    ev = _read(spark, "interactions", roles["interactions"], opts)
    user, c_u = _id_column(ev, "user", opts)
    item, c_i = _id_column(ev, "item", opts)
    beh, c_b, behaviors = _behaviors(ev, opts)
    ts, c_t = _ts_column(ev, opts)
    split, c_s = _split_column(ev)
    checks = c_u + c_i + c_b + c_t + c_s
    if "weight" in ev.fields:
        w = F.col("_f_weight").cast("string")
        checks.append(
            (
                w.try_cast("double").isNull(),
                F.concat(F.lit("weight: not a number '"), w, F.lit("'")),
            )
        )
    events = _finish(
        ev,
        {
            "user": user,
            "item": item,
            "behavior": beh,
            "ts": ts,
            "split": split,
            "ord": file_index_ord(ev.files),
            "pos": F.lit(0),
        },
        checks,
    )
    empty = list(ev.empty)
    members = group_items = None
    if "members" in roles:
        mf = _read(spark, "members", roles["members"], opts)
        g, c_g = _id_column(mf, "group", opts)
        u, c_mu = _id_column(mf, "user", opts)
        members = _finish(mf, {"group": g, "user": u}, c_g + c_mu)
        empty += mf.empty
    if "group_items" in roles:
        gf = _read(spark, "group_items", roles["group_items"], opts)
        g, c_g = _id_column(gf, "group", opts)
        i, c_gi = _id_column(gf, "item", opts)
        gts, c_gt = _ts_column(gf, opts)
        gs, c_gs = _split_column(gf)
        group_items = _finish(
            gf,
            {
                "group": g,
                "item": i,
                "ts": gts,
                "split": gs,
                "ord": file_index_ord(gf.files),
                "pos": F.lit(0),
            },
            c_g + c_gi + c_gt + c_gs,
        )
        empty += gf.empty
        if members is None:
            raise MissingInputError(
                f"{gf.files[0]}: group_items given without a members file (role members: "
                "--input-file members=PATH)"
            )
    given = "split" in ev.fields
    return RawData(
        events=events,
        behaviors=behaviors,
        default_split="given" if given else "random_per_user",
        members=members,
        group_items=group_items,
        has_given_split=given,
        empty_files=empty,
        notes={
            "format": opts.format,
            "columns": json.dumps(ev.fields),
            "files": json.dumps({r: len(f) for r, f in roles.items()}),
        },
    )
