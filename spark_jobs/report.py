"""Progress lines and reject accounting for the build."""

from __future__ import annotations

import sys
import time
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.errors import UserError


class Progress:
    """``[build_bundle +12.3s] message`` lines on stderr, one per stage."""

    def __init__(self, quiet: bool = False) -> None:
        self.t0 = time.perf_counter()
        self.quiet = quiet

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[build_bundle +{self.elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)


class RejectedShareError(UserError):
    """Too many malformed rows: the input is probably not in the format the reader expects."""


def reject_stats(frames: dict[str, DataFrame]) -> dict[str, Any]:
    """Rows read and rejected per frame, rejects grouped by reason kind (text before a quote)."""
    rows_in = 0
    by_reason: dict[str, int] = {}
    per_table: dict[str, dict[str, int]] = {}
    for name, df in frames.items():
        kind = F.trim(F.regexp_replace(F.col("reason"), "'.*$|[0-9]+", "#"))
        got = df.groupBy(kind.alias("k")).agg(F.count("*").alias("n")).collect()
        n_in = sum(int(r["n"]) for r in got)
        n_bad = 0
        for r in got:
            if r["k"] is not None:
                by_reason[r["k"]] = by_reason.get(r["k"], 0) + int(r["n"])
                n_bad += int(r["n"])
        rows_in += n_in
        per_table[name] = {"rows_in": n_in, "rejected": n_bad}
    rejected = sum(by_reason.values())
    return {
        "rows_in": rows_in,
        "rows": rejected,
        "share": rejected / rows_in if rows_in else 0.0,
        "by_reason": by_reason,
        "per_input": per_table,
    }


def check_share(stats: dict[str, Any], limit: float, samples: list[Any], where: str) -> None:
    """Raise a one-line :class:`RejectedShareError`: the first rejected row (file:line: field:
    reason), the share over the limit, the reasons and where the reject table was written."""
    if stats["share"] <= limit:
        return
    first = (
        f"{samples[0]['source_file']}:{samples[0]['line']}: {samples[0]['reason']}"
        if samples
        else "(no row sample)"
    )
    reasons = "; ".join(f"{k} x{v}" for k, v in sorted(stats["by_reason"].items()))
    raise RejectedShareError(
        f"{first} -- {stats['rows']} of {stats['rows_in']} rows rejected "
        f"({stats['share']:.2%} > max_reject_share={limit:.2%}; reasons: {reasons}); "
        f"all rejected rows: {where}"
    )
