"""torchrun worker: partitioned full propagation on W real gloo ranks against one process.

Usage: torchrun --nproc_per_node=W halo_worker.py OUT_DIR

Every rank builds the same small random graphs, computes the one-process reference
(``propagate_full`` over the whole graph, loss summed over all ranks' batches) and the partitioned
version (own rows, halo all-to-all, batch rows gathered from owners), and writes
``OUT_DIR/rank<r>.pt`` with the largest differences of values and gradients.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist

from distrec.data.csr import Csr
from distrec.distributed.exchange import DistExchange
from distrec.graph.adjacency import bipartite_graph, sym_normalized
from distrec.graph.halo import Halo, PartitionedGraph, gather_rows
from distrec.graph.partition import NodePartition
from distrec.graph.propagate import (
    combine_layers,
    propagate_full,
    propagate_partitioned,
    readout_partitioned,
)

U, I, D, L = 23, 17, 4, 3  # noqa: E741


def _graph(seed: int) -> Csr:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, U, 120)
    i = rng.integers(0, I, 120)
    return sym_normalized(Csr.from_pairs(u, i, U, I))


def _batch(rank: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randint(0, U + I, (7 + rank,), generator=g)  # flat ids, duplicates likely


def lightgcn_case(ex: DistExchange, part: NodePartition) -> dict[str, float]:
    ui = _graph(0)
    graph = bipartite_graph(ui)
    full0 = torch.randn(U + I, D, generator=torch.Generator().manual_seed(1))
    wts = [
        torch.randn(7 + r, D, generator=torch.Generator().manual_seed(2 + r))
        for r in range(part.world)
    ]
    # reference: one process, every rank's batch
    ref0 = full0.clone().requires_grad_(True)
    emb = {"user": ref0[:U], "item": ref0[U:]}
    ref = combine_layers(propagate_full(graph, emb, L))
    ref_flat = torch.cat([ref["user"], ref["item"]])
    loss = sum((ref_flat[_batch(r)] * wts[r]).sum() for r in range(part.world))
    loss.backward()
    # partitioned
    pg = PartitionedGraph(
        part, [[("user", "item", ui), ("item", "user", graph.relations[1].adj)]], ex
    )
    mine = part.local_flat_ids()
    h0 = full0[mine].clone().requires_grad_(True)
    final = torch.stack(propagate_partitioned(pg, h0, L)).mean(0)
    rows = gather_rows(part, ex, final, _batch(part.rank))
    (rows * wts[part.rank]).sum().backward()
    ref0_grad_pull = ref0.grad.clone()
    # push: the items' side as the transpose of the users' rows (LightGCN's layout), read out
    # with readout_partitioned (one autograd node) and the batch rows gathered from their owners
    pp = PartitionedGraph(part, [[("user", "item", ui), ("user", "item", ui, "push")]], ex)
    h0p = full0[mine].clone().requires_grad_(True)
    final_p = torch.stack(propagate_partitioned(pp, h0p, L)).mean(0)
    flat = _batch(part.rank)
    uniq, inverse = torch.unique(flat, return_inverse=True)
    plan = Halo(part, uniq, ex)
    mean, ego = readout_partitioned(pp, h0p, L, plan.send_idx)
    buf = ex.all_to_all(torch.cat([mean, ego], 1), plan.send, plan.recv)
    rows_p, ego_p = buf[plan.buffer_index(part, uniq)[inverse]].split([D, D], 1)
    ((rows_p * wts[part.rank]).sum() + (ego_p * wts[part.rank]).sum()).backward()
    ref0.grad = None
    ref_p = combine_layers(propagate_full(graph, {"user": ref0[:U], "item": ref0[U:]}, L))
    ref_flat_p = torch.cat([ref_p["user"], ref_p["item"]])
    ref_ego = ref0[flat]
    loss = sum(
        (ref_flat_p[_batch(r)] * wts[r]).sum() + (ref0[_batch(r)] * wts[r]).sum()
        for r in range(part.world)
    )
    loss.backward()
    return {
        "lgcn_value": float((final - ref_flat[mine]).abs().max()),
        "lgcn_rows": float((rows - ref_flat[_batch(part.rank)]).abs().max()),
        "lgcn_grad": float((h0.grad - ref0_grad_pull[mine]).abs().max()),
        "push_value": float((final_p - ref_flat[mine]).abs().max()),
        "push_rows": float((rows_p - ref_flat[flat]).abs().max()),
        "push_ego": float((ego_p - ref_ego).abs().max()),
        "push_grad": float((h0p.grad - ref0.grad[mine]).abs().max()),
        "halo": float(pg.halo.size),
        "push_halo": float(pp.halo_rows),
    }


def multi_case(ex: DistExchange, part: NodePartition) -> dict[str, float]:
    """K = 2 flat node-space matrices [n, n] (CIGF's layout), one shared halo, two hops."""
    n = U + I
    adjs = []
    for k in range(2):
        ui = _graph(10 + k)
        rows = np.concatenate([ui.sources(), ui.transpose().sources() + U])
        cols = np.concatenate([ui.indices + U, ui.transpose().indices])
        w = np.concatenate([ui.weights, ui.transpose().weights])
        order = np.lexsort((cols, rows))
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        adjs.append(Csr(indptr, cols[order], w[order].astype(np.float32), n, n))
    x0 = torch.randn(n, 3 * D, generator=torch.Generator().manual_seed(5))
    dense = [torch.from_numpy(a.to_scipy().toarray()).float() for a in adjs]
    ref0 = x0.clone().requires_grad_(True)
    ref = [dense[1] @ (dense[0] @ ref0), dense[0] @ (dense[1] @ ref0)]
    w_all = torch.randn(n, 3 * D, generator=torch.Generator().manual_seed(6))
    sum((r * w_all).sum() for r in ref).backward()
    node = NodePartition({"node": n}, part.world, part.rank)
    pg = PartitionedGraph(node, [[("node", "node", a)] for a in adjs], ex)
    mine = node.local_flat_ids()
    h0 = x0[mine].clone().requires_grad_(True)
    a0, a1 = pg.matmul(h0)
    out = [pg.matmul(a0)[1], pg.matmul(a1)[0]]
    sum((o * w_all[mine]).sum() for o in out).backward()
    return {
        "multi_value": max(float((o - r[mine]).abs().max()) for o, r in zip(out, ref)),
        "multi_grad": float((h0.grad - ref0.grad[mine]).abs().max()),
    }


def main(out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    ex = DistExchange()
    part = NodePartition({"user": U, "item": I}, ex.world, ex.rank)
    res = {**lightgcn_case(ex, part), **multi_case(ex, part)}
    torch.save(res, f"{out}/rank{ex.rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
