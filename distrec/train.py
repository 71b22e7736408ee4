"""``torchrun --nproc_per_node=N -m distrec.train <model> --config FILE [--resume] [key=value ...]``.

Sets up the process group (nccl with CUDA, else gloo), builds the sharded model from the registry,
trains with validation, early stopping and checkpoints, then evaluates the best checkpoint on test.
Outputs go to ``run.dir``: config.yaml, logs/rank<r>.log, checkpoints/, train_log.jsonl,
metrics.json.
"""

from __future__ import annotations

import argparse
import os
import sys

from distrec.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m distrec.train",
        description="Train a distrec model (launch with torchrun for several ranks).",
    )
    p.add_argument("model", help="model name (see distrec.models.registry.MODELS)")
    p.add_argument("--config", help="YAML config, e.g. configs/mf/ml-100k.yaml")
    p.add_argument(
        "--resume", action="store_true", help="continue from <run.dir>/checkpoints/latest"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=0.01")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    overrides = list(args.overrides) + (["run.resume=true"] if args.resume else [])
    from distrec.cli import run_guarded
    from distrec.config import load_config
    from distrec.engine.loop import Trainer
    from distrec.engine.session import build_session
    from distrec.models.registry import UnknownModelError

    try:
        cfg = load_config(args.model, args.config, overrides)
    except (ConfigError, UnknownModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # no local holds the session here: destroy_distributed needs the last reference to the
    # process group gone (see its docstring)
    return run_guarded(lambda: Trainer(build_session(args.model, cfg)).fit(), (ConfigError,))


if __name__ == "__main__":
    sys.exit(main())
