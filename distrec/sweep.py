"""``python -m distrec.sweep <model> --config FILE [--grid k=v1,v2 ...] [--points FILE] --out F.jsonl``.

Runs the engine once per point of a grid (``--grid``, cartesian product) or a list (``--points``,
a YAML/JSON list of ``{key: value}`` mappings; with both, each listed point crosses the grid) over
one config and the shared ``key=value`` overrides, and appends one JSON line per run to ``--out``
(overrides, best validation and test metrics, wall time). Run dirs: ``<--root>/<index>``. Works
without torchrun (one process) and under torchrun (every rank runs every point). Example::

    python -m distrec.sweep igrec --config configs/igrec/mafengwo.yaml --out runs/igrec.jsonl \\
        --grid train.lr=0.01,0.001 --grid model.tau=0.5,1.0 train.epochs=60
"""

from __future__ import annotations

import argparse
import os
import sys

from distrec.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distrec.sweep", description=__doc__.split("\n")[0])
    p.add_argument("model", help="model name (see distrec.models.registry.MODELS)")
    p.add_argument("--config", help="YAML config shared by every point")
    p.add_argument("--grid", action="append", default=[], help="key=v1,v2 (repeatable)")
    p.add_argument("--points", help="YAML/JSON list of {key: value} override mappings")
    p.add_argument("--out", required=True, help="JSON lines file, appended to")
    p.add_argument("--root", default="", help="parent of the run dirs (default: <out>.runs)")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every point")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_intermixed_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from distrec.cli import run_guarded
    from distrec.engine.sweep import grid_points, list_points, run_sweep
    from distrec.models.registry import UnknownModelError

    def sweep() -> None:
        grid = grid_points(a.grid)
        listed = list_points(a.points) if a.points else [{}]
        points = [{**p, **g} for p in listed for g in grid]
        run_sweep(
            a.model, a.config, points, base=a.overrides, root=a.root or f"{a.out}.runs", out=a.out
        )

    return run_guarded(sweep, (ConfigError, UnknownModelError))


if __name__ == "__main__":
    sys.exit(main())
