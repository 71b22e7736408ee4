"""The training graphs IGRec needs, read from a dataset bundle through :class:`Bundle`.

Reads the bundle tables of :mod:`distrec.data.schema` (train interactions of the target
behavior, group members, train group-item pairs; a local bundle or a URI) and builds the symmetric-normalised user-item
adjacency of LightGCN from them, so the model does not depend on how a bundle normalised its
``graphs/`` tables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from distrec.data.bundle import Bundle
from distrec.data.schema import Manifest


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
