"""Partitioned full propagation: each rank multiplies only its own adjacency rows (ARCHITECTURE.md).

Per layer rank r computes ``h^{l+1}[own] = A[own, :] h^l``. The columns of ``A[own, :]`` name
rows owned by any rank: the *halo*. A :class:`Halo` plan, built once per graph (two small
all-to-alls), says which of its local rows every rank sends to whom; :meth:`Halo.fetch` then moves
them with one all-to-all (its backward is the mirrored all-to-all, the gradients summed into the
owners' rows by ``index_select``'s backward). The halo buffer lists the rows owner by owner, and
the local adjacency's columns are remapped to buffer positions once, so a step does no O(N)
Python and rebuilds no tensor.

Models stay single-device code: they hold an :class:`Exchange` (set by the session) and never
import ``torch.distributed``; :class:`LocalExchange` is the one-process identity, and the real one
is :class:`distrec.distributed.exchange.DistExchange`.

Shapes: n_local rows owned by this rank, H halo rows, F feature width, m requested ids.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from distrec.data.csr import Csr
from distrec.graph.partition import NodePartition

# CSR products are stable in the torch versions used here (bench/propagate_kernels.py checks them
# against COO); the beta notice would print on every rank.
warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")


class Exchange:
    """Row exchange between ranks; this base class is the one-process identity.

    ``all_to_all(x, send, recv)``: ``x`` [sum(send), F] lists the rows for rank 0, then rank 1...;
    returns [sum(recv), F] (rows from rank 0 first). Differentiable in ``x``.
    """

    rank: int = 0
    world: int = 1

    def all_to_all(self, x: torch.Tensor, send: Sequence[int], recv: Sequence[int]) -> torch.Tensor:
        return x

    def counts(self, send: Sequence[int]) -> list[int]:
        """How many rows each rank sends me, given how many I send each (``send`` [W])."""
        return list(send)


LocalExchange = Exchange


# ---------------------------------------------------------------------------------- kernels
class _CsrMm(torch.autograd.Function):
    """``A @ h`` with A in CSR; backward ``A^T @ g`` with a cached CSR of ``A^T`` (no COO
    transpose or coalesce per step)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, at: torch.Tensor, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.at = at
        return a @ h

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        return None, None, ctx.at @ g.contiguous()


@dataclass
class SparseRows:
    """One sparse matrix [n_rows, n_cols] held for repeated products with dense [n_cols, F].

    ``kernel``: ``csr`` (CSR forward, cached CSR transpose backward: fastest on CPU, see
    bench/results/propagate_kernels.json) or ``coo`` (``torch.sparse.mm`` on a coalesced COO).
    """

    a: torch.Tensor
    at: torch.Tensor | None
    kernel: str

    @classmethod
    def build(
        cls,
        rows: np.ndarray,
        cols: np.ndarray,
        w: np.ndarray,
        shape: tuple[int, int],
        device: torch.device | str = "cpu",
        kernel: str = "csr",
    ) -> SparseRows:
        idx = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
        val = torch.from_numpy(np.asarray(w, dtype=np.float32))
        coo = torch.sparse_coo_tensor(idx, val, shape, check_invariants=False).coalesce()
        if kernel == "coo":
            return cls(coo.to(device), None, kernel)
        if kernel != "csr":
            raise ValueError(f"graph kernel {kernel!r} is not one of csr, coo")
        at = torch.sparse_coo_tensor(idx.flip(0), val, shape[::-1], check_invariants=False)
        return cls(coo.to_sparse_csr().to(device), at.coalesce().to_sparse_csr().to(device), kernel)

    def mm(self, h: torch.Tensor) -> torch.Tensor:
        """``A @ h``: [n_rows, F], differentiable in ``h``."""
        a = self.a if self.a.dtype == h.dtype else self.a.to(h.dtype)
        if self.kernel == "coo":
            return torch.sparse.mm(a, h)
        assert self.at is not None
        at = self.at if self.at.dtype == h.dtype else self.at.to(h.dtype)
        return _CsrMm.apply(a, at, h)


# ---------------------------------------------------------------------------------- halo
class Halo:
    """Plan to fetch the rows ``needed`` (flat ids) from their owners. Collective to build
    (every rank builds its own at the same time); after that :meth:`fetch` is one all-to-all.

    ``buffer_index(flat)`` maps flat ids in ``needed`` to rows of the fetched buffer.
    """

    def __init__(
        self,
        part: NodePartition,
        needed: torch.Tensor,
        exchange: Exchange,
        device: torch.device | str = "cpu",
    ) -> None:
        self.exchange = exchange
        needed = needed.to(torch.int64).cpu()
        owner, pos = part.flat_local(needed)
        # buffer order: by owner, then flat id (= local position order inside one owner)
        key = torch.unique(owner * max(part.total, 1) + needed)
        self._keys = key
        self._total = max(part.total, 1)
        b_owner = torch.div(key, self._total, rounding_mode="floor")
        b_flat = key - b_owner * self._total
        _, b_pos = part.flat_local(b_flat)
        self.buffer_flat = b_flat  # [H] flat id of each buffer row
        self.recv = torch.bincount(b_owner, minlength=part.world).tolist()
        self.send = exchange.counts(self.recv)  # rows each rank needs from me
        ids = exchange.all_to_all(b_pos.unsqueeze(1), self.recv, self.send)
        self.send_idx = ids.squeeze(1).to(device)  # [sum(send)] my local rows, rank by rank
        self.size = len(key)

    def buffer_index(self, part: NodePartition, flat: torch.Tensor) -> torch.Tensor:
        """Buffer rows of flat ids (each must be in ``needed``)."""
        owner = part.flat_owner(flat)
        return torch.searchsorted(self._keys, owner * self._total + flat.to(torch.int64))

    def fetch(self, local: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Halo rows [H, F] from every rank's ``local`` [n_local, F]; gradients flow back.
        A sequence of tensors [n_local, F_j] sends the rows of each, side by side [H, sum F_j]
        (one all-to-all; no [n_local, sum F_j] concatenation of the whole tables)."""
        if isinstance(local, torch.Tensor):
            rows = local.index_select(0, self.send_idx)
        else:
            rows = torch.cat([x.index_select(0, self.send_idx) for x in local], 1)
        return self.exchange.all_to_all(rows, self.send, self.recv)


def gather_rows(
    part: NodePartition,
    exchange: Exchange,
    local: torch.Tensor | Sequence[torch.Tensor],
    flat: torch.Tensor,
) -> torch.Tensor:
    """Rows of flat ids ``flat`` [m] (any owner) from every rank's ``local`` [n_local, F]:
    [m, F]. Collective (every rank calls it, ``m`` may differ, also be 0); a per-call plan
    (deduplicated ids, two small all-to-alls) then one all-to-all of rows, differentiable.
    ``local`` may be a sequence of [n_local, F_j] (e.g. every layer): [m, sum F_j]."""
    if not isinstance(local, torch.Tensor):
        local = list(local)
    flat_cpu = flat.to(torch.int64).cpu()
    uniq, inverse = torch.unique(flat_cpu, return_inverse=True)
    device = local.device if isinstance(local, torch.Tensor) else local[0].device
    halo = Halo(part, uniq, exchange, device)
    buf = halo.fetch(local)
    return buf[halo.buffer_index(part, uniq)[inverse].to(device)]


# ---------------------------------------------------------------------------------- graph
def local_rows(adj: Csr, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row - lo, col, weight) of the edges in rows [lo, hi) of ``adj``."""
    a, b = int(adj.indptr[lo]), int(adj.indptr[hi])
    deg = np.diff(adj.indptr[lo : hi + 1]).astype(np.int64)
    rows = np.repeat(np.arange(hi - lo, dtype=np.int64), deg)
    return rows, np.asarray(adj.indices[a:b], dtype=np.int64), np.asarray(adj.weights[a:b])


class PartitionedGraph:
    """This rank's rows of K flat-space adjacencies and one halo plan over their remote columns.

    ``relations``: K lists of ``(src type, dst type, Csr [N_src, N_dst])`` pieces; piece
    ``(s, d, A)`` puts ``A``'s rows of this rank's type-``s`` nodes into local rows and its
    columns at type ``d``'s flat ids; ``("*", "*", A)`` is a whole flat-space matrix
    [total, total]. A typed piece may hold all rows [N_s, N_d] or only this rank's own rows
    [hi - lo, N_d] (row k = node lo + k: what :func:`distrec.graph.partition.own_rows` reads); the
    two agree where they have the same row count. A LightGCN layer is one matrix of two pieces (``ui``, ``iu``); CIGF has K
    flat matrices (users then items).

    Collective to build (the halo plan). ``matmul(h_local)`` -> K products [n_local, F], one
    fetch of ``h``'s halo shared by all K.

    Each matrix is held as two: the columns this rank owns, multiplied with ``h_local`` itself,
    and the others (the *halo*, ``halo.size`` rows fetched from their owners), multiplied with
    the fetched buffer. Own columns are most of them (at W = 1 all, at W = 2 on scale_mb about
    three in four), and routing them through the buffer cost a copy of every such row per layer
    plus a zero-filled scatter of its gradient in backward.
    """

    def __init__(
        self,
        part: NodePartition,
        relations: Sequence[Sequence[tuple[str, str, Csr]]],
        exchange: Exchange,
        device: torch.device | str = "cpu",
        kernel: str = "csr",
    ) -> None:
        self.part, self.exchange = part, exchange
        n_local = part.num_local[part.rank]
        edges = []
        for pieces in relations:
            rows_l, cols_l, w_l = [], [], []
            for s, d, adj in pieces:
                typed = [(s, d)] if s != "*" else [(t, "*") for t in part.types]
                for src, dst in typed:
                    lo, hi = part.range(src)
                    if s == "*":
                        row0 = part.offsets[src]
                    elif adj.num_src == part.num_nodes[src]:
                        row0 = 0
                    elif adj.num_src == hi - lo:  # own rows only
                        row0 = -lo
                    else:
                        raise ValueError(
                            f"{src}->{dst} piece has {adj.num_src} rows: neither all "
                            f"{part.num_nodes[src]} nor this rank's {hi - lo}"
                        )
                    r, c, w = local_rows(adj, row0 + lo, row0 + hi)
                    rows_l.append(r + int(part.local_index(src, torch.tensor([lo]))[0]))
                    cols_l.append(c + (0 if dst == "*" else part.offsets[dst]))
                    w_l.append(w)
            edges.append(
                tuple(np.concatenate(x) if x else np.zeros(0) for x in (rows_l, cols_l, w_l))
            )
        cols_all = np.concatenate([e[1] for e in edges]) if edges else np.zeros(0, np.int64)
        needed = torch.from_numpy(np.unique(cols_all).astype(np.int64))
        self.halo = Halo(part, needed[part.flat_owner(needed) != part.rank], exchange, device)
        # per matrix: (own columns [n_local, n_local], halo columns [n_local, H] or None)
        self.mats: list[tuple[SparseRows, SparseRows | None]] = []
        for r, c, w in edges:
            owner, pos = part.flat_local(torch.from_numpy(c.astype(np.int64)))
            mine = (owner == part.rank).numpy()
            r = r.astype(np.int64)
            own = SparseRows.build(
                r[mine], pos.numpy()[mine], w[mine], (n_local, n_local), device, kernel
            )
            far = None
            if self.halo.size:
                at = self.halo.buffer_index(part, torch.from_numpy(c[~mine].astype(np.int64)))
                far = SparseRows.build(
                    r[~mine], at.numpy(), w[~mine], (n_local, self.halo.size), device, kernel
                )
            self.mats.append((own, far))
        self.nnz = int(sum(len(e[0]) for e in edges))

    def matmul(self, h_local: torch.Tensor) -> list[torch.Tensor]:
        """``[A_k[own, :] @ h for k]``, each [n_local, F]; ``h_local`` [n_local, F]."""
        buf = self.halo.fetch(h_local)  # collective: also when this rank needs no rows
        return [own.mm(h_local) if far is None else own.mm(h_local) + far.mm(buf)
                for own, far in self.mats]  # fmt: skip
