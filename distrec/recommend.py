"""``python -m distrec.recommend --run-dir DIR [--all | --ids a,b,c | --users FILE | --split test]
--k K --out FILE.parquet``.

Top-K lists of the best checkpoint, with raw ids as in the input data: columns user, rank (1..K),
item, score. The queries: every user (``--all``), the users named by raw id (``--ids``, or
``--users``: a file with one raw id per line), or, by default, the users of ``--split`` (those
with held-out items there). Training positives are excluded, plus valid ones except for
``--split valid`` (as in evaluation; the users named by ``--all/--ids/--users`` are ranked as
test queries). ``--task group`` ranks for groups (IGRec). Works under
torchrun (each rank scores its item slice) and as plain python. An unknown raw id is an error
(exit 2) that names it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distrec.recommend", description=__doc__)
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="run directory")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    who = p.add_mutually_exclusive_group()
    who.add_argument("--all", action="store_true", help="every user (group) of the bundle")
    who.add_argument("--ids", help="comma-separated raw ids")
    who.add_argument("--users", help="file with one raw id per line")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--task", default="user")
    p.add_argument("overrides", nargs="*")
    return p


class UnknownId(ValueError):
    """A raw id that is not in the bundle's ids table."""


def resolve_ids(raw: list[str], known: np.ndarray, where: str) -> np.ndarray:
    """Indices [n] of the raw ids ``raw`` in ``known`` (raw id per index); the first unknown id
    raises UnknownId naming it and ``where`` (the ids table)."""
    index = {str(r): i for i, r in enumerate(known)}
    out = np.empty(len(raw), dtype=np.int64)
    for j, r in enumerate(raw):
        if r not in index:
            raise UnknownId(f"unknown id {r!r}: not in {where}")
        out[j] = index[r]
    return out


def _requested(args: argparse.Namespace) -> list[str] | None:
    if args.ids is not None:
        return [x.strip() for x in args.ids.split(",") if x.strip()]
    if args.users is not None:
        path = Path(args.users)
        if not path.is_file():
            raise UnknownId(f"--users {path}: no such file")
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    return None


def _query_ids(args: argparse.Namespace) -> np.ndarray | None:
    """Indices of the requested queries (None: the split's), checked before any process starts."""
    if not (args.all or args.ids is not None or args.users is not None):
        return None
    from distrec.data.bundle import Bundle
    from distrec.engine.session import load_run_config

    cfg = load_run_config(args.run, list(args.overrides))
    kind = "users" if args.task == "user" else f"{args.task}s"
    b = Bundle(cfg.data.bundle)
    known = b.raw_ids(kind)
    if args.all:
        return np.arange(len(known), dtype=np.int64)
    raw = _requested(args) or []
    return resolve_ids(raw, known, str(b.table_dir(f"ids/{kind}")))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.k <= 0:
        print("error: --k must be positive", file=sys.stderr)
        return 2
    try:
        query_ids = _query_ids(args)
    except UnknownId as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from distrec.cli import run_guarded
    from distrec.engine.runs import export_topk
    from distrec.evaluate import load_for_eval

    def export() -> None:  # the session dies with this frame, before destroy_distributed
        s = load_for_eval(args.run, args.checkpoint, list(args.overrides))
        n = export_topk(s, args.split, args.k, args.out, task=args.task, query_ids=query_ids)
        if s.env.is_main:
            print(f"wrote {n} rows to {args.out}", file=sys.stderr)

    # NotImplementedError: e.g. --all for a sequence model, whose queries need a split
    return run_guarded(
        export, (NotImplementedError,), prefix="--all/--ids/--users: ", suffix="; use --split"
    )


if __name__ == "__main__":
    sys.exit(main())
