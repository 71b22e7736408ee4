"""CIGCN propagation: right-to-left sparse products equal the explicit high-order matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distrec.data.csr import Csr
from distrec.graph.adjacency import sym_normalized
from distrec.models.cigf.attention import BehaviorAttention
from distrec.models.cigf.graph import node_adjacency, to_sparse
from distrec.models.cigf.propagation import cigcn


def tiny_graphs(users: int = 5, items: int = 6, k: int = 3, seed: int = 0) -> list[Csr]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        mask = rng.random((users, items)) < 0.4
        u, i = np.nonzero(mask)
        ui = sym_normalized(Csr.from_pairs(u, i, users, items))
        out.append(node_adjacency(ui, ui.transpose()))
    return out


def explicit(ego: torch.Tensor, dense: list[torch.Tensor], layers: int, alpha: torch.Tensor | None):
    """x_k^* from explicitly formed high-order graphs B_k^l (dense [n, n] products)."""
    k_beh = len(dense)
    outs = []
    for k in range(k_beh):
        b = dense[k]
        prev = ego + b @ ego
        total = ego + prev
        for hop in range(layers - 1):
            if alpha is None:
                m = dense[k]
            else:
                m = sum(torch.diag(alpha[k, hop, :, j]) @ dense[j] for j in range(k_beh))
            b = m @ b  # B_k^l = M_k^l B_k^{l-1}: the product matrix, formed only here
            prev = prev + b @ ego
            total = total + prev
        outs.append(total)
    return torch.stack(outs)


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("node_wise", [True, False])
def test_right_to_left_equals_explicit_product(layers: int, node_wise: bool) -> None:
    torch.manual_seed(0)
    graphs = tiny_graphs()
    n = graphs[0].num_src
    ego = torch.randn(n, 4, dtype=torch.float64)
    sparse = [to_sparse(g).double() for g in graphs]
    dense = [s.to_dense() for s in sparse]
    alpha = torch.randn(3, max(layers - 1, 0), n, 3, dtype=torch.float64) if node_wise else None
    got = cigcn(ego, sparse, layers, alpha)
    torch.testing.assert_close(got, explicit(ego, dense, layers, alpha))


def test_adjacency_is_symmetric_block_matrix() -> None:
    g = tiny_graphs(k=1)[0]
    d = to_sparse(g).to_dense()
    torch.testing.assert_close(d, d.T)
    assert d[:5, :5].abs().sum() == 0 and d[5:, 5:].abs().sum() == 0


@pytest.mark.parametrize("mode", ["node_beh_layer", "node_beh", "node_layer", "node", "global"])
def test_attention_modes_share_as_documented(mode: str) -> None:
    torch.manual_seed(0)
    att = BehaviorAttention(dim=4, num_behaviors=3, layers=3, heads=2, mode=mode)
    for p in att.parameters():  # the global mode starts uniform; randomise to see sharing
        p.data.normal_()
    ego = torch.randn(7, 4)
    a = att(ego)
    assert a.shape == (3, 2, 7, 3)
    same_over_beh = torch.allclose(a[0], a[1])
    same_over_layer = torch.allclose(a[:, 0], a[:, 1])
    same_over_nodes = torch.allclose(a[:, :, 0], a[:, :, 1])
    assert same_over_beh == (mode in ("node_layer", "node"))
    assert same_over_layer == (mode in ("node_beh", "node"))
    assert same_over_nodes == (mode == "global")


def test_heads_sum_like_separate_graph_sets() -> None:
    """H heads give H^(l-1) graphs whose convolutions are summed (eq. 8, 11): equal to one head
    whose weights are the head sum, which is what the attention returns."""
    torch.manual_seed(0)
    att = BehaviorAttention(dim=4, num_behaviors=2, layers=2, heads=3)
    ego = torch.randn(5, 4)
    w = att.weight[0].reshape(3, 2, 4)  # map (k=0, hop=0): [H, K, D]
    b = att.bias[0].reshape(3, 2)
    per_head = torch.nn.functional.leaky_relu(torch.einsum("hkd,nd->hnk", w, ego) + b[:, None], 0.2)
    torch.testing.assert_close(att(ego)[0, 0], per_head.sum(0))
