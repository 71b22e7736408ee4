"""``python -m distrec.evaluate --run DIR --split valid|test [key=value ...]``: metrics as JSON.

Loads the run's resolved config and its ``best`` checkpoint; runs under torchrun with N ranks
(the item table is sharded, each rank scores its slice) or as plain python (world of one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distrec.evaluate", description=__doc__)
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        required=True,
        help="run directory (run.dir of a training run); use --run-dir under torchrun",
    )
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--checkpoint", default="best", help="best | latest | step-<n>")
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. eval.ks=[10,20])")
    return p


def load_for_eval(run: str, checkpoint: str, overrides: list[str]):  # noqa: ANN201
    """Session of ``run`` with weights from ``checkpoint``; metrics and config writing off."""
    from pathlib import Path

    from distrec.distributed.checkpoint import checkpoint_root, load_checkpoint, read_pointer
    from distrec.engine.session import build_session, load_run_config

    cfg = load_run_config(run, overrides + ["metrics.enabled=false"])
    s = build_session(cfg.model_name, cfg, write_config=False, with_optimizer=False)
    if checkpoint in ("best", "latest"):
        path = read_pointer(run, checkpoint)
    else:
        path = checkpoint_root(run) / checkpoint
    if path is None or not Path(path).exists():
        raise SystemExit(f"{run}: no checkpoint {checkpoint!r} (train the run first)")
    load_checkpoint(path, s.wrapped, None)
    return s


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from distrec.cli import run_guarded
    from distrec.config import ConfigError
    from distrec.engine.runs import run_eval

    def evaluate() -> None:  # the session dies with this frame, before destroy_distributed
        s = load_for_eval(args.run, args.checkpoint, list(args.overrides))
        res = run_eval(s, args.split)
        if s.env.is_main:
            print(json.dumps({"run": args.run, "split": args.split, **res}, indent=2))

    return run_guarded(evaluate, (ConfigError,))


if __name__ == "__main__":
    sys.exit(main())
