"""Item-chunked full-catalogue scoring: a running top-K and chunked AUC counts.

A rank scores its queries against its own item slice ``reps`` (global ids ``offset ..
offset + len(reps)``) one chunk of items at a time, so the largest score block is
[queries x chunk], never [queries x items] (nor [queries x interests x items]: see
:func:`multi_interest_scores`). ``score_fn(offset, reps_chunk) -> [Q, n]`` is the only thing a
model supplies; any sharded or graph model that can score a contiguous item slice can use it.

Ties are broken to the lower item id everywhere (as a full stable sort would), so lists are
the same whatever the chunk size or the number of ranks the items are split over.

Shapes: Q queries, n items of a chunk, K kept, P (query row, global item id) pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ScoreFn = Callable[[int, torch.Tensor], torch.Tensor]


def default_chunk(num_queries: int, budget: int = 1 << 24) -> int:
    """Items per chunk so that one [Q, chunk] float block stays near ``budget`` entries
    (64 MB in float32)."""
    return max(1024, budget // max(1, num_queries))


def multi_interest_scores(query: torch.Tensor, items: torch.Tensor, reduce: str) -> torch.Tensor:
    """Scores [Q, n] of multi-interest queries [Q, F, D] against items [n, D].

    ``sum``: ``sum_f q_f . e`` = ``(sum_f q_f) . e``, one matmul. ``max``: a running maximum over
    the F interests, so the [Q, F, n] block is never built (peak 2 x [Q, n]).
    """
    if query.dim() == 2:
        return query @ items.T
    if reduce == "sum":
        return query.sum(1) @ items.T
    if reduce != "max":
        raise ValueError(f"reduce must be sum or max, not {reduce!r}")
    out = query[:, 0] @ items.T
    for f in range(1, query.shape[1]):
        if out.requires_grad:  # autograd: no in-place update
            out = torch.maximum(out, query[:, f] @ items.T)
        else:
            torch.maximum(out, query[:, f] @ items.T, out=out)
    return out


def _pairs_in(pairs: torch.Tensor | None, a: int, b: int) -> torch.Tensor | None:
    """Pairs whose item lies in [a, b), with the item made chunk-local; ``pairs`` must be
    sorted by item (see :func:`sort_pairs`)."""
    if pairs is None or pairs.numel() == 0:
        return None
    col = pairs[:, 1].contiguous()
    lo = int(torch.searchsorted(col, a))
    hi = int(torch.searchsorted(col, b))
    if hi <= lo:
        return None
    p = pairs[lo:hi].clone()
    p[:, 1] -= a
    return p


def sort_pairs(pairs: torch.Tensor | None) -> torch.Tensor | None:
    """(row, item) pairs [P, 2] ordered by item, as the chunked functions expect."""
    if pairs is None or pairs.numel() == 0:
        return None
    return pairs[torch.argsort(pairs[:, 1], stable=True)]


def masked_chunk_scores(
    score_fn: ScoreFn,
    reps: torch.Tensor,
    offset: int,
    a: int,
    b: int,
    exclude: torch.Tensor | None,
    include: torch.Tensor | None,
) -> torch.Tensor:
    """Scores [Q, b - a] of the slice items [a, b) (slice-local), float32 on the CPU, with
    excluded pairs and (when ``include`` is given) every non-included item at -inf.
    ``exclude``/``include`` hold *global* item ids, sorted by item."""
    s = score_fn(offset + a, reps[a:b]).float().cpu()
    if include is not None:
        keep = torch.zeros_like(s, dtype=torch.bool)
        p = _pairs_in(include, offset + a, offset + b)
        if p is not None:
            keep[p[:, 0], p[:, 1]] = True
        s = s.masked_fill(~keep, float("-inf"))
    p = _pairs_in(exclude, offset + a, offset + b)
    if p is not None:
        s[p[:, 0], p[:, 1]] = float("-inf")
    return s


def _order_desc_id_asc(v: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ordered by value descending, ties by id ascending."""
    by_id = torch.argsort(i, dim=1, stable=True)
    v, i = v.gather(1, by_id), i.gather(1, by_id)
    by_v = torch.argsort(v, dim=1, descending=True, stable=True)
    return v.gather(1, by_v), i.gather(1, by_v)


def chunk_topk(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of every row of ``s`` [Q, n] with ties to the lower column, sorted
    (value desc, column asc): [Q, k'] values and columns, k' = min(k, n).

    ``torch.topk`` picks arbitrarily among values equal to the k-th one; rows where such a tie
    straddles the cut are recomputed exactly (only those rows, O(n) each)."""
    k = min(k, s.shape[1])
    v, i = torch.topk(s, k, dim=1)
    if k == 0:
        return v, i
    kth = v[:, -1:]
    cut_tie = ((s == kth).sum(1) > (v == kth).sum(1)) & torch.isfinite(kth.squeeze(1))
    rows = torch.nonzero(cut_tie).squeeze(1)
    for r in rows.tolist():
        row, t = s[r], kth[r, 0]
        gt = row > t
        eq = row == t
        need = k - int(gt.sum())
        take = gt | (eq & (torch.cumsum(eq.to(torch.int64), 0) <= need))
        cols = torch.nonzero(take).squeeze(1)  # ascending column
        v[r], i[r] = row[cols], cols
    return _order_desc_id_asc(v, i)


def chunked_topk(
    score_fn: ScoreFn,
    reps: torch.Tensor,
    offset: int,
    num_queries: int,
    k: int,
    *,
    chunk: int | None = None,
    exclude: torch.Tensor | None = None,
    include: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-``k`` over the item slice ``reps`` [N_r, ...] (global ids start at
    ``offset``), ``chunk`` items at a time.

    Args:
        score_fn: ``(global offset of the chunk, reps[a:b]) -> [Q, b - a]`` scores.
        exclude: (query row, global item) pairs [P, 2] never ranked (e.g. training items).
        include: when given, only these pairs are ranked (sampled-candidate protocols).

    Returns:
        values [Q, k] float32 (-inf where fewer than k items are ranked) and global item ids
        [Q, k] int64 (-1 there), ordered by value desc, ties by id asc.
    """
    n_r = reps.shape[0]
    chunk = chunk or default_chunk(num_queries)
    exclude, include = sort_pairs(exclude), sort_pairs(include)
    vals = torch.full((num_queries, 0), float("-inf"))
    idx = torch.zeros((num_queries, 0), dtype=torch.int64)
    for a in range(0, n_r, chunk):
        b = min(a + chunk, n_r)
        s = masked_chunk_scores(score_fn, reps, offset, a, b, exclude, include)
        v, i = chunk_topk(s, k)
        # earlier chunks hold lower ids, and both lists are (value desc, id asc): a stable
        # sort of the concatenation keeps the tie order
        v, pos = torch.cat([vals, v], 1).sort(dim=1, descending=True, stable=True)
        idx = torch.cat([idx, i + offset + a], 1).gather(1, pos[:, :k])
        vals = v[:, :k]
    if vals.shape[1] < k:
        pad = k - vals.shape[1]
        vals = torch.cat([vals, torch.full((num_queries, pad), float("-inf"))], 1)
        idx = torch.cat([idx, torch.full((num_queries, pad), -1, dtype=torch.int64)], 1)
    idx[torch.isneginf(vals)] = -1
    return vals, idx


def chunked_target_scores(
    score_fn: ScoreFn,
    reps: torch.Tensor,
    offset: int,
    targets: torch.Tensor,
    *,
    chunk: int = 4096,
) -> torch.Tensor:
    """Scores [P] float64 of the (row, global item) ``targets`` whose item is in this slice
    (0 elsewhere: sum over ranks to get every target's score). Only the chunks that hold a
    target are scored."""
    out = torch.zeros(targets.shape[0], dtype=torch.float64)
    n_r = reps.shape[0]
    if targets.numel() == 0 or n_r == 0:
        return out
    order = torch.argsort(targets[:, 1], stable=True)
    srt = targets[order]
    for a in range(0, n_r, chunk):
        b = min(a + chunk, n_r)
        lo = int(torch.searchsorted(srt[:, 1].contiguous(), offset + a))
        hi = int(torch.searchsorted(srt[:, 1].contiguous(), offset + b))
        if hi <= lo:
            continue
        s = score_fn(offset + a, reps[a:b]).double().cpu()
        p = srt[lo:hi]
        out[order[lo:hi]] = s[p[:, 0], p[:, 1] - offset - a]
    return out


def chunked_auc_counts(
    score_fn: ScoreFn,
    reps: torch.Tensor,
    offset: int,
    targets: torch.Tensor,
    target_scores: torch.Tensor,
    *,
    chunk: int | None = None,
    exclude: torch.Tensor | None = None,
    include: torch.Tensor | None = None,
    pair_block: int = 1 << 22,
) -> torch.Tensor:
    """Per target pair [P, 3] float64: this slice's ranked negatives scoring below the target,
    tied with it, and their number. Negatives of a query are its ranked items (``include``
    minus ``exclude``; every item when ``include`` is None) that are not its targets. Sum over
    ranks, then AUC = (less + ties / 2) / negatives. ``target_scores`` [P] are the global ones
    (:func:`chunked_target_scores` summed over ranks)."""
    p_all = targets.shape[0]
    counts = torch.zeros((p_all, 3), dtype=torch.float64)
    n_r = reps.shape[0]
    if p_all == 0 or n_r == 0:
        return counts
    num_queries = int(targets[:, 0].max()) + 1
    chunk = chunk or default_chunk(num_queries)
    t_sorted = sort_pairs(targets)
    exclude, include = sort_pairs(exclude), sort_pairs(include)
    rows = targets[:, 0]
    tsc = target_scores.to(torch.float64).unsqueeze(1)
    for a in range(0, n_r, chunk):
        b = min(a + chunk, n_r)
        s = masked_chunk_scores(score_fn, reps, offset, a, b, exclude, include)
        s = s[:num_queries].double()
        s[torch.isneginf(s)] = float("nan")  # not ranked: neither below, tied nor counted
        p = _pairs_in(t_sorted, offset + a, offset + b)
        if p is not None:
            s[p[:, 0], p[:, 1]] = float("nan")  # a query's targets are not its negatives
        counts[:, 2] += (~torch.isnan(s)).sum(1).double()[rows]
        step = max(1, pair_block // max(1, b - a))
        for c in range(0, p_all, step):
            sr = s[rows[c : c + step]]
            t = tsc[c : c + step]
            counts[c : c + step, 0] += (sr < t).sum(1).double()
            counts[c : c + step, 1] += (sr == t).sum(1).double()
    return counts


__all__ = [
    "ScoreFn",
    "chunk_topk",
    "chunked_auc_counts",
    "chunked_target_scores",
    "chunked_topk",
    "default_chunk",
    "masked_chunk_scores",
    "multi_interest_scores",
    "sort_pairs",
]
