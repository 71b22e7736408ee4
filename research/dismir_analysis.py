"""Paper Table 4: how a user's history items spread over the interests; and how well the item
embeddings solve the item-partition problem itself (:func:`item_partition_stats`).

Each history item goes to the interest that routes (capsule) or attends (self-attention) to it
most. Per user: ``Similarity`` = mean over interest pairs f < f' of the mean cosine similarity
(x100) of items of G_f and G_f' (pairs with an empty group are skipped; the paper's
``<e_i, e_j>`` on what are, judging by its 0-100 scale, normalised embeddings);
``MIN`` / ``MAX`` / ``STD`` of the share (%) of the user's items per interest. Averaged over up
to ``max_users`` evaluation users.
"""

from __future__ import annotations

import numpy as np
import torch

from distrec.data.csr import Csr
from distrec.models.common.lookup import unique_lookup
from distrec.models.common.sequence_data import SequenceData
from distrec.models.dismir.model import DisMIR


def user_interest_stats(h: np.ndarray, assign: np.ndarray, num_interests: int) -> dict[str, float]:
    """One user: h [L, D] history embeddings, assign [L] interest of each item -> stats."""
    counts = np.bincount(assign, minlength=num_interests).astype(np.float64)
    share = 100.0 * counts / max(len(assign), 1)
    hn = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    sims = []
    for f in range(num_interests):
        for g in range(f + 1, num_interests):
            a, b = hn[assign == f], hn[assign == g]
            if len(a) and len(b):
                sims.append(float((a @ b.T).mean()))
    return {
        "similarity": 100.0 * float(np.mean(sims)) if sims else float("nan"),
        "min": float(share.min()),
        "max": float(share.max()),
        "std": float(share.std()),
    }


@torch.no_grad()
def interest_statistics(
    model: DisMIR, data: SequenceData, split: str = "test", max_users: int = 100
) -> dict[str, float]:
    """Table 4 statistics averaged over the first ``max_users`` users of ``split`` with at least
    two history items (single-device model; evaluation rows in file order)."""
    model.eval()
    per_user: list[dict[str, float]] = []
    for q in data.eval_queries(split):
        emb = unique_lookup(model.ec, q.batch.sparse["ec"])
        _, _, routing, h, mask = model.interests(emb, q.batch)
        for u in range(h.shape[0]):
            n = int(mask[u].sum())
            if n < 2:
                continue
            assign = routing[u, :n].argmax(-1).numpy()
            per_user.append(user_interest_stats(h[u, :n].numpy(), assign, routing.shape[-1]))
            if len(per_user) == max_users:
                break
        if len(per_user) == max_users:
            break
    keys = ("similarity", "min", "max", "std")
    return {
        k: float(np.nanmean([s[k] for s in per_user])) if per_user else float("nan") for k in keys
    }


def item_partition_stats(w: np.ndarray, graph: Csr, chunk: int = 2048) -> dict[str, float]:
    """How well item embeddings w [N, K] (the partition weights, d = K) solve Theorem 4's
    problem on the co-occurrence graph (``graph``: rows S_i, normalised here to sum to 1).

    * ``partition_ce``: Theorem 4's loss with the exact expectation and all N items in the
      denominator (no sampling): mean over items with a neighbour of
      ``-sum_j S_ij log softmax_j'(w_i . w_j')[j]``; ``log N`` for constant embeddings.
    * ``same_group``: share of co-occurrence weight (mean over anchors of sum_j S_ij [g_i = g_j])
      inside one group, g_i = argmax_k w_ik (the non-overlapped reading, eq. 3's first term);
      ``same_group_chance``: the same for a random assignment with these group sizes
      (sum_k (n_k / N)^2).
    * ``group_entropy``: entropy of the group sizes over log K (1 = balanced, eq. 3's second
      term); ``groups_used``: non-empty groups.
    """
    n, k = w.shape
    wt = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    group = w.argmax(1)
    deg = np.diff(graph.indptr)
    ce_sum, same_sum, anchors = 0.0, 0.0, 0
    for lo in range(0, n, chunk):
        rows = np.arange(lo, min(lo + chunk, n))
        rows = rows[deg[rows] > 0]
        if not len(rows):
            continue
        logp = torch.log_softmax(wt[rows] @ wt.T, dim=1).numpy()  # [R, N]
        for r, i in enumerate(rows):
            a, b = graph.indptr[i], graph.indptr[i + 1]
            j, s = graph.indices[a:b], graph.weights[a:b].astype(np.float64)
            s = s / s.sum()
            ce_sum -= float((s * logp[r, j]).sum())
            same_sum += float(s[group[j] == group[i]].sum())
        anchors += len(rows)
    sizes = np.bincount(group, minlength=k) / n
    nz = sizes[sizes > 0]
    return {
        "partition_ce": ce_sum / max(anchors, 1),
        "same_group": same_sum / max(anchors, 1),
        "same_group_chance": float((sizes**2).sum()),
        "group_entropy": float(-(nz * np.log(nz)).sum() / np.log(k)),
        "groups_used": float(len(nz)),
        "anchors": float(anchors),
    }
