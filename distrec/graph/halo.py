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
    Both keep ``at`` = A^T (built once) for the transposed products of a backward.
    """

    a: torch.Tensor
    at: torch.Tensor
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
        if kernel not in ("csr", "coo"):
            raise ValueError(f"graph kernel {kernel!r} is not one of csr, coo")
        idx = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
        val = torch.from_numpy(np.asarray(w, dtype=np.float32))
        coo = torch.sparse_coo_tensor(idx, val, shape, check_invariants=False).coalesce()
        at = torch.sparse_coo_tensor(idx.flip(0), val, shape[::-1], check_invariants=False)
        at = at.coalesce()
        if kernel == "coo":
            return cls(coo.to(device), at.to(device), kernel)
        return cls(coo.to_sparse_csr().to(device), at.to_sparse_csr().to(device), kernel)

    def mm(self, h: torch.Tensor) -> torch.Tensor:
        """``A @ h``: [n_rows, F], differentiable in ``h``."""
        a, at = _as(self.a, h), _as(self.at, h)
        if self.kernel == "coo":
            return torch.sparse.mm(a, h)
        return _CsrMm.apply(a, at, h)

    def product(self, h: torch.Tensor, out: torch.Tensor | None = None, t: bool = False):
        """``A @ h`` (``A^T @ h`` with ``t``), no autograd; with ``out`` added into it in place
        (``addmm_``: no [n_rows, F] temporary)."""
        a = _as(self.at if t else self.a, h)
        h = h.contiguous()
        if out is None:
            return a @ h
        return out.addmm_(a, h)


def _as(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return a if a.dtype == h.dtype else a.to(h.dtype)


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
    """This rank's rows of K flat-space adjacencies and the halo plans over their remote nodes.

    ``relations``: K lists of pieces. A *pull* piece ``(s, d, A)`` puts ``A``'s rows of this
    rank's type-``s`` nodes into local rows and its columns at type ``d``'s flat ids
    (``y[s] += A h[d]``); ``("*", "*", A)`` is a whole flat-space matrix [total, total]. A typed
    piece may hold all rows [N_s, N_d] or only this rank's own rows [hi - lo, N_d] (row k = node
    lo + k: what :func:`distrec.graph.partition.own_rows` reads); the two agree where they have
    the same row count. A *push* piece ``(s, d, A, "push")`` adds ``A``'s transpose from the same
    rows: ``y[d] += A^T h[s]``, each rank summing over its own ``s`` rows and sending the partial
    sums of other ranks' ``d`` nodes to their owners. LightGCN's layer is
    ``[("user", "item", ui), ("user", "item", ui, "push")]`` (ui + ui^T from the users' rows
    only); CIGF has K flat matrices (users then items), pull only.

    Why push: on a bipartite graph with far fewer items than users, pulling the users' rows of
    the items' neighbours makes most of the halo (scale_mb at W = 2: 264 K rows per rank per
    layer, nearly all users); pushing item partials instead moves only items (each rank's remote
    items, once each way). Sums are exact, only their order differs.

    Collective to build (the halo plans). ``matmul(h_local)`` -> K products [n_local, F]: one pull
    of ``h``'s halo shared by all K and one push of all K partials (all-to-alls: every rank calls
    it together), differentiable through one autograd node whose backward is the exact transpose
    (the mirrored all-to-alls, gradients added in place: no zero-filled [n_local, F] per halo).

    Each matrix is held as own columns [n_local, n_local] (pull and push entries of own nodes),
    multiplied with ``h_local`` itself, remote pull columns [n_local, halo.size] multiplied with
    the fetched rows, and remote push rows [push.size, n_local] whose products go to their owners.
    """

    def __init__(
        self,
        part: NodePartition,
        relations: Sequence[Sequence[tuple[str, str, Csr] | tuple[str, str, Csr, str]]],
        exchange: Exchange,
        device: torch.device | str = "cpu",
        kernel: str = "csr",
    ) -> None:
        self.part, self.exchange = part, exchange
        n_local = part.num_local[part.rank]
        edges = []  # per matrix: (local row, flat col, w) of pull edges, (local col, flat row, w) of push
        has_push = any(len(p) > 3 for pieces in relations for p in pieces)
        for pieces in relations:
            acc: dict[bool, list[list[np.ndarray]]] = {False: [[], [], []], True: [[], [], []]}
            for piece in pieces:
                s, d, adj, *mode = piece
                push = bool(mode)
                if mode != [] and mode != ["push"]:
                    raise ValueError(f"graph piece mode {mode} is not push")
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
                    acc[push][0].append(r + int(part.local_index(src, torch.tensor([lo]))[0]))
                    acc[push][1].append(c + (0 if dst == "*" else part.offsets[dst]))
                    acc[push][2].append(w)
            edges.append(
                {
                    k: tuple(np.concatenate(x) if x else np.zeros(0) for x in v)
                    for k, v in acc.items()
                }
            )

        def remote(flat: list[np.ndarray]) -> torch.Tensor:
            u = np.unique(np.concatenate(flat)) if flat else np.zeros(0, np.int64)
            ids = torch.from_numpy(u.astype(np.int64))
            return ids[part.flat_owner(ids) != part.rank]

        self.halo = Halo(part, remote([e[False][1] for e in edges]), exchange, device)
        # push plan (collective: built on every rank when any piece pushes, also if empty here)
        self.push = (
            Halo(part, remote([e[True][1] for e in edges]), exchange, device) if has_push else None
        )
        # per matrix: (own [n_local, n_local], pull far [n_local, H] or None, push far [P, n_local])
        self.mats: list[tuple[SparseRows, SparseRows | None, SparseRows | None]] = []
        for e in edges:
            (r, c, w), (pr, pc, pw) = e[False], e[True]  # push: pr local src, pc flat dst
            r, pr = r.astype(np.int64), pr.astype(np.int64)
            owner, pos = part.flat_local(torch.from_numpy(c.astype(np.int64)))
            mine = (owner == part.rank).numpy()
            p_owner, p_pos = part.flat_local(torch.from_numpy(pc.astype(np.int64)))
            p_mine = (p_owner == part.rank).numpy()
            own = SparseRows.build(
                np.concatenate([r[mine], p_pos.numpy()[p_mine]]),
                np.concatenate([pos.numpy()[mine], pr[p_mine]]),
                np.concatenate([w[mine], pw[p_mine]]),
                (n_local, n_local), device, kernel,
            )  # fmt: skip
            far = None
            if self.halo.size:
                at = self.halo.buffer_index(part, torch.from_numpy(c[~mine].astype(np.int64)))
                far = SparseRows.build(
                    r[~mine], at.numpy(), w[~mine], (n_local, self.halo.size), device, kernel
                )
            far_push = None
            if self.push is not None:
                at = self.push.buffer_index(part, torch.from_numpy(pc[~p_mine].astype(np.int64)))
                far_push = SparseRows.build(
                    at.numpy(), pr[~p_mine], pw[~p_mine], (self.push.size, n_local), device, kernel
                )
            self.mats.append((own, far, far_push))
        self.nnz = int(sum(len(e[k][0]) for e in edges for k in (False, True)))

    @property
    def halo_rows(self) -> int:
        """Rows this rank receives per layer: pulled halo rows plus pushed partial rows."""
        return self.halo.size + (sum(self.push.send) if self.push is not None else 0)

    def matmul(self, h_local: torch.Tensor) -> list[torch.Tensor]:
        """``[A_k[own, :] @ h for k]``, each [n_local, F]; ``h_local`` [n_local, F]."""
        return list(_Products.apply(h_local, self))

    def products(self, h: torch.Tensor) -> list[torch.Tensor]:
        """The K products of :meth:`matmul` without autograd (collective)."""
        ex = self.exchange
        buf = ex.all_to_all(h.index_select(0, self.halo.send_idx), self.halo.send, self.halo.recv)
        ys = []
        for own, far, _ in self.mats:
            y = own.product(h)
            ys.append(y if far is None else far.product(buf, out=y))
        if self.push is not None:
            part = torch.cat([p.product(h) for _, _, p in self.mats], 1)  # type: ignore[union-attr]
            got = ex.all_to_all(part, self.push.recv, self.push.send)  # [sum(send), K F]
            for y, g in zip(ys, got.split(h.shape[1], 1), strict=True):
                y.index_add_(0, self.push.send_idx, g)
        return ys

    def products_t(
        self, gs: Sequence[torch.Tensor | None], shape: tuple[torch.Size, torch.dtype, torch.device]
    ) -> torch.Tensor:
        """``sum_k A_k[own, :]^T g_k`` (the gradient of :meth:`products`' input), no autograd
        (collective). ``gs``: [n_local, F] each, or None (no gradient); ``shape``: the input's
        (size, dtype, device)."""
        size, dtype, device = shape
        f = size[1]
        ex = self.exchange
        gs = [None if g is None else g.contiguous() for g in gs]
        out: torch.Tensor | None = None
        gbuf = torch.zeros(self.halo.size, f, dtype=dtype, device=device)
        for (own, far, _), g in zip(self.mats, gs, strict=True):
            if g is None:
                continue
            out = own.product(g, out=out, t=True)
            if far is not None:
                far.product(g, out=gbuf, t=True)
        out = torch.zeros(size, dtype=dtype, device=device) if out is None else out
        back = ex.all_to_all(gbuf, self.halo.recv, self.halo.send)  # [sum(send), F]
        out.index_add_(0, self.halo.send_idx, back)
        if self.push is not None:
            idx = self.push.send_idx
            rows = torch.cat(
                [
                    g.index_select(0, idx)
                    if g is not None
                    else torch.zeros(len(idx), f, dtype=dtype, device=device)
                    for g in gs
                ],
                1,
            )
            got = ex.all_to_all(rows, self.push.send, self.push.recv)  # [push.size, K F]
            for (_, _, p), g in zip(self.mats, got.split(f, 1), strict=True):
                p.product(g, out=out, t=True)  # type: ignore[union-attr]
        return out


class _Products(torch.autograd.Function):
    """:meth:`PartitionedGraph.matmul` as one autograd node (backward: ``products_t``)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, graph: PartitionedGraph):  # type: ignore[override]
        ctx.graph = graph
        ctx.meta = (h.shape, h.dtype, h.device)  # not h itself: nothing [n_local, F] is kept
        ctx.set_materialize_grads(False)
        return tuple(graph.products(h))

    @staticmethod
    def backward(ctx, *gs: torch.Tensor | None):  # type: ignore[override]
        return ctx.graph.products_t(gs, ctx.meta), None
