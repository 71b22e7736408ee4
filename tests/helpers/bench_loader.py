"""Does the loader keep a trainer fed? Batch build time vs an MF-BPR step, and the data-wait share
with the background prefetcher.

    OMP_NUM_THREADS=1 python -m tests.helpers.bench_loader --bundle DIR [--batch 2048 --world 2]

Simulates rank 0 of ``--world`` ranks (the loader work of one rank does not depend on the others).
The step is an unsharded TorchRec EmbeddingBagCollection (user and item tables, D = 64) forward,
BPR loss, backward and SGD: cheaper than a sharded 2-rank step (no all-to-all), so the measured
wait share is an upper bound for a real run. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from distrec.data.interactions import InteractionData


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--batch", type=int, default=2048, help="global batch")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--negatives", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="0 = thread prefetcher")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = InteractionData(
        a.bundle, 0, a.world, batch_size=a.batch, num_negatives=a.negatives, prefetch=0
    )
    setup_s = time.perf_counter() - t0
    m = data.bundle.manifest
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name="user", embedding_dim=a.dim, num_embeddings=m.num_users, feature_names=["user"]
            ),
            EmbeddingBagConfig(
                name="item",
                embedding_dim=a.dim,
                num_embeddings=m.num_items,
                feature_names=["pos", "neg"],
            ),
        ]
    )
    opt = torch.optim.SGD(ebc.parameters(), lr=0.05)

    def step(batch) -> None:  # noqa: ANN001
        kt = ebc(batch.sparse["ebc"])
        u, p, n = kt["user"], kt["pos"], kt["neg"] / a.negatives
        loss = -torch.nn.functional.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    steps = min(a.steps, data.num_train_steps(0))
    # 1) batch build alone
    build = []
    for t in range(steps):
        s = time.perf_counter()
        data.build_batch(0, t)
        build.append(time.perf_counter() - s)
    # 2) step alone (batches built beforehand)
    batches = [data.build_batch(1, t) for t in range(steps)]
    step_t = []
    for b in batches:
        s = time.perf_counter()
        step(b)
        step_t.append(time.perf_counter() - s)
    # 3) both together through the prefetcher, as the trainer runs it
    data.prefetch, data.workers = 2, a.workers
    s = time.perf_counter()
    it = data.train_batches(2)
    for _, b in zip(range(steps), it, strict=False):
        step(b)
    it.close()
    total = time.perf_counter() - s
    wait = data.data_wait_seconds
    print(
        json.dumps(
            {
                "bundle": a.bundle,
                "train_rows": data.num_train_rows,
                "global_batch": a.batch,
                "world": a.world,
                "rank_batch": data.stream.rank_batch,
                "negatives": a.negatives,
                "prefetch": "process" if a.workers else "thread",
                "steps": steps,
                "setup_s": round(setup_s, 3),
                "build_ms_p50": round(1000 * statistics.median(build), 2),
                "build_ms_p95": round(1000 * sorted(build)[int(0.95 * (len(build) - 1))], 2),
                "step_ms_p50": round(1000 * statistics.median(step_t), 2),
                "pipelined_ms_per_step": round(1000 * total / steps, 2),
                "data_wait_share": round(wait / total, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
