"""Graph propagation over (sharded) embedding tables: normalised adjacency, full and sampled modes.

Used by LightGCN, IGRec and CIGF. See ARCHITECTURE.md "Graph convolution over sharded tables".
"""

from distrec.graph.adjacency import (
    Adjacency,
    HeteroGraph,
    Relation,
    bipartite_from_bundle,
    bipartite_graph,
    row_normalized,
    sym_normalized,
)
from distrec.graph.propagate import combine_layers, propagate_blocks, propagate_full
from distrec.graph.sampler import BlockEdges, Blocks, sample_blocks

__all__ = [
    "Adjacency",
    "BlockEdges",
    "Blocks",
    "HeteroGraph",
    "Relation",
    "bipartite_from_bundle",
    "bipartite_graph",
    "combine_layers",
    "propagate_blocks",
    "propagate_full",
    "row_normalized",
    "sample_blocks",
    "sym_normalized",
]
