"""Derived bundles of the CIGF comparison table (research.cigf_jd_bundles) and the
vectorised synthetic writer of the 10^6-user bench (bench/cigf_synth.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from distrec.data.bundle import Bundle
from distrec.data.csr import Csr
from distrec.graph.adjacency import sym_normalized
from research.cigf_jd_bundles import add_p2, union

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.bundles import write_tiny_bundle

    return write_tiny_bundle(
        tmp_path_factory.mktemp("jdb") / "b", users=30, items=40, behaviors=("pv", "fav", "buy")
    )


def _pairs(b: Bundle, split: str, behavior: str | None = None) -> set[tuple[int, int]]:
    t = b.interactions(split, behavior)
    return set(zip(t["user"].tolist(), t["item"].tolist(), strict=True))


def _graph_ok(b: Bundle, behavior: str) -> bool:
    m = b.manifest
    t = b.interactions("train", behavior)
    ref = sym_normalized(Csr.from_pairs(t["user"], t["item"], m.num_users, m.num_items))
    g = b.graph(f"ui.{behavior}")
    return (
        np.array_equal(ref.indptr, g.indptr)
        and np.array_equal(ref.indices, g.indices)
        and np.allclose(ref.weights, g.weights)
    )


def test_union_bundle(src: Path, tmp_path: Path) -> None:
    union(src, tmp_path / "all")
    a, s = Bundle(str(tmp_path / "all")), Bundle(str(src))
    assert a.manifest.behaviors == ["all", "buy"]
    assert _pairs(a, "train", "all") == _pairs(s, "train")  # distinct union of every behavior
    assert _pairs(a, "train", "buy") == _pairs(s, "train", "buy")
    for split in ("valid", "test"):
        assert _pairs(a, split, "buy") == _pairs(s, split, "buy")
    assert _graph_ok(a, "all") and _graph_ok(a, "buy")
    assert a.manifest.counts["behavior.all"] == len(_pairs(s, "train"))


def test_p2_lists(src: Path, tmp_path: Path) -> None:
    add_p2(src, tmp_path / "p2")
    b = Bundle(str(tmp_path / "p2"))
    s = Bundle(str(src))
    t = b.eval_rows(s.manifest.split["protocol"], "test").to_pydict()
    bought = _pairs(s, "train", "buy") | _pairs(s, "valid", "buy") | _pairs(s, "test", "buy")
    test = _pairs(s, "test", "buy")
    for u, tg, cands in zip(t["user"], t["targets"], t["candidates"], strict=True):
        assert len(tg) == 1 and (int(u), tg[0]) in test and cands[0] == tg[0]
        assert len(set(cands)) == len(cands)
        assert not any((int(u), c) in bought for c in cands[1:])  # negatives never bought


def test_synth_writer(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from cigf_synth import BEHAVIORS, write_synth_bundle

    counts = write_synth_bundle(tmp_path / "s", users=200, items=60, per_user=4, extra=1)
    b = Bundle(str(tmp_path / "s"))
    assert b.manifest.behaviors == list(BEHAVIORS)
    assert counts["interactions.test"] == counts["interactions.valid"] == 200
    buy = _pairs(b, "train", "buy")
    for up in ("view", "cart", "fav"):
        assert buy <= _pairs(b, "train", up)  # funnel: every train buy was preceded upstream
        assert _graph_ok(b, up)
    assert _graph_ok(b, "buy")
    held = _pairs(b, "valid") | _pairs(b, "test")
    assert not (held & buy)
