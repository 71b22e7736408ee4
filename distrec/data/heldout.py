"""Evaluation rows of one rank: the held-out pairs of the queries it owns, read by key range.

Every pair adapter (:class:`~distrec.data.interactions.InteractionData` for MF, Popularity,
LightGCN and CIGF; :class:`~distrec.models.igrec.data.IGRecData` for IGRec's user and group
tasks) evaluates the same way:

* rank r owns the queries of its row-wise block ``[lo, hi)`` (:func:`own_range`, the blocks of
  the embedding tables and of the graph reads), and reads only their held-out rows
  (:meth:`distrec.data.bundle.Bundle.split_rows`: the Spark job writes the held-out splits
  range-partitioned by user / group and sorted, so the footers prune the other ranks' rows) and
  their train positives (the graph's src range, :func:`distrec.graph.partition.own_rows`);
* ``eval.max_users``: the ``max_users`` queries of smallest seeded key
  (:func:`distrec.data.loader.query_keys`, a bijection of the id): a uniform sample that does
  not depend on the world size and that each rank decides for its own ids;
* every rank runs the same number of eval steps, ``ceil(max_r n_r / per)`` for ``per`` queries
  of a rank per step. Footer or manifest counts give rows, not distinct queries (nor the
  sample), so the counts are agreed with one small all-gather (:func:`plan_queries`).

The sum over ranks is the same set of queries at any world size, so the (all-reduced sums of
per-query) metrics are too.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from distrec.data.bundle import Bundle
from distrec.data.csr import Csr
from distrec.data.loader import query_keys
from distrec.graph.partition import block_size


def own_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """The query ids ``[lo, hi)`` rank ``rank`` of ``world`` owns (row-wise blocks of ceil(n/W))."""
    b = block_size(n, world)
    lo = min(rank * b, n)
    return lo, min(lo + b, n)


def heldout_pairs(
    bundle: Bundle,
    table: str,
    key: str,
    split: str,
    lo: int,
    hi: int,
    num_dst: int,
    behavior: str | None = None,
) -> Csr:
    """Unique (query, item) pairs of ``table`` / ``split`` with ``key`` in ``[lo, hi)`` (of one
    ``behavior`` when given): a Csr [hi - lo, num_dst] over local rows (row k = query lo + k).
    A bundle without that split gives an empty Csr."""
    t = bundle.split_rows(table, split, key, lo, hi, [key, "item"], behavior)
    q = t.column(key).to_numpy().astype(np.int64) - lo
    it = t.column("item").to_numpy().astype(np.int64)
    if it.size and (it.min() < 0 or it.max() >= num_dst):
        from distrec.data.schema import BundleFormatError

        bad = int(np.flatnonzero((it < 0) | (it >= num_dst))[0])
        raise BundleFormatError(
            f"{bundle.table_dir(table)}/split={split}: field item {it[bad]} is outside "
            f"[0, {num_dst}) (counts.items in the manifest)"
        )
    return Csr.from_pairs(q, it, max(hi - lo, 0), num_dst)


def union(a: Csr, b: Csr) -> Csr:
    """Pairs of either Csr (same shape), unweighted."""
    return Csr.from_pairs(
        np.concatenate([a.sources(), b.sources()]),
        np.concatenate([a.indices, b.indices]).astype(np.int64),
        a.num_src,
        a.num_dst,
    )


def plan_queries(
    ids: np.ndarray, per: int, max_users: int, seed: int, split: str
) -> tuple[np.ndarray, int]:
    """This rank's queries ``ids`` [n] -> (positions [m] (ascending) of the kept ones, eval steps).

    Kept: all of them, or with ``max_users > 0`` those among the ``max_users`` smallest
    :func:`~distrec.data.loader.query_keys` over every rank's queries. Steps:
    ``ceil(max_r m_r / per)``, the same on every rank. One all-gather of ``max_users + 1`` int64
    per rank (:func:`sample_message`); none without a process group or at W = 1.
    """
    keys = query_keys(ids, seed, split)  # [n]
    mine = sample_message(keys, max_users)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from distrec.eval.collectives import all_gather_same

        got = all_gather_same(torch.from_numpy(mine.view(np.int64)))
        rows = np.stack([g.numpy() for g in got]).view(np.uint64)
    else:
        rows = mine[None, :]
    keep, counts = sample_decide(rows, keys, max_users)
    return keep, -(-int(counts.max()) // max(per, 1))


def sample_message(keys: np.ndarray, max_users: int) -> np.ndarray:
    """What a rank sends (uint64 [k + 1], k = max(max_users, 0)): its query count n, then the
    k smallest of its ``keys`` [n] ascending, padded with 2^64 - 1."""
    k = max(max_users, 0)
    mine = np.full(k + 1, np.iinfo(np.uint64).max, dtype=np.uint64)
    mine[0] = keys.shape[0]
    small = np.sort(keys)[:k]
    mine[1 : 1 + small.shape[0]] = small
    return mine


def sample_decide(
    rows: np.ndarray, keys: np.ndarray, max_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """From every rank's :func:`sample_message` ``rows`` [W, k + 1] and this rank's ``keys`` [n]:
    (positions [m] of the kept keys, kept queries per rank [W]). The same on every rank."""
    k = max(max_users, 0)
    counts = rows[:, 0].astype(np.int64)  # [W] queries per rank
    keep = np.arange(keys.shape[0], dtype=np.int64)
    if 0 < k < int(counts.sum()):
        # pads sort last and there are more than k real keys: the k-th smallest value is a real
        # key; keys are distinct, so exactly k queries are kept over the ranks, and a rank's
        # kept keys are among its k smallest (the ones it sent)
        kth = np.sort(rows[:, 1:].reshape(-1))[k - 1]
        keep = np.flatnonzero(keys <= kth).astype(np.int64)
        sent = np.arange(k)[None, :] < np.minimum(counts, k)[:, None]  # not the pads
        counts = ((rows[:, 1:] <= kth) & sent).sum(axis=1)
    return keep, counts
