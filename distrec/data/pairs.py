"""Stream the pairs of any src-range partitioned bundle graph with :mod:`distrec.data.stream`.
Torch-free.

:class:`~distrec.data.stream.EdgePlan` streams the pairs of ``graphs/ui.<behavior>`` (users x
items). IGRec also trains on group-item pairs, which the bundle keeps in ``graphs/group_item``
(one row per group with its train items, partitioned and sorted by group range: the layout
``ui.<b>`` has). :class:`GraphPairs` presents such a graph as the ``ui.<ALIAS>`` graph of a
bundle whose "users" are the graph's sources, so the one streaming reader (virtual shards by src
range, fragment shuffle, bounded buffer, positions by arithmetic) serves it unchanged.

Example::

    view = GraphPairs(Bundle("data/bundles/mafengwo"), "group_item")
    plan = EdgePlan(view, [ALIAS], partitions=16)          # shards of group ranges
    RankStream(plan, rank, world, global_batch, seed).step_slices(epoch, step)
"""

from __future__ import annotations

from dataclasses import dataclass

from distrec.data.bundle import Bundle, GraphRows, RowGroup, graph_shape
from distrec.data.schema import ui_graph

ALIAS = "@pairs"  # the behavior name the view answers to: its graph is ui.@pairs


@dataclass
class _Counts:
    """The manifest fields :mod:`distrec.data.stream` reads."""

    num_users: int
    num_items: int
    partitions: int


class GraphPairs:
    """A read-only view of ``bundle`` whose graph ``ui.@pairs`` is bundle graph ``name``.

    Reads go to the bundle (its ``rows_read`` counters are shared: tests count rows per table).
    """

    def __init__(self, bundle: Bundle, name: str) -> None:
        self.bundle, self.name = bundle, name
        num_src, num_dst = graph_shape(name, bundle.manifest)
        self.manifest = _Counts(num_src, num_dst, int(bundle.manifest.partitions or 0))
        self.rows_read = bundle.rows_read

    def _check(self, table: str) -> None:
        if table not in (ui_graph(ALIAS), f"graphs/{ui_graph(ALIAS)}"):
            raise KeyError(f"GraphPairs({self.name!r}) serves graph {ui_graph(ALIAS)}, not {table}")

    def row_groups(self, name: str, split: str | None = None) -> list[RowGroup]:
        self._check(name)
        return self.bundle.row_groups(f"graphs/{self.name}", split)

    def graph_rows(self, name: str, lo: int, hi: int, weights: bool = True) -> GraphRows:
        self._check(name)
        return self.bundle.graph_rows(self.name, lo, hi, weights)
