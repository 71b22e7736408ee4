"""The distributed evaluator (item slices per rank, merged top-K, summed AUC counts) equals a
brute-force single-process ranking, at world sizes 1 and 2 (real gloo ranks via mp.spawn)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distrec.eval.ranking import evaluate_split
from distrec.metrics.ranking import metric_names, ranking_metrics
from distrec.models.api import Batch, EvalQuery, RecModel, TaskData

U, N, D, KS = 23, 37, 4, [3, 5]


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list, list, list | None]:
    g = torch.Generator().manual_seed(seed)
    users = torch.randn(U, D, generator=g)
    items = torch.randn(N, D, generator=g)
    items[5] = items[6]  # a tie
    rng = np.random.default_rng(seed)
    targets, exclude = [], []
    for u in range(U):
        perm = rng.permutation(N)
        targets.append(perm[: 1 + u % 3].tolist() if u % 7 else [])  # some users without targets
        exclude.append(perm[3 : 3 + u % 5].tolist())
    return users, items, targets, exclude, None


class _Model(RecModel):
    def __init__(self, users: torch.Tensor, items: torch.Tensor) -> None:
        super().__init__()
        self.u, self.i = users, items

    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        return self.u[batch.dense["ids"]]

    def item_reps(self, batch: Batch) -> torch.Tensor:
        return self.i[batch.dense["ids"]]


class _Data(TaskData):
    def __init__(self, targets: list, exclude: list, rank: int, world: int, bs: int = 4) -> None:
        self.t, self.e, self.rank, self.world, self.bs = targets, exclude, rank, world, bs

    def eval_queries(self, split: str, task: str = "user") -> Iterator[EvalQuery]:
        for start in range(0, U, self.bs * self.world):  # uneven shares, some empty
            ids = torch.arange(start, min(start + self.bs * self.world, U))[self.rank :: self.world]
            yield EvalQuery(
                batch=Batch(dense={"ids": ids}),
                ids=ids,
                targets=[self.t[i] for i in ids.tolist()],
                exclude=[self.e[i] for i in ids.tolist()],
            )

    def item_batch(self, items: torch.Tensor) -> Batch:
        return Batch(dense={"ids": items})


def _worker(
    rank: int, world: int, port: int, out: str, model_cls: type = _Model, data_cls: type = _Data
) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    users, items, targets, exclude, _ = _problem()
    res = evaluate_split(
        model_cls(users, items),
        data_cls(targets, exclude, rank, world),
        "test",
        num_items=N,
        ks=KS,
        item_chunk=4,
        collect_topk=True,
    )
    if rank == 0:
        torch.save(res.metrics, out)
    dist.destroy_process_group()


def _metrics_from_scores(s: np.ndarray, ranked: np.ndarray, targets: list) -> dict[str, float]:
    """Brute-force metrics of score matrix ``s`` [U, N] where only ``ranked`` [U, N] items take
    part (ties to the lower item id; AUC over each target's ranked non-target items)."""
    s = np.where(ranked, s, -np.inf)
    order = np.stack([np.lexsort((np.arange(N), -row)) for row in s])[:, : max(KS)]
    order[np.take_along_axis(s, order, 1) == -np.inf] = -1
    per = ranking_metrics(order, targets, KS)
    out = {k: float(v.mean()) for k, v in per.items()}
    aucs = []
    for u, t in enumerate(targets):
        if not t:
            continue
        negs = [j for j in range(N) if ranked[u, j] and j not in t]
        a = [np.mean([(s[u, x] > s[u, n]) + 0.5 * (s[u, x] == s[u, n]) for n in negs]) for x in t]
        aucs.append(np.mean(a))
    out["auc"] = float(np.mean(aucs))
    return out


def _brute_force() -> dict[str, float]:
    users, items, targets, exclude, _ = _problem()
    ranked = np.ones((U, N), dtype=bool)
    for u, ex in enumerate(exclude):
        ranked[u, ex] = False
    return _metrics_from_scores((users @ items.T).numpy().astype(np.float64), ranked, targets)


@pytest.mark.parametrize("world,port", [(1, 29530), (2, 29531)])
def test_distributed_evaluation_equals_brute_force(world: int, port: int, tmp_path: Path) -> None:
    out = str(tmp_path / "m.pt")
    mp.spawn(_worker, args=(world, port, out), nprocs=world, join=True)
    got = torch.load(out)
    want = _brute_force()
    assert sorted(got) == sorted(metric_names(KS))
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-9), k


# --- sampled candidates with a target-aware model -------------------------------------------


class _TargetAwareModel(_Model):
    """``score`` is a dot product; ``score_candidates`` is minus the squared distance, which
    ranks differently. The evaluator must use the latter on a sampled protocol."""

    target_aware_candidates = True

    def score_candidates(
        self, query: torch.Tensor, items: torch.Tensor, task: str = "user"
    ) -> torch.Tensor:
        return -((query.unsqueeze(1) - items) ** 2).sum(-1)


def _candidates(seed: int = 1) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.choice(N, size=6 + u % 4, replace=False).tolist() for u in range(U)]


class _CandData(_Data):
    def eval_queries(self, split: str, task: str = "user") -> Iterator[EvalQuery]:
        cands = _candidates()
        for q in super().eval_queries(split, task):
            q.candidates = [cands[i] for i in q.ids.tolist()]
            yield q


class _FlagOffModel(_TargetAwareModel):
    target_aware_candidates = False


def _brute_force_candidates() -> dict[str, float]:
    users, items, targets, exclude, _ = _problem()
    dist2 = ((users.unsqueeze(1) - items.unsqueeze(0)) ** 2).sum(-1)
    ranked = np.zeros((U, N), dtype=bool)
    for u, c in enumerate(_candidates()):
        ranked[u, c] = True
        ranked[u, targets[u]] = True
        ranked[u, exclude[u]] = False
    return _metrics_from_scores((-dist2).numpy().astype(np.float64), ranked, targets)


@pytest.mark.parametrize("world,port", [(1, 29532), (2, 29533)])
def test_sampled_candidates_use_target_aware_scores(world: int, port: int, tmp_path: Path) -> None:
    out = str(tmp_path / "m.pt")
    mp.spawn(
        _worker, args=(world, port, out, _TargetAwareModel, _CandData), nprocs=world, join=True
    )
    got = torch.load(out)
    want = _brute_force_candidates()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-9), k
    # without the flag the evaluator ranks the same candidates by the dot product: other numbers,
    # so the check above has teeth
    mp.spawn(_worker, args=(1, port, out, _FlagOffModel, _CandData), nprocs=1, join=True)
    assert torch.load(out)["auc"] != pytest.approx(want["auc"], abs=1e-3)
