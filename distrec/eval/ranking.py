"""Full-ranking (or fixed-candidate) evaluation computed on all ranks at once.

Per evaluation step (one query batch per rank):

1. every rank computes its queries' representations, and they are all-gathered ([B_all, ...]);
2. every rank scores all B_all queries against its own slice of the item table (N_r = items in
   [lo_r, hi_r)) one chunk of items at a time (:mod:`distrec.eval.chunked`: [B_all, chunk]
   blocks, a running top-K merge), masking each query's excluded items (and, for sampled
   protocols, every item outside its candidate list; a model whose candidate score depends on
   the candidate, ``target_aware_candidates``, is scored through ``score_candidates`` on its
   candidates only);
3. the local top-K lists are all-gathered and merged (K * world values per query), so no rank
   ever holds the whole item table or the whole score matrix;
4. AUC, only with ``with_auc``: target scores are summed over ranks (each target lives in one
   slice), each rank counts its slice's negatives below / tied with each target in a second
   chunked pass, and the counts are summed.

Each rank then computes metrics for its own queries; sums are all-reduced at the end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from distrec.eval.chunked import (
    ScoreFn,
    chunked_auc_counts,
    chunked_target_scores,
    chunked_topk,
    multi_interest_scores,
)
from distrec.eval.collectives import (
    all_gather_pairs,
    all_gather_rows,
    all_gather_same,
    all_reduce_sum,
    lists_to_pairs,
)
from distrec.metrics.ranking import metric_names, ranking_metrics
from distrec.models.api import EvalQuery, RecModel, TaskData


def item_slice(num_items: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous item range [lo, hi) scored by ``rank``: ceil(N / world) items per rank."""
    per = math.ceil(num_items / world)
    lo = min(rank * per, num_items)
    return lo, min(lo + per, num_items)


@dataclass
class EvalResult:
    """Averaged metrics over all ranks' queries, plus this rank's top-K lists when collected."""

    metrics: dict[str, float]
    num_queries: int
    ids: list[np.ndarray] = field(default_factory=list)  # [b] query ids per step
    items: list[np.ndarray] = field(default_factory=list)  # [b, K] item idx, -1 = none
    scores: list[np.ndarray] = field(default_factory=list)  # [b, K]


@torch.no_grad()
def compute_item_reps(
    model: RecModel, data: TaskData, lo: int, hi: int, chunk: int, num_items: int, world: int
) -> torch.Tensor:
    """Item reps of [lo, hi) [N_r, ...], in chunks written into one preallocated tensor (no
    list-then-concatenate copy: at 10^7 items the slice is the largest thing a rank holds);
    every rank makes the same number of calls (sharded lookups are collectives) and a rank with
    nothing left looks up one dummy item."""
    local = getattr(model, "local_item_rows", None)
    if local is not None:
        # reps that are the table's own rows, held locally: a view instead of a copy (at 10^7
        # items the copy would double the rank's memory)
        rows = local(lo, hi)
        if rows is not None:
            return rows
    per = math.ceil(num_items / world)
    steps = max(1, math.ceil(per / chunk))
    device = _model_device(model)
    out: torch.Tensor | None = None
    for s in range(steps):
        a, b = lo + s * chunk, min(lo + (s + 1) * chunk, hi)
        ids = torch.arange(a, b) if a < b else torch.zeros(1, dtype=torch.int64)
        r = model.item_reps(data.item_batch(ids).to(device))
        if out is None:
            out = r.new_empty((max(hi - lo, 0), *r.shape[1:]))
        if a < b:
            out[a - lo : b - lo] = r
    assert out is not None
    return out


def _model_device(model: RecModel) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device.type != "meta":
            return t.device
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


@torch.no_grad()
def evaluate_split(
    model: RecModel,
    data: TaskData,
    split: str,
    *,
    num_items: int,
    ks: Sequence[int],
    task: str = "user",
    item_chunk: int = 4096,
    collect_topk: bool = False,
    export_k: int | None = None,
    progress: Iterator[None] | None = None,
    with_auc: bool = True,
    score_chunk: int | None = None,
    queries: Iterable[EvalQuery] | None = None,
) -> EvalResult:
    """Evaluate ``model`` (its sharded submodules in place) on ``split`` over all ranks.

    Must be called on every rank. ``export_k`` widens the kept list for export (default max(ks)).
    ``item_chunk``: items per representation lookup; ``score_chunk``: items per scored block
    (default: about 2^24 / queries); ``with_auc=False`` skips AUC (a second chunked pass) and
    leaves it out of the metrics. ``queries`` replaces ``data.eval_queries(split, task)`` (e.g.
    ``data.queries_for(ids)`` for recommend: ranking only, the metrics then count no query).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    was_training = model.training
    model.eval()
    model.prepare_eval()
    lo, hi = item_slice(num_items, rank, world)
    items = compute_item_reps(model, data, lo, hi, item_chunk, num_items, world)  # [N_r, D]
    kmax = max(max(ks), export_k or 0)
    names = metric_names(ks, with_auc=with_auc)
    sums = torch.zeros(len(names), dtype=torch.float64)
    count = torch.zeros(1, dtype=torch.float64)
    out = EvalResult(metrics={}, num_queries=0)
    for q in data.eval_queries(split, task) if queries is None else queries:
        top_items, top_scores, auc = _score_step(
            model, q, items, lo, hi, kmax, task, with_auc, score_chunk
        )
        b = len(q.targets)
        per_query = ranking_metrics(top_items, q.targets, ks)
        for j, n in enumerate(metric_names(ks, with_auc=False)):
            sums[j] += float(per_query[n].sum())
        has_t = [len(t) > 0 for t in q.targets]
        if with_auc and b:
            sums[-1] += float(auc[np.array(has_t, dtype=bool)].sum())
        count += sum(has_t)
        if collect_topk and b:
            out.ids.append(q.ids.cpu().numpy().astype(np.int64))
            out.items.append(top_items)
            out.scores.append(top_scores)
        if progress is not None:
            next(progress, None)
    all_reduce_sum(sums)
    all_reduce_sum(count)
    nq = int(count.item())
    out.metrics = {k: (float(v) / nq if nq else 0.0) for k, v in zip(names, sums.tolist())}
    out.num_queries = nq
    if was_training:
        model.train()
    return out


def _score_step(
    model: RecModel,
    q: EvalQuery,
    items: torch.Tensor,
    lo: int,
    hi: int,
    kmax: int,
    task: str,
    with_auc: bool = True,
    score_chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One evaluation step; returns this rank's queries' merged top-K items [b, K], their scores
    and per-query AUC [b] (zeros without ``with_auc``)."""
    world = dist.get_world_size()
    rank = dist.get_rank()
    qrep = model.query(q.batch.to(items.device), task)  # [b, ...]
    b = len(q.targets)
    all_q, sizes = all_gather_rows(qrep[:b].float().cpu())
    off = sum(sizes[:rank])
    n_all, n_r = all_q.shape[0], hi - lo
    excl = all_gather_pairs(q.exclude, off)
    tgt = all_gather_pairs(q.targets, off)
    has_cand = torch.tensor([1 if q.candidates is not None else 0])
    all_reduce_sum(has_cand)
    cand = None
    if int(has_cand.item()):
        cand = all_gather_pairs(q.candidates or [[] for _ in range(b)], off)
    include = None if cand is None else torch.cat([cand, tgt])
    q_dev = all_q.to(items.device)
    if n_r > 0 and cand is not None and getattr(model, "target_aware_candidates", False):
        # sampled protocol, candidate-dependent scores: [B_all, N_r] with -inf off the candidates
        full = _candidate_scores(model, q_dev, items, cand, tgt, lo, hi, task)

        def score_fn(offset: int, reps: torch.Tensor) -> torch.Tensor:
            return full[:, offset - lo : offset - lo + reps.shape[0]]
    else:

        def score_fn(offset: int, reps: torch.Tensor) -> torch.Tensor:
            return model.score(q_dev, reps.float(), task)

    vals, idx = chunked_topk(
        score_fn, items, lo, n_all, kmax, chunk=score_chunk, exclude=excl, include=include
    )
    if world > 1:
        gv, gi = all_gather_same(vals), all_gather_same(idx)
        vals, idx = torch.cat(gv, dim=1), torch.cat(gi, dim=1)  # [B_all, K * world]
        # rank order = ascending item ranges, so a stable sort keeps ties in item-id order
        v, pos = vals.sort(dim=1, descending=True, stable=True)
        vals, idx = v[:, :kmax], idx.gather(1, pos[:, :kmax])
    idx[torch.isneginf(vals)] = -1
    mine = slice(off, off + b)
    if with_auc:
        auc = _auc(score_fn, items, lo, tgt, excl, include, n_all, score_chunk)[mine]
    else:
        auc = np.zeros(b)
    return idx[mine].numpy(), vals[mine].numpy(), auc


def _candidate_scores(
    model: RecModel,
    all_q: torch.Tensor,
    items: torch.Tensor,
    cand: torch.Tensor,
    tgt: torch.Tensor,
    lo: int,
    hi: int,
    task: str,
) -> torch.Tensor:
    """Scores [B_all, N_r] from ``model.score_candidates`` on each query's own candidates and
    targets that lie in [lo, hi); every other entry is -inf (it is masked out of the ranking
    anyway). For models whose candidate score depends on the candidate (target-aware MDGR),
    scoring the whole slice with ``score`` would be a different model."""
    n_all, n_r = all_q.shape[0], hi - lo
    scores = torch.full((n_all, n_r), float("-inf"))
    pairs = torch.cat([cand, tgt])
    pairs = pairs[(pairs[:, 1] >= lo) & (pairs[:, 1] < hi)]
    if pairs.numel() == 0:
        return scores
    pairs = torch.unique(pairs, dim=0)  # sorted by row, then item
    rows, cols = pairs[:, 0], pairs[:, 1] - lo
    counts = torch.bincount(rows, minlength=n_all)
    width = int(counts.max())
    # position of each pair inside its row's padded candidate list
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(rows)) - starts[rows]
    local = torch.zeros((n_all, width), dtype=torch.int64)  # padding scores item lo, discarded
    local[rows, pos] = cols
    cand_reps = items.float()[local.to(items.device)]  # [B_all, C, ...]
    s = model.score_candidates(all_q, cand_reps, task).float().cpu()  # [B_all, C]
    scores[rows, cols] = s[rows, pos]
    return scores


def _auc(
    score_fn: ScoreFn,
    items: torch.Tensor,
    lo: int,
    tgt: torch.Tensor,
    excl: torch.Tensor,
    include: torch.Tensor | None,
    n_all: int,
    chunk: int | None,
) -> np.ndarray:
    """Per-query AUC [B_all] (0 where a query has no target) from all ranks' slices: target
    scores summed over ranks (each target lives in one slice), then each rank's counts of
    negatives below / tied with each target, summed."""
    p = tgt.shape[0]
    tscore = chunked_target_scores(score_fn, items, lo, tgt)
    all_reduce_sum(tscore)
    counts = chunked_auc_counts(
        score_fn, items, lo, tgt, tscore, chunk=chunk, exclude=excl, include=include
    )
    all_reduce_sum(counts)
    pair_auc = (counts[:, 0] + 0.5 * counts[:, 1]) / counts[:, 2].clamp(min=1)
    auc_sum = torch.zeros(n_all, dtype=torch.float64)
    n_t = torch.zeros(n_all, dtype=torch.float64)
    if p:
        auc_sum.index_add_(0, tgt[:, 0], pair_auc)
        n_t.index_add_(0, tgt[:, 0], torch.ones(p, dtype=torch.float64))
    return (auc_sum / n_t.clamp(min=1)).numpy()


__all__ = [
    "EvalResult",
    "ScoreFn",
    "chunked_topk",
    "compute_item_reps",
    "evaluate_split",
    "item_slice",
    "lists_to_pairs",
    "multi_interest_scores",
]
