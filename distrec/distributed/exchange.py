"""The multi-rank :class:`distrec.graph.halo.Exchange`: rows moved with ``all_to_all_single``.

Gloo implements ``all_to_all_single`` with uneven splits on CPU (checked with torch 2.x, 2 ranks),
so one collective moves a layer's halo; nccl needs the tensors on the GPU, gloo on the CPU, and
:meth:`DistExchange.all_to_all` moves them there and back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from distrec.graph.halo import Exchange


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _a2a(x: torch.Tensor, send: Sequence[int], recv: Sequence[int]) -> torch.Tensor:
    dev = _comm_device()
    xin = x.to(dev).contiguous()
    out = xin.new_empty((int(sum(recv)), *x.shape[1:]))
    dist.all_to_all_single(out, xin, list(recv), list(send))
    return out.to(x.device)


class _AllToAll(torch.autograd.Function):
    """Forward: rows to their destinations; backward: the gradients back the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, send: list[int], recv: list[int]) -> torch.Tensor:  # type: ignore[override]
        ctx.send, ctx.recv = send, recv
        return _a2a(x, send, recv)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        return _a2a(g, ctx.recv, ctx.send), None, None


class DistExchange(Exchange):
    """Exchange over the default process group (every rank must call each method together)."""

    def __init__(self) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def all_to_all(self, x: torch.Tensor, send: Sequence[int], recv: Sequence[int]) -> torch.Tensor:
        if self.world == 1:
            return x
        if x.requires_grad:
            return _AllToAll.apply(x, list(send), list(recv))
        return _a2a(x, send, recv)

    def counts(self, send: Sequence[int]) -> list[int]:
        if self.world == 1:
            return list(send)
        t = torch.tensor(list(send), dtype=torch.int64).unsqueeze(1)
        return [int(v) for v in _a2a(t, [1] * self.world, [1] * self.world).squeeze(1)]


def make_exchange() -> Exchange:
    """The exchange for this process: DistExchange under a process group, else the identity."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DistExchange()
    return Exchange()
