"""Hyper-parameter sweeps through the engine: one config, a grid or list of overrides, one JSON line
per run.

Every point is a whole engine run (:class:`~distrec.engine.loop.Trainer` on a fresh
:class:`~distrec.engine.session.Session`) in this process, one after the other, in its own
``run.dir`` (``<root>/<index>``), so its checkpoints and logs stay inspectable; under torchrun
all ranks run every point together. Rank 0 appends to the output file, per run::

    {"index": 3, "overrides": {"train.lr": 0.01, "model.tau": 0.5}, "run_dir": "...",
     "wall_s": 41.2, "select_metric": "ndcg@10", "best_valid": 0.31, "best_step": 120,
     "epochs_done": 20, "valid": {...metrics at the best step...}, "test": {...}}

A point whose overrides already have a line in the output file is skipped, so a killed sweep
continues where it stopped when run again.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import yaml

from distrec.config import Config, ConfigError, load_config, parse_overrides


def grid_points(grid: list[str]) -> list[dict[str, Any]]:
    """``["train.lr=0.1,0.01", "model.tau=0.5"]`` -> the cartesian product as override dicts
    (values parsed as YAML scalars; a list value is written ``key=[1,2];[3]``, ``;``-separated)."""
    axes: list[list[tuple[str, Any]]] = []
    for key, raw in parse_overrides(grid):
        sep = ";" if raw.strip().startswith("[") else ","
        values = [yaml.safe_load(v) for v in raw.split(sep) if v.strip() != ""]
        if not values:
            raise ConfigError(f"--grid {key}=: no values")
        axes.append([(key, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def list_points(path: str) -> list[dict[str, Any]]:
    """Points from a YAML/JSON file holding a list of ``{key: value}`` mappings."""
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"--points {path} does not exist") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"--points {path}: not valid YAML/JSON: {e}") from e
    if not isinstance(loaded, list) or not all(isinstance(p, dict) for p in loaded):
        raise ConfigError(f"--points {path}: expected a list of {{key: value}} mappings")
    return [{str(k): v for k, v in p.items()} for p in loaded]


def _as_override(key: str, value: Any) -> str:
    # JSON is valid YAML flow style, so lists and strings survive the config's YAML parsing
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def _key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True)


def done_points(out: Path) -> set[str]:
    """Override sets that already have a line in ``out``."""
    if not out.exists():
        return set()
    return {_key(json.loads(ln)["overrides"]) for ln in out.read_text().splitlines() if ln.strip()}


def configs(
    model: str, config: str | None, base: list[str], points: list[dict[str, Any]], root: str
) -> list[Config]:
    """Every point's resolved config (all checked before the first run starts)."""
    out = []
    for i, p in enumerate(points):
        overrides = base + [_as_override(k, v) for k, v in p.items()] + [f"run.dir={root}/{i}"]
        try:
            out.append(load_config(model, config, overrides))
        except ConfigError as e:
            raise ConfigError(f"point {i} {_key(p)}: {e}") from e
    return out


def run_sweep(
    model: str,
    config: str | None,
    points: list[dict[str, Any]],
    *,
    base: list[str],
    root: str,
    out: str,
) -> list[dict[str, Any]]:
    """Run every point not yet in ``out``; returns the lines written by this call."""
    from distrec.engine.loop import Trainer
    from distrec.engine.session import build_session

    cfgs = configs(model, config, base, points, root)
    out_path = Path(out)
    seen = done_points(out_path)
    lines = []
    for i, (p, cfg) in enumerate(zip(points, cfgs)):
        if _key(p) in seen:
            continue
        t0 = time.perf_counter()
        trainer = Trainer(build_session(model, cfg))
        res = trainer.fit()
        wall = time.perf_counter() - t0
        is_main = trainer.s.env.is_main
        del trainer  # the session holds the sharded model; free it before the next point
        best: dict[str, float] = next(
            (h["valid"] for h in res["valid"] if h["step"] == res["best_step"]), {}
        )
        line = {
            "index": i,
            "overrides": p,
            "run_dir": cfg.run.dir,
            "wall_s": round(wall, 2),
            "select_metric": res["select_metric"],
            "best_valid": res["best_valid"],
            "best_step": res["best_step"],
            "epochs_done": res["epochs_done"],
            "valid": best,
            "test": res.get("test", {}),
        }
        if is_main:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            with open(out_path, "a") as f:
                f.write(json.dumps(line) + "\n")
        lines.append(line)
    return lines
