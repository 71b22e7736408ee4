"""Evaluation rows read by owner (#15 Build 1) on real gloo ranks (mp.spawn), W = 1 and 2.

* each rank reads only its own users' (groups') held-out rows: the rows it decodes are those of
  the row groups whose footer statistics meet its block, fewer than the split's, and after the
  filter exactly its block's rows;
* the queries over the ranks (ids, targets, exclusions) at W = 2 equal W = 1 and a numpy
  reference from the whole tables (what every rank read before), equal step counts per rank;
* the metrics of a fixed dot-product model through the real evaluator at W = 2 equal W = 1 and a
  brute-force ranking;
* the ``eval.max_users`` sample is the same at W = 1 and 2 and has max_users queries.

For InteractionData (MF, Popularity, LightGCN, CIGF) and IGRecData (user and group tasks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distrec.data.bundle import Bundle
from distrec.data.heldout import own_range
from distrec.metrics.ranking import ranking_metrics
from distrec.models.api import Batch, RecModel
from tests.helpers.bundles import write_tiny_bundle

USERS, ITEMS, GROUPS, D, KS = 201, 50, 21, 4, [3, 10]
MAX_USERS = 23


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 201 users on 8 range files: the rank blocks (101 / 100 users) do not fall on file edges
    return write_tiny_bundle(
        tmp_path_factory.mktemp("ho") / "b", users=USERS, items=ITEMS, per_user=10,
        behaviors=("view", "buy"), groups=GROUPS, graph_parts=8, cooc=False,
    )  # fmt: skip


def _tables() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return (torch.randn(USERS, D, generator=g), torch.randn(ITEMS, D, generator=g),
            torch.randn(GROUPS, D, generator=g))  # fmt: skip


class _PairModel(RecModel):
    """Fixed dot-product scores over InteractionData's KJT (user / pos keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.u, self.i, _ = _tables()

    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        return self.u[batch.sparse["ebc"]["user"].values()]

    def item_reps(self, batch: Batch) -> torch.Tensor:
        return self.i[batch.sparse["ebc"]["pos"].values()]


class _IdModel(RecModel):
    """Fixed dot-product scores over IGRecData's dense ids (users or groups)."""

    def __init__(self) -> None:
        super().__init__()
        self.u, self.i, self.g = _tables()

    def query(self, batch: Batch, task: str = "user") -> torch.Tensor:
        return (self.u if task == "user" else self.g)[batch.dense["ids"]]

    def item_reps(self, batch: Batch) -> torch.Tensor:
        return self.i[batch.dense["items"]]


def _queries(data: Any, split: str, task: str = "user") -> list[list[Any]]:
    return [
        [[int(u), sorted(t), sorted(e)] for u, t, e in zip(q.ids.tolist(), q.targets, q.exclude, strict=True)]
        for q in data.eval_queries(split, task)
    ]  # fmt: skip


def _worker(rank: int, world: int, port: int, bundle: str, out: str) -> None:
    from distrec.data.interactions import InteractionData
    from distrec.eval.ranking import evaluate_split
    from distrec.models.igrec.data import IGRecData

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    rec: dict[str, Any] = {}
    pairs = InteractionData(bundle, rank, world, eval_batch_size=16, prefetch=0)
    before = dict(pairs.bundle.rows_scanned)
    rec["pairs"] = {s: _queries(pairs, s) for s in ("valid", "test")}
    rec["pairs_read"] = pairs.bundle.rows_read.get("interactions", 0)
    rec["pairs_scanned"] = pairs.bundle.rows_scanned.get("interactions", 0) - before.get(
        "interactions", 0
    )
    rec["pairs_metrics"] = {
        s: evaluate_split(_PairModel(), pairs, s, num_items=ITEMS, ks=KS, item_chunk=8).metrics
        for s in ("valid", "test")
    }
    sample = InteractionData(
        bundle, rank, world, eval_batch_size=16, prefetch=0, eval_max_users=MAX_USERS
    )
    rec["pairs_sample"] = _queries(sample, "test")
    ig = IGRecData(
        bundle, target_behavior=1, batch_size=64, eval_batch_size=16, num_negatives=1,
        rank=rank, world=world, seed=0,
    )  # fmt: skip
    before = dict(ig.bundle.rows_scanned)
    for task in ("user", "group"):
        rec[f"igrec_{task}"] = {s: _queries(ig, s, task) for s in ("valid", "test")}
        rec[f"igrec_{task}_metrics"] = evaluate_split(
            _IdModel(), ig, "test", num_items=ITEMS, ks=KS, task=task, item_chunk=8
        ).metrics
    rec["igrec_scanned"] = {
        t: ig.bundle.rows_scanned.get(t, 0) - before.get(t, 0)
        for t in ("interactions", "groups/items")
    }
    rec["igrec_read"] = {t: ig.bundle.rows_read.get(t, 0) for t in ("interactions", "groups/items")}
    ig_sample = IGRecData(
        bundle, target_behavior=1, batch_size=64, eval_batch_size=16, num_negatives=1,
        rank=rank, world=world, seed=0, eval_max_users=MAX_USERS,
    )  # fmt: skip
    rec["igrec_sample"] = {t: _queries(ig_sample, "valid", t) for t in ("user", "group")}
    Path(out, f"rank{rank}.json").write_text(json.dumps(rec))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for world, port in ((1, 29861), (2, 29862)):
        d = tmp_path_factory.mktemp(f"ho_w{world}")
        mp.spawn(_worker, args=(world, port, str(bundle), str(d)), nprocs=world, join=True)
        out[world] = [json.loads((d / f"rank{r}.json").read_text()) for r in range(world)]
    return out


def _flat(recs: list[dict], key: str, split: str | None = None) -> list[list[Any]]:
    steps = [r[key][split] if split else r[key] for r in recs]
    assert len({len(s) for s in steps}) == 1, key  # the same eval step count on every rank
    return sorted(q for s in steps for step in s for q in step)


def _reference(b: Bundle, table: str, key: str, n: int, split: str, train: str) -> list[list[Any]]:
    """The queries of ``split`` from the whole tables: (id, held-out items, train (+ valid))."""

    def rows(s: str) -> dict[int, set[int]]:
        t = b.table(table, split=s)
        if table == "interactions":
            t = t.filter(pc.equal(t["behavior"], b.behavior_index("buy")))
        out: dict[int, set[int]] = {}
        for q, i in zip(t[key].to_pylist(), t["item"].to_pylist(), strict=True):
            out.setdefault(q, set()).add(i)
        return out

    g = b.graph(train)
    held, valid = rows(split), rows("valid") if split == "test" else {}
    return sorted(
        [q, sorted(held[q]), sorted(set(g.row(q)[0].tolist()) | valid.get(q, set()))]
        for q in sorted(held)
    )


def _file_rows_meeting(b: Bundle, table: str, key: str, lo: int, hi: int) -> int:
    """Rows of the split files' row groups whose ``key`` statistics meet [lo, hi)."""
    n = 0
    for split in ("valid", "test"):
        for f in b.files(table, split):
            md = pq.ParquetFile(f).metadata
            col = [md.schema.column(j).name for j in range(md.num_columns)].index(key)
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(col).statistics
                if st.max >= lo and st.min < hi:
                    n += md.row_group(g).num_rows
    return n


def test_pair_queries_are_the_whole_table_queries_at_any_world_size(bundle, runs) -> None:
    b = Bundle(bundle)
    for split in ("valid", "test"):
        want = _reference(b, "interactions", "user", USERS, split, "ui.buy")
        assert _flat(runs[1], "pairs", split) == want
        assert _flat(runs[2], "pairs", split) == want


def test_each_rank_reads_only_its_own_heldout_rows(bundle, runs) -> None:
    b = Bundle(bundle)
    total = sum(b.table("interactions", split=s).num_rows for s in ("valid", "test"))
    for r, rec in enumerate(runs[2]):
        lo, hi = own_range(USERS, r, 2)
        own = sum(
            int(((b.table("interactions", split=s)["user"].to_numpy() >= lo)
                 & (b.table("interactions", split=s)["user"].to_numpy() < hi)).sum())
            for s in ("valid", "test")
        )  # fmt: skip
        assert rec["pairs_read"] == own  # after the filter: its users' rows, each split once
        # decoded: only the row groups meeting its block, well under the whole splits
        assert rec["pairs_scanned"] == _file_rows_meeting(b, "interactions", "user", lo, hi)
        assert own <= rec["pairs_scanned"] < 0.75 * total
        for _task, table, key, n in (("user", "interactions", "user", USERS),
                                    ("group", "groups/items", "group", GROUPS)):  # fmt: skip
            glo, ghi = own_range(n, r, 2)
            assert rec["igrec_scanned"][table] == _file_rows_meeting(b, table, key, glo, ghi)
    assert runs[1][0]["pairs_read"] == total


def test_metrics_do_not_depend_on_the_world_size(bundle, runs) -> None:
    b = Bundle(bundle)
    u, i, g = (t.numpy().astype(np.float64) for t in _tables())
    for split in ("valid", "test"):
        one, two = runs[1][0]["pairs_metrics"][split], runs[2][0]["pairs_metrics"][split]
        assert runs[2][1]["pairs_metrics"][split] == two  # all-reduced
        for k, v in one.items():
            assert two[k] == pytest.approx(v, abs=1e-9), (split, k)
        # brute force over the whole tables: full ranking, exclusions masked
        ref = _reference(b, "interactions", "user", USERS, split, "ui.buy")
        s = u[[q for q, _, _ in ref]] @ i.T
        for row, (_, _, ex) in zip(s, ref, strict=True):
            row[ex] = -np.inf
        top = np.argsort(-s, axis=1, kind="stable")[:, : max(KS)]
        per = ranking_metrics(top, [t for _, t, _ in ref], KS)
        for k, v in per.items():
            assert one[k] == pytest.approx(float(v.mean()), abs=1e-9), (split, k)
    for task in ("user", "group"):
        one, two = runs[1][0][f"igrec_{task}_metrics"], runs[2][0][f"igrec_{task}_metrics"]
        assert one.keys() == two.keys()
        for k, v in one.items():
            assert two[k] == pytest.approx(v, abs=1e-9), (task, k)


def test_igrec_queries_are_the_whole_table_queries_at_any_world_size(bundle, runs) -> None:
    b = Bundle(bundle)
    for task, table, key, n, train in (("user", "interactions", "user", USERS, "ui.buy"),
                                       ("group", "groups/items", "group", GROUPS, "group_item")):  # fmt: skip
        for split in ("valid", "test"):
            want = _reference(b, table, key, n, split, train)
            assert _flat(runs[1], f"igrec_{task}", split) == want, (task, split)
            assert _flat(runs[2], f"igrec_{task}", split) == want, (task, split)


def test_max_users_sample_does_not_depend_on_the_world_size(runs) -> None:
    one, two = _flat(runs[1], "pairs_sample"), _flat(runs[2], "pairs_sample")
    assert one == two and len(one) == MAX_USERS
    ids = [q[0] for q in one]
    assert len(set(ids)) == MAX_USERS and ids != list(range(MAX_USERS))  # a sample, not a prefix
    for task in ("user", "group"):
        a = sorted(q for r in runs[1] for step in r["igrec_sample"][task] for q in step)
        c = sorted(q for r in runs[2] for step in r["igrec_sample"][task] for q in step)
        assert a == c and len(a) == min(MAX_USERS, len(_flat(runs[1], f"igrec_{task}", "valid")))
