"""Time the sparse-dense product of one propagation layer, forward and backward, per kernel.

Kernels (A [n, m] with E edges, h [m, D] requiring grad, loss = sum(A @ h * g)):

* ``coo``: ``torch.sparse.mm`` on a coalesced COO (autograd transposes A every backward);
* ``csr``: distrec.graph.halo.SparseRows (CSR forward, cached CSR of A^T in backward);
* ``csr_autograd``: ``a_csr @ h`` with torch's own backward;
* ``index_add``: gather ``h[cols] * w`` [E, D] and ``index_add_`` into the rows (segment sum).

Usage: python bench/propagate_kernels.py [--rows N] [--cols M] [--edges E] [--dim D]
    [--repeat R] [--device cpu|cuda] [--out bench/results/propagate_kernels.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import torch

from distrec.graph.halo import SparseRows


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def kernels(
    rows: np.ndarray, cols: np.ndarray, w: np.ndarray, shape: tuple[int, int], device: str
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    csr = SparseRows.build(rows, cols, w, shape, device, "csr")
    coo = SparseRows.build(rows, cols, w, shape, device, "coo")
    a_csr = csr.a
    r = torch.from_numpy(rows).to(device)
    c = torch.from_numpy(cols).to(device)
    wt = torch.from_numpy(w).to(device).unsqueeze(1)

    def index_add(h: torch.Tensor) -> torch.Tensor:
        return h.new_zeros(shape[0], h.shape[1]).index_add(0, r, h.index_select(0, c) * wt)

    return {
        "coo": coo.mm,
        "csr": csr.mm,
        "csr_autograd": lambda h: a_csr @ h,
        "index_add": index_add,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--cols", type=int, default=50_000)
    p.add_argument("--edges", type=int, default=2_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="bench/results/propagate_kernels.json")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, a.rows, a.edges)
    cols = (rng.zipf(1.3, a.edges) - 1) % a.cols  # skewed item popularity, as in real data
    key = np.unique(rows * a.cols + cols)
    rows, cols = key // a.cols, key % a.cols
    w = rng.random(len(rows)).astype(np.float32)
    ks = kernels(rows, cols, w, (a.rows, a.cols), a.device)
    h = torch.randn(a.cols, a.dim, device=a.device, requires_grad=True)
    g = torch.randn(a.rows, a.dim, device=a.device)
    results: dict[str, dict[str, float]] = {}
    ref_y: torch.Tensor | None = None
    ref_g: torch.Tensor | None = None
    for name, fn in ks.items():
        fwd, bwd = [], []
        for _ in range(a.repeat + 1):
            h.grad = None
            _sync(a.device)
            t0 = time.perf_counter()
            y = fn(h)
            _sync(a.device)
            t1 = time.perf_counter()
            (y * g).sum().backward()
            _sync(a.device)
            t2 = time.perf_counter()
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
        assert h.grad is not None
        if ref_y is None or ref_g is None:
            ref_y, ref_g = y.detach(), h.grad.clone()
        err = max(float((y.detach() - ref_y).abs().max()), float((h.grad - ref_g).abs().max()))
        results[name] = {
            "forward_ms_p50": 1e3 * statistics.median(fwd[1:]),
            "backward_ms_p50": 1e3 * statistics.median(bwd[1:]),
            "total_ms_p50": 1e3 * statistics.median([f + b for f, b in zip(fwd[1:], bwd[1:])]),
            "max_abs_diff_vs_coo": err,
        }
        print(name, {k: round(v, 2) for k, v in results[name].items()}, flush=True)
    best = min(results, key=lambda k: results[k]["total_ms_p50"])
    out = {
        "command": " ".join([sys.executable, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()} "
        f"{os.cpu_count()} cpus",
        "device": a.device if a.device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],
        "torch": torch.__version__,
        "rows": a.rows,
        "cols": a.cols,
        "edges": int(len(rows)),
        "dim": a.dim,
        "repeat": a.repeat,
        "kernels": results,
        "fastest": best,
    }
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
    print("fastest:", best, "->", a.out)


if __name__ == "__main__":
    main()
