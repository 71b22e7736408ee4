"""Ranking metric definitions on lists small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distrec.metrics.ranking import hits_matrix, metric_names, ranking_metrics


def test_definitions() -> None:
    topk = np.array([[3, 1, 7, -1], [5, 6, 2, 4]])
    targets = [[1, 9], [8]]
    m = ranking_metrics(topk, targets, [1, 3])
    assert m["hr@1"].tolist() == [0.0, 0.0]
    assert m["recall@3"].tolist() == [0.5, 0.0]
    assert m["hr@3"].tolist() == [1.0, 0.0]
    ideal = 1 + 1 / math.log2(3)
    assert m["ndcg@3"][0] == pytest.approx((1 / math.log2(3)) / ideal)


def test_queries_without_targets_are_skipped_and_padding_never_hits() -> None:
    topk = np.array([[-1, -1], [2, 3]])
    m = ranking_metrics(topk, [[], [3]], [2])
    assert m["recall@2"].tolist() == [1.0]
    assert not hits_matrix(np.array([[-1]]), [[-1]]).any()


def test_perfect_ranking_scores_one() -> None:
    rng = np.random.default_rng(0)
    targets = [
        rng.choice(50, size=int(rng.integers(1, 6)), replace=False).tolist() for _ in range(20)
    ]
    topk = np.array([t + [100 + j for j in range(10 - len(t))] for t in targets])
    m = ranking_metrics(topk, targets, [10])
    assert np.allclose(m["ndcg@10"], 1.0) and np.allclose(m["recall@10"], 1.0)
    assert metric_names([10])[-1] == "auc"
