"""``python -m distrec.recommend --run DIR --split test --k K --out FILE.parquet``.

Top-K lists of the best checkpoint for the users of ``split`` (their training positives excluded,
as in evaluation), with raw ids as in the input data: columns user, rank (1..K), item, score.
Works under torchrun (each rank scores its item slice) and as plain python.
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distrec.recommend", description=__doc__)
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="run directory")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--task", default="user")
    p.add_argument("overrides", nargs="*")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from distrec.distributed.env import destroy_distributed
    from distrec.engine.runs import export_topk
    from distrec.evaluate import load_for_eval

    if args.k <= 0:
        print("error: --k must be positive", file=sys.stderr)
        return 2

    def export() -> None:  # the session dies with this frame, before destroy_distributed
        s = load_for_eval(args.run, args.checkpoint, list(args.overrides))
        n = export_topk(s, args.split, args.k, args.out, task=args.task)
        if s.env.is_main:
            print(f"wrote {n} rows to {args.out}", file=sys.stderr)

    try:
        export()
    finally:
        destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
