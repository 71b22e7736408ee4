"""Where an MDGR training step spends its time (issue #16): forward + backward of the dense part
(encoder, dynamic graph clustering, interest weights, eq. 16-17) on synthetic inputs shaped like
the ml-100k chunks protocol, one process, one thread.

    OMP_NUM_THREADS=1 python -m research.mdgr_profile --batch 64 --steps 5
    OMP_NUM_THREADS=1 python -m research.mdgr_profile --batch 64 --profile --set iterations=5

``--profile``: torch.profiler over the measured steps, the top ops by self CPU time and the
``record_function`` stages. ``--gemm``: the achieved GFLOP/s of the step's big batched products
on their real shapes, beside a large square sgemm (what one core gives). The item table lookup
and the optimizer are left out: they cost the same at any m (the m = 0 step times them).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from distrec.models.mdgr.config import MDGRConfig
from distrec.models.mdgr.model import MDGR


def _inputs(cfg: MDGRConfig, b: int, c: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    length, d = cfg.max_len, cfg.dim
    return {
        "hist": torch.randn(b, length, d, generator=g) * 0.1,
        "mask": torch.ones(b, length, dtype=torch.bool),
        "days": torch.rand(b, length, generator=g).cumsum(1).flip(1) * 10,
        "cands": torch.randn(b, c, d, generator=g) * 0.1,
    }


def dense_loss(model: MDGR, inp: dict[str, torch.Tensor]) -> torch.Tensor:
    """MDGR.forward after the table lookup: the same calls on given embeddings."""
    mask, days, cands = inp["mask"], inp["days"], inp["cands"]
    phi = model._encode(inp["hist"], mask, days)
    labels = torch.zeros(cands.shape[:2])
    labels[:, 0] = 1.0
    packed = torch.cat([phi, days.unsqueeze(-1), mask.float().unsqueeze(-1)], dim=-1)
    if model.cfg.target_aware:
        logits = model.score_candidates(packed, cands)
    else:
        z, w, present = model._logits(phi, mask, days, model._history_mean(phi, mask))
        logits = model._score_items(z, w, present, cands)
    return F.binary_cross_entropy_with_logits(logits, labels)


def build(sets: list[str]) -> MDGR:
    kw: dict[str, object] = {"num_negatives": 1, "dropout": 0.0}
    for s in sets:
        k, _, v = s.partition("=")
        kw[k] = (
            type(getattr(MDGRConfig, k))(v)
            if not isinstance(getattr(MDGRConfig, k), bool)
            else v.lower() in ("1", "true")
        )
    return MDGR(MDGRConfig(**kw), num_items=1682, device=torch.device("cpu"))  # type: ignore[arg-type]


def _gemm(b: int) -> dict[str, float]:
    """GFLOP/s of the clustering's batched products on their shapes, and of one big sgemm."""

    def rate(fn, flops: float, reps: int = 20) -> float:  # type: ignore[no-untyped-def]
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return flops * reps / (time.perf_counter() - t0) / 1e9

    n = 2 * b
    a = torch.randn(n, 50, 128)
    at = a.transpose(1, 2).contiguous()
    att = torch.randn(n, 50, 50)
    x = torch.randn(n, 50, 32)
    big = torch.randn(1024, 1024)
    mat = torch.randn(n, 2, 32, 32)
    xx = torch.randn(n, 50, 32)
    return {
        "sgemm_1024": rate(lambda: big @ big, 2 * 1024**3, 5),
        "gram_bmm_[2B,50,128]x[2B,128,50]": rate(lambda: torch.bmm(a, at), 2 * n * 50 * 50 * 128),
        "att_bmm_[2B,50,50]x[2B,50,32]": rate(lambda: torch.bmm(att, x), 2 * n * 50 * 50 * 32),
        "beta_einsum_[2B,2,32,32]x[2B,50,32]": rate(
            lambda: torch.einsum("nhfd,nld->nhlf", mat, xx), 2 * n * 2 * 50 * 32 * 32
        ),
    }


def _stage_wrappers() -> None:
    """Wrap the clustering's stages in record_function ranges (forward only; the backward ops run
    in the autograd engine, outside any range, and show as 'backward')."""
    from torch.profiler import record_function

    from distrec.models.mdgr import clustering
    from distrec.models.mdgr import model as mdgr_model

    def wrap(mod, name: str) -> None:  # type: ignore[no-untyped-def]
        fn = getattr(mod, name)

        def inner(*a, **k):  # type: ignore[no-untyped-def]
            with record_function(f"stage:{name}"):
                return fn(*a, **k)

        setattr(mod, name, inner)

    for name in ("kmeans", "weighted_cosine", "sparsify_top", "last_in_cluster"):
        wrap(clustering, name)
    wrap(mdgr_model, "kmeans")
    wrap(mdgr_model, "last_in_cluster")
    for cls, name in (
        (clustering.ClusterAttention, "forward"),
        (clustering.ClusterAttention, "prepare"),
        (mdgr_model.MDGR, "_encode"),
        (mdgr_model.InterestWeights, "forward"),
        (mdgr_model.MDGR, "_score_items"),
    ):
        wrap(cls, name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64, help="sequences per rank")
    p.add_argument("--candidates", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--gemm", action="store_true")
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--set", nargs="*", default=[], help="MDGRConfig field=value")
    p.add_argument("--flops", action="store_true", help="matmul FLOPs of one step")
    p.add_argument("--pair-chunk", type=int, default=None, help="MDGR.pair_chunk")
    p.add_argument("--dump", default=None, help="save loss and gradients of one step (torch.save)")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build(args.set)
    if args.pair_chunk:
        model.pair_chunk = args.pair_chunk
    inp = _inputs(model.cfg, args.batch, args.candidates, 0)
    if args.flops:  # matmul FLOPs of one step (forward + backward) by module, from the shapes
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False, depth=3)
        with counter:
            dense_loss(model, inp).backward()
        by_mod = {k: sum(v.values()) / 1e9 for k, v in counter.get_flop_counts().items()}
        print(json.dumps({"matmul_gflop_per_step": counter.get_total_flops() / 1e9, "by": by_mod}))
        return
    if args.dump:  # old tree vs new tree: same loss and gradients (compare the two files)
        loss = dense_loss(model, inp)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"loss": loss.detach(), "grads": grads}, args.dump)
        return

    def step() -> None:
        model.zero_grad(set_to_none=True)
        dense_loss(model, inp).backward()

    for _ in range(args.warmup):
        step()
    times, cpu = [], []
    prof = None
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        _stage_wrappers()
        prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
        prof.__enter__()
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if prof is not None:
        prof.__exit__(None, None, None)
        ev = prof.key_averages()
        print(ev.table(sort_by="self_cpu_time_total", row_limit=args.rows))
        stages = {
            e.key: e.cpu_time_total / 1000 / args.steps for e in ev if e.key.startswith("stage:")
        }
        bwd = sum(e.self_cpu_time_total for e in ev if e.key.startswith("autograd::engine"))
        print("forward stages, ms per step (inclusive):", json.dumps(stages, indent=1))
        print("autograd engine, ms per step (self):", bwd / 1000 / args.steps)
        print(
            prof.key_averages(group_by_input_shape=True).table(
                sort_by="self_cpu_time_total", row_limit=args.rows
            )
        )
    times.sort()
    cpu.sort()
    res = {
        "batch": args.batch,
        "set": args.set,
        "pair_chunk": getattr(model, "pair_chunk", None),
        "step_ms_median": 1000 * times[len(times) // 2],
        "step_ms_min": 1000 * times[0],
        "step_cpu_ms_median": 1000 * cpu[len(cpu) // 2],
        "samples_per_s_1proc": args.batch / times[len(times) // 2],
    }
    if args.gemm:
        res["gflops"] = _gemm(args.batch)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
