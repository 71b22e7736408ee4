"""Compressed sparse rows for bundle graphs and per-user positive sets (numpy only, torch-free).

Shapes: S source nodes, T destination nodes, E edges (nnz).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Csr:
    """A weighted adjacency in CSR form.

    ``indptr``: int64 [S + 1]; ``indices``: int64 [E] destination ids, sorted within each row;
    ``weights``: float32 [E]; row ``s`` is ``indices[indptr[s]:indptr[s + 1]]``.

    Example::

        csr = Csr.from_pairs(np.array([0, 0, 2]), np.array([1, 3, 0]), num_src=3, num_dst=4)
        csr.row(0)  # (array([1, 3]), array([1., 1.], dtype=float32))
    """

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    num_src: int
    num_dst: int

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def degrees(self) -> np.ndarray:
        """Out-degree of every source node: int64 [S]."""
        return np.diff(self.indptr)

    def row(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour ids [deg] and weights [deg] of source ``s``."""
        lo, hi = int(self.indptr[s]), int(self.indptr[s + 1])
        return self.indices[lo:hi], self.weights[lo:hi]

    def rows(self, srcs: np.ndarray) -> list[np.ndarray]:
        """Neighbour id arrays of several sources (for ``EvalQuery.exclude`` and similar)."""
        return [self.indices[self.indptr[s] : self.indptr[s + 1]] for s in srcs]

    def sources(self) -> np.ndarray:
        """Source id of every edge: int64 [E] (the COO row vector)."""
        return np.repeat(np.arange(self.num_src, dtype=np.int64), self.degrees())

    def contains(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Vectorised membership test: bool array, ``True`` where edge (src[i], dst[i]) exists.

        Works because indices are sorted within rows: the global key ``src * T + dst`` is then
        sorted over the whole edge list, so one ``searchsorted`` answers every query.
        """
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        if self.nnz == 0:
            return np.zeros(np.broadcast(src, dst).shape, dtype=bool)
        keys = self._keys()
        q = src * np.int64(self.num_dst) + dst
        pos = np.searchsorted(keys, q)
        pos = np.minimum(pos, keys.shape[0] - 1)
        return keys[pos] == q

    def _keys(self) -> np.ndarray:
        cached = getattr(self, "_key_cache", None)
        if cached is None:
            cached = self.sources() * np.int64(self.num_dst) + self.indices
            object.__setattr__(self, "_key_cache", cached)
        return cached

    def transpose(self) -> Csr:
        """The reverse graph (T x S) with the same edge weights."""
        return Csr.from_pairs(
            self.indices, self.sources(), self.num_dst, self.num_src, self.weights, dedup=False
        )

    def to_scipy(self):  # noqa: ANN201 - scipy is optional at import time
        """``scipy.sparse.csr_matrix`` of shape (S, T)."""
        import scipy.sparse as sp

        return sp.csr_matrix(
            (self.weights, self.indices, self.indptr), shape=(self.num_src, self.num_dst)
        )

    @classmethod
    def from_pairs(
        cls,
        src: np.ndarray,
        dst: np.ndarray,
        num_src: int,
        num_dst: int,
        weights: np.ndarray | None = None,
        *,
        dedup: bool = True,
    ) -> Csr:
        """Build from edge lists [E]; duplicate (src, dst) pairs are merged (first weight kept)
        when ``dedup`` so positive sets are sets."""
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        w = (
            np.ones(src.shape[0], dtype=np.float32)
            if weights is None
            else np.asarray(weights, dtype=np.float32)
        )
        if src.size and (src.min() < 0 or src.max() >= num_src):
            raise ValueError(
                f"source ids must lie in [0, {num_src}), got [{src.min()}, {src.max()}]"
            )
        if dst.size and (dst.min() < 0 or dst.max() >= num_dst):
            raise ValueError(f"dest ids must lie in [0, {num_dst}), got [{dst.min()}, {dst.max()}]")
        key = src * np.int64(num_dst) + dst
        order = np.argsort(key, kind="stable")
        key, src, dst, w = key[order], src[order], dst[order], w[order]
        if dedup and key.size:
            keep = np.concatenate([[True], key[1:] != key[:-1]])
            src, dst, w = src[keep], dst[keep], w[keep]
        indptr = np.zeros(num_src + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=num_src), out=indptr[1:])
        return cls(indptr, dst, w, int(num_src), int(num_dst))
