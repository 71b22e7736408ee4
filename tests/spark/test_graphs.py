"""Graph builders against brute force: NumPy co-occurrence, SciPy normalised adjacency."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from spark_jobs import graphs


def _pairs(n_users: int = 30, n_items: int = 25, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = (rng.random((n_users, n_items)) < 0.2).astype(np.int64)
    a[0, :] = 1  # one heavy user that touches every item
    return np.argwhere(a)


def _df(spark, pairs: np.ndarray):
    return spark.createDataFrame([(int(u), int(i)) for u, i in pairs], "user long, item long")


def _rows_to_dense(rows, n_src: int, n_dst: int) -> np.ndarray:
    m = np.zeros((n_src, n_dst))
    for r in rows:
        assert list(r["dst"]) == sorted(r["dst"]), "dst lists are sorted"
        m[r["src"], r["dst"]] = r["w"]
    return m


def _cooc_brute(pairs: np.ndarray, n_items: int, topk: int) -> np.ndarray:
    n_users = pairs[:, 0].max() + 1
    a = np.zeros((n_users, n_items))
    a[pairs[:, 0], pairs[:, 1]] = 1
    co = a.T @ a
    np.fill_diagonal(co, 0)
    s = co / np.maximum(co.sum(1, keepdims=True), 1)
    if topk:
        for i in range(n_items):
            # top-k by count desc, then item id asc (the documented tie-break)
            order = sorted(range(n_items), key=lambda j: (-co[i, j], j))
            drop = [j for j in order[topk:]]
            s[i, drop] = 0
        s[co == 0] = 0
    return s


@pytest.mark.parametrize("topk", [0, 5])
def test_item_cooc_equals_numpy(spark, topk):
    pairs = _pairs()
    rows = graphs.item_cooc(_df(spark, pairs), topk=topk, cap=0, seed=3).collect()
    got = _rows_to_dense(rows, 25, 25)
    np.testing.assert_allclose(got, _cooc_brute(pairs, 25, topk), rtol=1e-6, atol=1e-7)
    if topk == 0:
        nz = got.sum(1)
        np.testing.assert_allclose(nz[nz > 0], 1.0, rtol=1e-5)  # rows of S sum to 1


def test_item_cooc_heavy_user_cap(spark):
    """A capped user contributes exactly a sample of `cap` items; the result equals brute force
    on the capped pairs, and the pair count is bounded by sum(min(deg, cap)^2)."""
    pairs = _pairs(n_users=30, n_items=25)
    cap = 6
    df = _df(spark, pairs)
    capped = np.array(
        [(r["user"], r["item"]) for r in graphs.capped_user_items(df, cap, 3).collect()]
    )
    deg = np.bincount(capped[:, 0])
    assert deg.max() == cap and (np.bincount(pairs[:, 0]) > cap).any()
    # the sample does not depend on the partitioning (seeded hash, not RNG state)
    again = graphs.capped_user_items(df.repartition(7), cap, 3).collect()
    assert sorted(map(tuple, capped.tolist())) == sorted((r["user"], r["item"]) for r in again)
    rows = graphs.item_cooc(df, topk=0, cap=cap, seed=3).collect()
    got = _rows_to_dense(rows, 25, 25)
    np.testing.assert_allclose(got, _cooc_brute(capped, 25, 0), rtol=1e-6, atol=1e-7)
    full_deg = np.bincount(pairs[:, 0])
    assert (np.minimum(full_deg, cap) ** 2).sum() < (full_deg**2).sum()


def test_bipartite_normalisation_equals_scipy(spark):
    pairs = _pairs(n_users=20, n_items=15, seed=5)
    ui, iu = graphs.bipartite(_df(spark, pairs))
    a = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(20, 15))
    du = np.asarray(a.sum(1)).ravel()
    di = np.asarray(a.sum(0)).ravel()
    with np.errstate(divide="ignore"):
        norm = sp.diags(np.where(du > 0, du**-0.5, 0)) @ a @ sp.diags(np.where(di > 0, di**-0.5, 0))
    np.testing.assert_allclose(_rows_to_dense(ui.collect(), 20, 15), norm.toarray(), rtol=1e-6)
    np.testing.assert_allclose(_rows_to_dense(iu.collect(), 15, 20), norm.T.toarray(), rtol=1e-6)


def test_row_normalised_and_derived_group_items(spark):
    members = spark.createDataFrame([(0, 0), (0, 1), (1, 1)], "group long, user long")
    rows = graphs.row_normalised(members.selectExpr("group as src", "user as dst")).collect()
    assert {r["src"]: list(r["w"]) for r in rows} == {0: [0.5, 0.5], 1: [1.0]}
    pairs = spark.createDataFrame([(0, 5), (0, 6), (1, 6), (1, 7), (1, 8)], "user long, item long")
    got = graphs.derived_group_items(members, pairs, top=2).collect()
    by_group = {}
    for r in got:
        by_group.setdefault(r["group"], []).append(r["item"])
    # group 0: item 6 is bought by both members; the tie at count 1 goes to the lower id
    assert sorted(by_group[0]) == [5, 6] and sorted(by_group[1]) == [6, 7]
