"""The training graphs IGRec needs, read from a dataset bundle through :class:`Bundle`.

Two readers:

* :func:`load_graphs` (``graph.partition=replicated`` and ``sampled`` mode): every rank reads the
  whole train part (train interactions of the target behavior, group members, train group-item
  pairs) and builds the symmetric-normalised user-item adjacency of LightGCN from them;
* :class:`BundleGraphs` (owned full mode, the default): a rank reads only the rows of the nodes
  it owns (#14's :class:`~distrec.graph.partition.NodePartition`) from the bundle's src-range
  partitioned graphs ``ui.<target>`` / ``iu.<target>`` (LightGCN weights 1/sqrt(du di), as the
  Spark job writes them), ``user_group`` and ``group_user`` (:class:`OwnedRows`). The one whole
  view is the membership edge list with ``model.member_cap > 0`` (the cap's draws run over every
  membership in one process's order): replicated-small, 2 int64 per membership (16 MB at the
  10^6 memberships of data/bundles/scale_group).

Both give the same rows: on MaFengWo the bundle graphs equal the pairs read from the tables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from distrec.data.bundle import Bundle
from distrec.data.csr import Csr
from distrec.data.schema import (
    GRAPH_GROUP_USER,
    GRAPH_USER_GROUP,
    Manifest,
    iu_graph,
    ui_graph,
)


@dataclass
class IGRecGraphs:
    """Edge lists (int64 numpy arrays) of one bundle's training part.

    ui_user/ui_item: unique train (user, item) pairs of the target behavior;
    member_group/member_user: group memberships, sorted by group;
    gi_group/gi_item: unique train (group, item) pairs.
    """

    num_users: int
    num_items: int
    num_groups: int
    ui_user: np.ndarray
    ui_item: np.ndarray
    member_group: np.ndarray
    member_user: np.ndarray
    gi_group: np.ndarray
    gi_item: np.ndarray

    def ui_weights(self) -> np.ndarray:
        """LightGCN weights ``1 / sqrt(deg_u * deg_i)`` of the ui edges, float32 [nnz]."""
        du = np.bincount(self.ui_user, minlength=self.num_users).astype(np.float64)
        di = np.bincount(self.ui_item, minlength=self.num_items).astype(np.float64)
        return (1.0 / np.sqrt(du[self.ui_user] * di[self.ui_item])).astype(np.float32)

    def owned(self, ranges: dict[str, tuple[int, int]], member_cap: int) -> OwnedRows:
        """:class:`OwnedRows` of the id ranges ``{user, item, group: (lo, hi)}`` cut out of the
        whole graphs (tests and the replicated-data paths; the bundle reader reads only them)."""
        ui = Csr.from_pairs(self.ui_user, self.ui_item, self.num_users, self.num_items,
                            self.ui_weights())  # fmt: skip
        ug = Csr.from_pairs(self.member_user, self.member_group, self.num_users, self.num_groups)
        gu = Csr.from_pairs(self.member_group, self.member_user, self.num_groups, self.num_users)
        every = (self.member_group, self.member_user) if member_cap > 0 else None
        return OwnedRows(
            ranges,
            _cut(ui, *ranges["user"]),
            _cut(ui.transpose(), *ranges["item"]),
            _cut(ug, *ranges["user"]),
            _cut(gu, *ranges["group"]),
            every,
        )


@dataclass
class OwnedRows:
    """A rank's adjacency rows (owned full mode); row k of a Csr is node ``lo + k`` of its range.

    ``ui`` [n_u, I] and ``iu`` [n_i, U]: LightGCN weights; ``user_groups`` [n_u, G] and
    ``members`` [n_g, U] (the own groups' members; weights unused). ``every_member``: the whole
    (group, user) membership edge list, sorted by group then user, only with a member cap.
    """

    ranges: dict[str, tuple[int, int]]
    ui: Csr
    iu: Csr
    user_groups: Csr
    members: Csr
    every_member: tuple[np.ndarray, np.ndarray] | None = None

    def nbytes(self) -> int:
        """Bytes of the rows held (reader memory of the graphs)."""
        n = sum(c.indptr.nbytes + c.indices.nbytes + c.weights.nbytes
                for c in (self.ui, self.iu, self.user_groups, self.members))  # fmt: skip
        return n + (sum(a.nbytes for a in self.every_member) if self.every_member else 0)


def _cut(c: Csr, lo: int, hi: int) -> Csr:
    """Rows ``[lo, hi)`` of ``c`` as a Csr [hi - lo, N_dst]."""
    a, b = int(c.indptr[lo]), int(c.indptr[hi])
    return Csr(c.indptr[lo : hi + 1] - a, c.indices[a:b], c.weights[a:b], hi - lo, c.num_dst)


class BundleGraphs:
    """IGRec's node counts and a reader of one rank's graph rows from a bundle (owned full mode):
    nothing whole is read (module docstring; the member cap's edge list excepted).

    Example::

        g = BundleGraphs("data/bundles/mafengwo")
        rows = g.owned({"user": (0, 2638), "item": (0, 757), "group": (0, 498)}, member_cap=0)
    """

    def __init__(self, bundle_dir: str, manifest: Manifest | None = None) -> None:
        self.bundle_dir = bundle_dir
        m = manifest or Bundle(bundle_dir).manifest
        if m.num_groups == 0:
            raise ValueError(f"{bundle_dir}: manifest counts.groups is 0; IGRec needs groups")
        self.num_users, self.num_items, self.num_groups = m.num_users, m.num_items, m.num_groups
        self.target = m.behaviors[-1]
        self.rows_read: dict[str, int] = {}  # table -> rows read by owned() (tests count them)
        names = [ui_graph(self.target), iu_graph(self.target), GRAPH_USER_GROUP, GRAPH_GROUP_USER]
        missing = [n for n in names if f"graphs/{n}" not in m.tables and not _has(
            bundle_dir, f"graphs/{n}")]  # fmt: skip
        if missing:
            raise FileNotFoundError(
                f"{bundle_dir}: graph table(s) {missing} missing (IGRec's owned full mode reads "
                "them; use graph.partition=replicated or rebuild the bundle)"
            )

    def owned(self, ranges: dict[str, tuple[int, int]], member_cap: int) -> OwnedRows:
        """This rank's :class:`OwnedRows` for its id ranges ``{user, item, group: (lo, hi)}``."""
        from distrec.graph.partition import own_rows

        b = Bundle(self.bundle_dir)
        u, i, g = ranges["user"], ranges["item"], ranges["group"]
        every = None
        if member_cap > 0:
            gu = b.graph(GRAPH_GROUP_USER)
            every = (gu.sources(), gu.indices.astype(np.int64))
        rows = OwnedRows(
            ranges,
            own_rows(b, ui_graph(self.target), *u),
            own_rows(b, iu_graph(self.target), *i),
            own_rows(b, GRAPH_USER_GROUP, *u),
            own_rows(b, GRAPH_GROUP_USER, *g),
            every,
        )
        for k, v in b.rows_read.items():
            self.rows_read[k] = self.rows_read.get(k, 0) + v
        return rows


def _has(bundle_dir: str, table: str) -> bool:
    name, _, split = table.partition("/split=")
    return Bundle(bundle_dir).has_table(name, split or None)


def _read(bundle_dir: str, table: str, columns: list[str]) -> dict[str, np.ndarray]:
    if not _has(bundle_dir, table):
        raise FileNotFoundError(f"{bundle_dir}: bundle table {table}/ is missing (IGRec needs it)")
    name, _, split = table.partition("/split=")
    t = Bundle(bundle_dir).table(name, columns, split=split or None)
    return {c: t.column(c).to_numpy().astype(np.int64) for c in columns}


def _unique_pairs(a: np.ndarray, b: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray]:
    key = np.unique(a * nb + b)
    return key // nb, key % nb


def _check_range(where: str, field: str, values: np.ndarray, n: int) -> None:
    if len(values) and (values.min() < 0 or values.max() >= n):
        row = int(np.argmax((values < 0) | (values >= n)))
        raise ValueError(f"{where}: row {row}: {field}={values[row]} outside [0, {n})")


def load_graphs(bundle_dir: str, manifest: Manifest | None = None) -> IGRecGraphs:
    """Read the train part of ``bundle_dir``; ids are validated against the manifest counts."""
    m = manifest or Bundle(bundle_dir).manifest
    nu, ni, ng = m.num_users, m.num_items, m.num_groups
    if ng == 0:
        raise ValueError(f"{bundle_dir}: manifest counts.groups is 0; IGRec needs groups")
    inter = _read(bundle_dir, "interactions/split=train", ["user", "item", "behavior"])
    target = len(m.behaviors) - 1
    keep = inter["behavior"] == target
    where = os.path.join(bundle_dir, "interactions/split=train")
    _check_range(where, "user", inter["user"], nu)
    _check_range(where, "item", inter["item"], ni)
    ui_user, ui_item = _unique_pairs(inter["user"][keep], inter["item"][keep], ni)

    mem = _read(bundle_dir, "groups/members", ["group", "user"])
    where = os.path.join(bundle_dir, "groups/members")
    _check_range(where, "group", mem["group"], ng)
    _check_range(where, "user", mem["user"], nu)
    mg, mu = _unique_pairs(mem["group"], mem["user"], nu)

    gi = _read(bundle_dir, "groups/items/split=train", ["group", "item"])
    where = os.path.join(bundle_dir, "groups/items/split=train")
    _check_range(where, "group", gi["group"], ng)
    _check_range(where, "item", gi["item"], ni)
    gg, gi_item = _unique_pairs(gi["group"], gi["item"], ni)
    return IGRecGraphs(nu, ni, ng, ui_user, ui_item, mg, mu, gg, gi_item)


def read_pairs(
    bundle_dir: str, task: str, split: str, target_behavior: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (query, item) pairs of ``split`` for the user task (target behavior) or the group
    task; empty arrays when the split's table is absent."""
    if task == "user":
        if not _has(bundle_dir, f"interactions/split={split}"):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        d = _read(bundle_dir, f"interactions/split={split}", ["user", "item", "behavior"])
        keep = d["behavior"] == target_behavior
        q, i = d["user"][keep], d["item"][keep]
    else:
        if not _has(bundle_dir, f"groups/items/split={split}"):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        d = _read(bundle_dir, f"groups/items/split={split}", ["group", "item"])
        q, i = d["group"], d["item"]
    nb = int(i.max()) + 1 if len(i) else 1
    return _unique_pairs(q, i, nb)
