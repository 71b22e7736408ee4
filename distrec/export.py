"""``python -m distrec.export --run-dir RUN --what users|items|groups|interests --out DIR``.

Writes the vectors of the run's best checkpoint as Parquet, one ``part-<rank>.parquet`` per rank
(columns raw_id, [interest,] vector), then ``_manifest.json`` and ``_SUCCESS``. Runs under
torchrun (each rank exports its share) or as plain python. Logic: :mod:`distrec.engine.export`.
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distrec.export", description=__doc__)
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="run directory")
    p.add_argument("--what", required=True, choices=["users", "items", "groups", "interests"])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--checkpoint", default="best", help="best | latest | step-<n>")
    p.add_argument(
        "--split",
        default="test",
        choices=["valid", "test"],
        help="sequence models only: whose query rows (histories) give the user vectors",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from distrec.cli import run_guarded
    from distrec.engine.export import ExportError, export_vectors
    from distrec.evaluate import load_for_eval

    def export() -> None:  # the session dies with this frame, before destroy_distributed
        s = load_for_eval(args.run, args.checkpoint, list(args.overrides))
        n = export_vectors(s, args.what, args.out, split=args.split, checkpoint=args.checkpoint)
        if s.env.is_main:
            print(f"wrote {n} rows of {args.what} to {args.out}", file=sys.stderr)

    return run_guarded(export, (ExportError,))


if __name__ == "__main__":
    sys.exit(main())
