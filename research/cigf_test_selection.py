"""How much does picking the checkpoint on the test split itself add? (CIGF's JD gap, item 2.)

    python -m research.cigf_test_selection --out docs/results/cigf_jd_test_selection.json RUN [RUN ...]

Each RUN is a training run that kept every evaluation's checkpoint (``run.keep_checkpoints``
larger than the number of evaluations) and whose checkpoints were all scored on test:

    python -m distrec.evaluate --run RUN --split test --checkpoint step-N > RUN/test_step-N.json

Per run it reports the test metrics at the checkpoint chosen on validation (``--select``, the
engine's protocol), and at the checkpoint that is best on test itself (what a script reports
when it early-stops on the file it prints, as VCGAE's ``--tst_file`` does), plus the mean over
runs of both and of their difference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def one_run(run: Path, select: str, metrics: list[str]) -> dict:
    info = json.loads((run / "metrics.json").read_text())
    valid = {e["step"]: e["valid"] for e in info["valid"]}
    test = {
        int(p.stem.split("-")[-1]): json.loads(p.read_text())
        for p in sorted(run.glob("test_step-*.json"))
    }
    missing = sorted(set(valid) - set(test))
    if missing:
        raise SystemExit(f"{run}: no test_step-N.json for evaluation steps {missing}")
    by_valid = max(valid, key=lambda s: valid[s][select])
    by_test = max(test, key=lambda s: test[s][select])
    return {
        "run": str(run),
        "evaluations": len(test),
        "step_by_valid": by_valid,
        "step_by_test": by_test,
        "by_valid": {m: test[by_valid][m] for m in metrics},
        "by_test": {m: test[by_test][m] for m in metrics},
        "test_curve": {s: {m: test[s][m] for m in metrics} for s in sorted(test)},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--select", default="ndcg@10")
    p.add_argument("--metrics", nargs="+", default=["hr@10", "ndcg@10"])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = [one_run(r, args.select, args.metrics) for r in args.runs]
    summary = {}
    for how in ("by_valid", "by_test"):
        for m in args.metrics:
            x = np.array([r[how][m] for r in rows])
            summary[f"{how}.{m}"] = [float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0]
    for m in args.metrics:
        d = np.array([r["by_test"][m] - r["by_valid"][m] for r in rows])
        summary[f"gain.{m}"] = [float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else 0.0]
    out = {"select": args.select, "summary": summary, "runs": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
