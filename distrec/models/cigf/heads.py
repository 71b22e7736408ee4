"""Multi-task prediction heads on top of the K CIGCN representations (paper 4.3, Table 5).

Every head takes user reps ``x`` and item reps ``y`` of shape ``[K, ..., D]`` (K behaviors first,
then broadcastable batch dims) and returns the score of one task ``[...]``. ``matrix`` scores
every query against every item, ``x`` [K, B, D] and ``y`` [K, N, D] -> [B, N], without forming a
[B, N, D] tensor: gates and experts are separable into user and item parts.

* :class:`Mesi`: experts ``f_j = x_j o y_j`` (eq. 14), the gate of task k from its *own* input
  ``softmax(W_g [x_k || y_k] + b_g)`` (eq. 15), tower = mean over D (eq. 16). ``gate_input=
  "unit"`` (not the paper) feeds the gate ``x_k / |x_k|`` and ``y_k / |y_k|``, so the
  representation norm no longer scales its logits. At lr 0.01 the gate is (nearly) hard either
  way, the unit-input one through ``W_g`` (docs/results/cigf.md, "What MESI's gates do").
* :class:`Bilinear`: same input ``xm = mean_k x_k``, ``score_k = sum_d xm o ym o r_k`` (GHCF, eq. 1).
* :class:`SharedMmoe`: same input, K bilinear experts ``xm o ym o r_j``, a softmax gate per task
  on ``[xm || ym]``, mean tower. (Reference MMoE experts are MLPs on ``[xm || ym]``, which cannot
  be ranked against all items without a [B, N, D] tensor; bilinear experts keep it separable.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distrec.models.cigf.config import GATE_INPUTS


def _tower(v: torch.Tensor, tower: str) -> torch.Tensor:
    return v.mean(dim=-1) if tower == "mean" else v.sum(dim=-1)


def _scale(d: int, tower: str) -> float:
    return 1.0 / d if tower == "mean" else 1.0


class Mesi(nn.Module):
    """Multi-Expert with Separate Input. ``gate_per_task``: one gate net per task instead of the
    single ``W_g`` of eq. 15 (which already yields a different gate per task through its input)."""

    def __init__(
        self,
        dim: int,
        num_behaviors: int,
        gate_per_task: bool = False,
        tower: str = "mean",
        gate_input: str = "raw",
    ) -> None:
        super().__init__()
        if gate_input not in GATE_INPUTS:
            raise ValueError(f"model.gate_input: {gate_input!r} is not one of {GATE_INPUTS}")
        self.k = num_behaviors
        self.tower = tower
        self.unit_input = gate_input == "unit"
        g = num_behaviors if gate_per_task else 1
        bound = (6.0 / (2 * dim + num_behaviors)) ** 0.5
        self.w_user = nn.Parameter(torch.empty(g, num_behaviors, dim).uniform_(-bound, bound))
        self.w_item = nn.Parameter(torch.empty(g, num_behaviors, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(g, num_behaviors))

    def _gate_params(self, task: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = task if self.w_user.shape[0] > 1 else 0
        return self.w_user[g], self.w_item[g], self.bias[g]

    def _gate_in(self, v: torch.Tensor) -> torch.Tensor:
        return F.normalize(v, dim=-1) if self.unit_input else v

    def gate_logits(
        self, x: torch.Tensor, y: torch.Tensor, task: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``W_g [x_k || y_k] + b_g`` of ``task`` split into its user part ``[..., K]`` (bias
        included) and item part ``[..., K]``, so that the two sides can broadcast."""
        wu, wi, b = self._gate_params(task)
        return self._gate_in(x[task]) @ wu.T + b, self._gate_in(y[task]) @ wi.T

    def gates(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        """Gate of ``task`` over the K experts: ``[..., K]``, rows sum to 1."""
        lu, li = self.gate_logits(x, y, task)
        return torch.softmax(lu + li, dim=-1)

    def forward(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        g = self.gates(x, y, task)  # [..., K]
        # the tower is linear, so tower(sum_j g_j f_j) = sum_j g_j tower(f_j): K scores per
        # row, then the gate mix (why: the former einsum over [..., K] x [K, ..., D] ran as one
        # tiny bmm per row, 2.3 % of a 10^6-user full-mode step's CPU at batch 131072)
        dots = _tower(x * y, self.tower)  # [K, ...]
        return (g * dots.movedim(0, -1)).sum(-1)

    def matrix(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        lu, li = self.gate_logits(x, y, task)
        g = torch.softmax(lu[:, None, :] + li[None, :, :], dim=-1)  # [B, N, K]
        dots = torch.einsum("jbd,jnd->jbn", x, y) * _scale(x.shape[-1], self.tower)
        return torch.einsum("bnj,jbn->bn", g, dots)


class Bilinear(nn.Module):
    """GHCF's bilinear head on the mean of the K representations (the "w/o MESI" variant)."""

    def __init__(self, dim: int, num_behaviors: int, tower: str = "sum") -> None:
        super().__init__()
        self.r = nn.Parameter(torch.ones(num_behaviors, dim))
        self.tower = tower

    def forward(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        return _tower(x.mean(0) * y.mean(0) * self.r[task], self.tower)

    def matrix(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        scale = _scale(x.shape[-1], self.tower)
        return (x.mean(0) * self.r[task]) @ y.mean(0).T * scale


class SharedMmoe(nn.Module):
    """MMoE with the same input for every task (Table 5's CIGCN-MMOE), K bilinear experts."""

    def __init__(self, dim: int, num_behaviors: int, tower: str = "mean") -> None:
        super().__init__()
        k = num_behaviors
        self.tower = tower
        self.r = nn.Parameter(1.0 + 0.1 * torch.randn(k, dim))  # experts differ from the start
        bound = (6.0 / (2 * dim + k)) ** 0.5
        self.w_user = nn.Parameter(torch.empty(k, k, dim).uniform_(-bound, bound))
        self.w_item = nn.Parameter(torch.empty(k, k, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(k, k))

    def gate_logits(
        self, x: torch.Tensor, y: torch.Tensor, task: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The gate logits of ``task`` on the shared input, split as in :meth:`Mesi.gate_logits`."""
        xm, ym = x.mean(0), y.mean(0)
        return xm @ self.w_user[task].T + self.bias[task], ym @ self.w_item[task].T

    def gates(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        lu, li = self.gate_logits(x, y, task)
        return torch.softmax(lu + li, -1)

    def forward(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        g = self.gates(x, y, task)
        prod = x.mean(0) * y.mean(0)  # [..., D]
        experts = prod.unsqueeze(-2) * self.r  # [..., K, D]
        return _tower((g.unsqueeze(-1) * experts).sum(-2), self.tower)

    def matrix(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        lu, li = self.gate_logits(x, y, task)
        g = torch.softmax(lu[:, None, :] + li[None, :, :], dim=-1)  # [B, N, K]
        dots = torch.einsum("bd,jd,nd->jbn", x.mean(0), self.r, y.mean(0)) * _scale(
            x.shape[-1], self.tower
        )
        return torch.einsum("bnj,jbn->bn", g, dots)


def build_head(
    kind: str,
    dim: int,
    num_behaviors: int,
    gate_per_task: bool,
    tower: str,
    gate_input: str = "raw",
) -> Mesi | Bilinear | SharedMmoe:
    if kind == "mesi":
        return Mesi(dim, num_behaviors, gate_per_task, tower, gate_input)
    if kind == "bilinear":
        return Bilinear(dim, num_behaviors, tower)
    if kind == "mmoe":
        return SharedMmoe(dim, num_behaviors, tower)
    raise ValueError(f"model.head: unknown head {kind!r}; valid: mesi, bilinear, mmoe")
