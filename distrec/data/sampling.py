"""Negative sampling. Torch-free; randomness comes from the caller's generator so that a step's
negatives depend only on (seed, epoch, global step) (see :func:`distrec.data.loader.step_rng`).

Shapes: B users in the batch, k negatives per user, I items.
"""

from __future__ import annotations

import numpy as np

from distrec.data.csr import Csr

MAX_ROUNDS = 100


def uniform_negatives(
    users: np.ndarray,
    num_items: int,
    k: int,
    positives: Csr,
    rng: np.random.Generator,
) -> np.ndarray:
    """k items per user, uniform over the items that are not the user's positives: int64 [B, k].

    Rejection sampling: draw everything at once, redraw only the hits on positives. For a user
    with p positives one round rejects a share p / I, so a few rounds suffice unless a user has
    almost every item; a user with every item as a positive is an error naming the user.
    Negatives of one user may repeat (sampling with replacement, as in BPR).
    """
    users = np.asarray(users, dtype=np.int64)
    out = rng.integers(0, num_items, size=(users.shape[0], k), dtype=np.int64)
    if positives.nnz == 0 or users.size == 0 or k == 0:
        return out
    deg = positives.degrees()[users]
    full = deg >= num_items
    if full.any():
        u = int(users[np.flatnonzero(full)[0]])
        raise ValueError(f"user {u} has all {num_items} items as positives: no negative exists")
    u_rep = np.repeat(users, k).reshape(-1, k)
    bad = positives.contains(u_rep, out)
    for _ in range(MAX_ROUNDS):
        if not bad.any():
            return out
        rows, cols = np.nonzero(bad)
        redraw = rng.integers(0, num_items, size=rows.shape[0], dtype=np.int64)
        out[rows, cols] = redraw
        bad[rows, cols] = positives.contains(users[rows], redraw)
    # Users with nearly all items as positives: finish them exactly from their complement.
    rows, cols = np.nonzero(bad)
    for r, c in zip(rows, cols, strict=True):
        own = positives.row(int(users[r]))[0]
        free = np.setdiff1d(np.arange(num_items, dtype=np.int64), own, assume_unique=True)
        out[r, c] = free[rng.integers(0, free.shape[0])]
    return out


def popularity_negatives(
    users: np.ndarray,
    item_probs: np.ndarray,
    k: int,
    positives: Csr,
    rng: np.random.Generator,
) -> np.ndarray:
    """Like :func:`uniform_negatives`, with items drawn from ``item_probs`` [I] (e.g. degree^0.75)."""
    users = np.asarray(users, dtype=np.int64)
    cdf = np.cumsum(item_probs, dtype=np.float64)
    cdf /= cdf[-1]

    def draw(n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), cdf.shape[0] - 1)

    out = draw(users.shape[0] * k).reshape(-1, k).astype(np.int64)
    bad = positives.contains(np.repeat(users, k).reshape(-1, k), out)
    for _ in range(MAX_ROUNDS):
        if not bad.any():
            return out
        rows, cols = np.nonzero(bad)
        redraw = draw(rows.shape[0])
        out[rows, cols] = redraw
        bad[rows, cols] = positives.contains(users[rows], redraw)
    u = int(users[np.nonzero(bad)[0][0]])
    raise ValueError(
        f"user {u}: no negative found in {MAX_ROUNDS} rounds (positives cover the mass)"
    )
